"""SIGTERM / SIGINT: the flush in progress finishes, STATE stays behind the data, exit 128 + N.

In-process tests call the target's handler from inside a flush, exactly as Python runs a signal
handler in the main thread between two bytecodes of whatever it was doing. Process-level tests
(``e2e``) send real signals.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pyarrow.parquet as pq
import pytest

from target_parquet_parts.parts import PartWriter
from target_parquet_parts.target import TargetParquetParts
from tests.target.conftest import StateCapture, part_files, read_rows, temp_files
from tests.target.singer_data import BASE_SEQUENCE, events_lines


def _listen(target: TargetParquetParts, lines, capture: StateCapture) -> None:
    """Feed the lines one by one, lazily (a generator can act between two messages)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", capture)
        target.listen(file_input=((line + "\n").encode("utf-8") for line in lines))


def _covered(out, state) -> bool:
    """Every record up to the STATE's bookmark is in a complete part."""
    last = state["bookmarks"]["events"]["last"]
    on_disk = {row["sequence_number"] - BASE_SEQUENCE for row in read_rows(out)}
    return set(range(last + 1)) <= on_disk


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_flush_lets_it_finish_then_exits_128_plus_signal(
    tmp_path, monkeypatch, signum
):
    out = tmp_path / "out"
    target = TargetParquetParts(
        config={"output_dir": str(out), "batch_size_rows": 100, "state_max_lag_seconds": 3600}
    )
    real_write = PartWriter.write
    writes = []

    def write(self, table, directory, before_publish=None):
        writes.append(table.num_rows)
        if len(writes) == 2:  # the signal lands in the middle of the second flush
            target._handle_termination(signum, sys._getframe())
        return real_write(self, table, directory, before_publish)

    monkeypatch.setattr(PartWriter, "write", write)
    capture = StateCapture()
    with pytest.raises(SystemExit) as exited:
        _listen(target, events_lines(1000, state_every=50), capture)
    assert exited.value.code == 128 + signum
    # The interrupted flush completed, and the reader stopped right after that message (the
    # record that filled the second batch): records 0..199, nothing later.
    rows = read_rows(out)
    assert sorted(r["sequence_number"] - BASE_SEQUENCE for r in rows) == list(range(200))
    assert writes == [100, 100]
    assert temp_files(out) == []
    # STATE(149) was the last one received before the stop: out, and covered by the parts.
    assert capture.states[-1] == {"bookmarks": {"events": {"last": 149}}}
    assert all(_covered(out, state) for state in capture.states)
    # Records 150..199 came after the last STATE: journaled, so a rerun from STATE(149) does not
    # write them twice.
    journal = (out / "_journal" / "journal.jsonl").read_text()
    assert "events/part-" in journal


def test_signal_while_records_are_buffered_flushes_them_and_emits_their_state(tmp_path):
    out = tmp_path / "out"
    target = TargetParquetParts(
        config={"output_dir": str(out), "batch_size_rows": 1000, "state_max_lag_seconds": 3600}
    )
    capture = StateCapture()

    def lines():
        yield from events_lines(120, state_every=40)
        # The signal arrives while the target handles the next message (nothing flushed yet).
        target._handle_termination(signal.SIGTERM, None)
        yield from events_lines(10, start=120)

    with pytest.raises(SystemExit) as exited:
        _listen(target, lines(), capture)
    assert exited.value.code == 143
    # The 120 buffered records were flushed at the stop, then their STATE written.
    assert capture.states == [{"bookmarks": {"events": {"last": 119}}}]
    assert sum(pq.read_table(p).num_rows for p in part_files(out)) <= 121
    assert _covered(out, capture.states[-1])


def test_second_signal_stops_at_once(tmp_path, monkeypatch):
    out = tmp_path / "out"
    target = TargetParquetParts(config={"output_dir": str(out), "batch_size_rows": 100})
    exits = []

    class HardExit(BaseException):
        pass

    def fake_exit(code):
        exits.append(code)
        raise HardExit

    monkeypatch.setattr(os, "_exit", fake_exit)
    target._handle_termination(signal.SIGINT, None)
    with pytest.raises(HardExit):
        target._handle_termination(signal.SIGTERM, None)
    assert exits == [143]


def test_batch_message_records_are_counted_once(tmp_path, caplog):
    """BATCH files: the SDK counts their records before process_batch; the sink must not."""
    out = tmp_path / "out"
    batch_file = tmp_path / "batch.jsonl"
    records = [json.loads(line)["record"] for line in list(events_lines(30))[1:]]
    batch_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = [
        next(events_lines(0)),  # SCHEMA
        json.dumps(
            {
                "type": "BATCH",
                "stream": "events",
                "encoding": {"format": "jsonl", "compression": "none"},
                "manifest": [batch_file.as_uri()],
            }
        ),
        *list(events_lines(5, start=30))[1:],  # and 5 ordinary RECORDs
    ]
    target = TargetParquetParts(config={"output_dir": str(out)})
    caplog.set_level("INFO", logger="singer_sdk.metrics")
    _listen(target, lines, StateCapture())
    counted = 0
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("METRIC: "):
            point = json.loads(message.removeprefix("METRIC: "))
            if point["metric"] == "record_count" and point["tags"].get("stream") == "events":
                counted += point["value"]
    assert len(read_rows(out)) == 35
    assert counted == 35
