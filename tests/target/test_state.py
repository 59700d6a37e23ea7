"""STATE: never before its records are in parts, and out as soon as they are."""

from __future__ import annotations

import decimal
import io
import json
import select
import sys

import pyarrow.parquet as pq
import pytest

from target_parquet_parts import target as target_module
from target_parquet_parts.target import TargetParquetParts
from tests.plugin_io.test_singer_lines import Trickle
from tests.target.conftest import part_files, run_target, start_target_process
from tests.target.singer_data import (
    BASE_SEQUENCE,
    event,
    events_lines,
    record_message,
    schema_message,
    state_message,
)


def _written_indexes(out) -> set[int]:
    indexes: set[int] = set()
    for part in part_files(out):
        for seq in pq.read_table(part, columns=["sequence_number"]).column(0).to_pylist():
            indexes.add(seq - BASE_SEQUENCE)
    return indexes


def _assert_state_follows_data(out):
    """on_state hook: every record up to the bookmark is already in a part."""

    def check(state):
        last = state["bookmarks"]["events"]["last"]
        missing = set(range(last + 1)) - _written_indexes(out)
        assert not missing, f"STATE {state} emitted before records {sorted(missing)[:5]}..."

    return check


def test_state_never_precedes_its_data(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _, capture = run_target(
        out,
        events_lines(1000, state_every=70),
        monkeypatch,
        on_state=_assert_state_follows_data(out),
        batch_size_rows=100,
        state_max_lag_seconds=3600,
    )
    lasts = [s["bookmarks"]["events"]["last"] for s in capture.states]
    assert lasts == sorted(lasts)
    assert lasts[-1] == 979  # the last STATE received, after everything was flushed


def test_state_comes_out_as_soon_as_its_records_are_in_a_part(tmp_path, monkeypatch):
    out = tmp_path / "out"
    emitted_while_reading: list[tuple[int, int]] = []
    holder = {}

    def record_progress(state):
        reader = holder["target"].message_reader
        emitted_while_reading.append((state["bookmarks"]["events"]["last"], reader.line_number))

    original_init = target_module.TargetParquetParts.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        holder["target"] = self

    monkeypatch.setattr(target_module.TargetParquetParts, "__init__", init)
    run_target(
        out,
        events_lines(300, state_every=50),
        monkeypatch,
        on_state=record_progress,
        batch_size_rows=100,
        state_max_lag_seconds=3600,
        overlap_writes=False,  # the exact line: the part is durable when the flush returns
    )

    def line_of_record(i: int) -> int:
        return 2 + i + i // 50  # line 1 is the SCHEMA, a STATE follows every 50th record

    # The flush at record 99 makes the STATE after record 49 safe: out on that very line.
    # The STATE after record 99 finds nothing buffered: out on its own line, at once.
    assert emitted_while_reading == [
        (49, line_of_record(99)),
        (99, line_of_record(99) + 1),
        (149, line_of_record(199)),
        (199, line_of_record(199) + 1),
        (249, line_of_record(299)),
        (299, line_of_record(299) + 1),
    ]


def test_state_without_buffered_records_is_emitted_immediately(tmp_path, monkeypatch):
    lines = [schema_message(), '{"type": "STATE", "value": {"at": 1}}']
    _, capture = run_target(tmp_path / "out", lines, monkeypatch)
    assert capture.states == [{"at": 1}]


def test_lag_zero_flushes_at_every_state(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _, capture = run_target(
        out,
        events_lines(100, state_every=25),
        monkeypatch,
        state_max_lag_seconds=0,
        on_state=_assert_state_follows_data(out),
    )
    assert [s["bookmarks"]["events"]["last"] for s in capture.states] == [24, 49, 74, 99]
    assert sorted(pq.read_metadata(p).num_rows for p in part_files(out)) == [25] * 4


def test_lagging_state_flushes_sinks_that_are_not_full(tmp_path, monkeypatch):
    out = tmp_path / "out"
    clock = {"now": 1024.0}
    monkeypatch.setattr(target_module, "_clock", lambda: clock["now"])
    emitted = []

    def on_state(state):
        emitted.append(state["bookmarks"]["events"]["last"])
        _assert_state_follows_data(out)(state)

    lines = list(events_lines(2000, state_every=10))

    def advance_clock(message):
        clock["now"] += 1 / 64  # exact in binary: 320 records make the 5-second lag
        return message

    from target_parquet_parts.target import TargetParquetParts

    original = TargetParquetParts.handle_record_message
    monkeypatch.setattr(
        TargetParquetParts,
        "handle_record_message",
        lambda self, m: original(self, advance_clock(m)),
    )
    original_line = TargetParquetParts.take_record_line  # RECORD lines taken undecoded
    monkeypatch.setattr(
        TargetParquetParts,
        "take_record_line",
        lambda self, line: original_line(self, advance_clock(line)),
    )
    # The exact record: the part is durable when the flush returns (overlap: test_overlap.py)
    run_target(
        out, lines, monkeypatch, on_state=on_state, state_max_lag_seconds=5, overlap_writes=False
    )
    # No sink was ever full (batch 10,000): without the lag only the end would emit STATE.
    # The first STATE (after record 9) waits 5 s = 320 records of fake time: record 329
    # crosses the limit, flushes, and lets the newest STATE out (the one after record 319).
    assert emitted[0] == 319
    assert len(emitted) > 2
    assert len(part_files(out)) >= 3


def test_small_stream_does_not_hold_back_state(tmp_path, monkeypatch):
    out = tmp_path / "out"
    lines = [schema_message("logs", keys=["log_id"]), record_message(event(0), "logs")]
    lines += list(events_lines(250, state_every=50))
    emitted = []
    run_target(
        out,
        lines,
        monkeypatch,
        on_state=lambda s: emitted.append(sorted({p.parent.name for p in part_files(out)})),
        batch_size_rows=100,
        state_max_lag_seconds=3600,
    )
    # The first STATE comes out at the first full flush of events (not at the end), and the
    # small stream's record was flushed with it.
    assert emitted[0] == ["events", "logs"]
    assert len(emitted) > 1


def test_decimal_bookmarks_do_not_crash(tmp_path, monkeypatch):
    lines = [
        schema_message(),
        record_message(event(1)),
        '{"type": "STATE", "value": {"bookmarks": {"events": {"v": 1.50, "w": 0.1}}}}',
    ]
    _, capture = run_target(tmp_path / "out", lines, monkeypatch)
    # The msgspec reader turns 1.50 into Decimal("1.50"); the SDK's json.dumps would crash.
    assert capture.lines == ['{"bookmarks":{"events":{"v":1.50,"w":0.1}}}']
    assert json.loads(capture.lines[0], parse_float=decimal.Decimal) == {
        "bookmarks": {"events": {"v": decimal.Decimal("1.50"), "w": decimal.Decimal("0.1")}}
    }


def test_identical_states_are_not_repeated(tmp_path, monkeypatch):
    lines = [schema_message(), record_message(event(1))]
    lines += ['{"type": "STATE", "value": {"a": 1}}'] * 3
    _, capture = run_target(tmp_path / "out", lines, monkeypatch)
    assert capture.states == [{"a": 1}]
    assert json.dumps(capture.states[0]) == '{"a": 1}'


def test_a_large_state_taken_by_stdout_in_pieces_comes_out_whole(tmp_path, monkeypatch):
    """Unbuffered stdout (PYTHONUNBUFFERED=1) may take a line in pieces; none is dropped."""
    bookmarks = {f"log-{i:05d}": {"next_from_millis": 10**12 + i} for i in range(400)}
    raw = Trickle(step=4096)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8"))
    target = TargetParquetParts(config={"output_dir": str(tmp_path / "out")})
    lines = [schema_message(), record_message(event(1)), state_message({"bookmarks": bookmarks})]
    target.listen(file_input=io.BytesIO("".join(line + "\n" for line in lines).encode()))
    assert raw.calls > 1  # the STATE line really went out in pieces
    assert [json.loads(line) for line in bytes(raw.data).splitlines()] == [{"bookmarks": bookmarks}]


@pytest.mark.e2e
@pytest.mark.parametrize("lag", [0.2, 0])
def test_state_comes_out_while_the_tap_is_silent(tmp_path, lag):
    """A quiet tap (query still running, 429 wait) must not hold a STATE past the lag bound.

    With lag 0 the part is handed to the part writer at the STATE; the writer wakes the idle
    watcher when it landed, which writes the STATE while no input comes."""
    out = tmp_path / "out"
    with start_target_process(out, batch_size_rows=10_000, state_max_lag_seconds=lag) as proc:
        try:
            assert proc.stdin is not None
            assert proc.stdout is not None
            lines = [schema_message()] + [record_message(event(i)) for i in range(10)]
            lines.append(state_message({"bookmarks": {"events": {"last": 9}}}))
            proc.stdin.write("".join(line + "\n" for line in lines).encode())
            proc.stdin.flush()  # stdin stays open: no more input, no end of input
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "no STATE while the input was idle"
            state = json.loads(proc.stdout.readline())
            assert state == {"bookmarks": {"events": {"last": 9}}}
            parts = part_files(out)  # the STATE's records were already on disk
            assert sum(pq.read_table(p).num_rows for p in parts) == 10
            assert proc.poll() is None  # the target is still running, waiting for input
        finally:
            proc.kill()
            proc.wait()
