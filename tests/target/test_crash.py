"""kill -9 between batches, then a rerun from the last STATE: complete parts, exactly once."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.target.conftest import (
    TARGET_BIN,
    journal_lines,
    part_files,
    run_target,
    start_target_process,
    temp_files,
)
from tests.target.cycles import dataset_indexes, run_cycle
from tests.target.iceberg_helpers import scan
from tests.target.singer_data import (
    BASE_SEQUENCE,
    event,
    record_message,
    schema_message,
    state_message,
)

pytestmark = pytest.mark.e2e


def _send(proc: subprocess.Popen, lines: list[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
    proc.stdin.flush()


def _crashed_run(out, tmp_path):
    """Run 1: two parts land, STATE(149) comes out, half a batch is buffered, then kill -9."""
    with start_target_process(out, batch_size_rows=100, state_max_lag_seconds=3600) as proc:
        try:
            _send(proc, [schema_message()] + [record_message(event(i)) for i in range(150)])
            _send(proc, [state_message({"bookmarks": {"events": {"last": 149}}})])
            _send(proc, [record_message(event(i)) for i in range(150, 200)])
            # The flush at record 199 makes STATE(149) safe: wait for it on stdout (no sleeps).
            line = proc.stdout.readline()
            assert json.loads(line) == {"bookmarks": {"events": {"last": 149}}}
            # Records 0..199 are in two parts now; 150..199 came after the emitted STATE.
            assert len(part_files(out)) == 2
            _send(proc, [record_message(event(i)) for i in range(200, 260)])
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc


def test_kill9_between_batches_leaves_only_complete_parts(tmp_path):
    out = tmp_path / "out"
    _crashed_run(out, tmp_path)
    parts = part_files(out)
    assert len(parts) == 2
    rows = sum(pq.read_table(p).num_rows for p in parts)  # every part reads completely
    assert rows == 200
    assert temp_files(out) == []


def test_rerun_from_last_state_writes_each_record_once(tmp_path):
    out = tmp_path / "out"
    _crashed_run(out, tmp_path)
    journal = (out / "_journal" / "journal.jsonl").read_text()
    assert "events/part-" in journal
    # The orchestrator restarts the tap from the last STATE it saw: records 150.. again.
    rerun_input = [schema_message()] + [record_message(event(i)) for i in range(150, 400)]
    rerun_input.append(state_message({"bookmarks": {"events": {"last": 399}}}))
    config = tmp_path / "rerun.json"
    config.write_text(json.dumps({"output_dir": str(out), "batch_size_rows": 100}))
    result = subprocess.run(
        [TARGET_BIN, "--config", str(config)],
        input="".join(line + "\n" for line in rerun_input).encode(),
        capture_output=True,
        check=True,
    )
    assert result.stdout.decode().splitlines() == ['{"bookmarks":{"events":{"last":399}}}']
    assert "journal_duplicates_dropped stream=events rows=50" in result.stderr.decode()
    [(total, distinct, low, high)] = duckdb.sql(
        f"select count(*), count(distinct sequence_number_str), min(sequence_number), "
        f"max(sequence_number) from read_parquet('{out}/events/*.parquet')"
    ).fetchall()
    assert (total, distinct) == (400, 400)
    assert (low, high) == (BASE_SEQUENCE, BASE_SEQUENCE + 399)
    # A clean end with nothing after the last STATE empties the journal.
    assert journal_lines(out) == []


def test_second_process_on_the_same_output_dir_is_refused(tmp_path):
    out = tmp_path / "out"
    with start_target_process(out) as first:
        try:
            # A SCHEMA with key properties opens (and locks) the journal; the STATE after it finds
            # nothing buffered and comes straight out: once we read it, the lock is held.
            _send(first, [schema_message(), state_message({"x": 1})])
            assert json.loads(first.stdout.readline()) == {"x": 1}
            config = tmp_path / "second.json"
            config.write_text(json.dumps({"output_dir": str(out)}))
            second = subprocess.run(
                [TARGET_BIN, "--config", str(config)],
                input=(schema_message() + "\n").encode(),
                check=False,
                capture_output=True,
            )
        finally:
            first.stdin.close()
            first.wait()
    assert second.returncode != 0
    assert b"is in use by another target-parquet-parts process" in second.stderr
    assert first.returncode == 0


def test_relative_output_dir_with_journal(tmp_path, monkeypatch):
    from pathlib import Path

    from tests.target.conftest import run_target

    monkeypatch.chdir(tmp_path)
    lines = [schema_message()] + [record_message(event(i)) for i in range(5)]
    lines.append(state_message({"done": 1}))
    _, capture = run_target(Path("rel-out"), lines, monkeypatch, batch_size_rows=2)
    assert capture.states == [{"done": 1}]
    assert len(part_files(tmp_path / "rel-out")) == 3


def test_kill9_at_random_points_resumed_from_the_last_state_keeps_every_record_once(tmp_path):
    """About 10 ``kill -9`` at seeded-random points (a log line, or a record count on the
    feeder's side), each run resumed from the last STATE written. Every STATE is covered by
    parts, nothing is written twice, and the journal a run loads holds only rows after the
    last STATE, however many runs crashed before: never more than the dataset holds past the
    resume point."""
    out = tmp_path / "out"
    rng = random.Random(1130)
    total, state_every, batch = 30_000, 70, 300
    config = {"output_dir": str(out), "batch_size_rows": batch, "state_max_lag_seconds": 3600}
    position = rows_past_position = 0
    figures = []
    for number in range(11):
        last = number == 10  # the last run is not killed: it reads everything to the end
        log_line = rng.randint(10, 60)
        cycle = run_cycle(
            tmp_path / "runs",
            start=position,
            total=total,
            state_every=state_every,
            config=config,
            trigger=lambda cycle, kind, line, n=log_line, last=last: (
                not last and kind == "err" and len(cycle.stderr) == n
            ),
            action=lambda proc: proc.kill(),
            feeder_trigger=rng.randint(100, 2500) if number % 2 and not last else None,
        )
        assert cycle.triggered != last, f"cycle {number}: the input ended before the kill"
        assert cycle.returncode == (0 if last else -signal.SIGKILL)
        # The journal it loaded: rows after the last STATE only, so at most the dataset's rows
        # past the resume point (plus one batch for crash point 4 of journal.py: a kill
        # between a STATE line and its "covered" line, a window of microseconds).
        keys = cycle.journal_keys_loaded()
        assert keys <= rows_past_position + batch, (number, keys, rows_past_position)
        if cycle.resume_from is not None:
            position = cycle.resume_from
        on_disk = dataset_indexes(out)
        assert len(on_disk) == len(set(on_disk)), f"cycle {number}: duplicates"
        assert set(range(position)) <= set(on_disk), f"cycle {number}: STATE ahead of the data"
        rows_past_position = sum(1 for index in on_disk if index >= position)
        figures.append((cycle.start, cycle.sent, keys, position, rows_past_position))
    print(f"kill -9 loop (start, sent, journal keys loaded, resume, rows past it): {figures}")
    assert len(on_disk) == len(set(on_disk)) == total
    assert journal_lines(out) == []


def _run(
    out: Path, tmp_path: Path, lines: list[str], name: str, table_format: str
) -> subprocess.CompletedProcess:
    """The target over ``lines`` to the end of its input (a clean EOF)."""
    config = tmp_path / f"{name}.json"
    settings = {"output_dir": str(out), "batch_size_rows": 100, "table_format": table_format}
    config.write_text(json.dumps(settings))
    return subprocess.run(
        [TARGET_BIN, "--config", str(config)],
        input="".join(line + "\n" for line in [schema_message(), *lines]).encode(),
        capture_output=True,
        check=True,
        timeout=120,
    )


def _written(out: Path, table_format: str) -> list[int]:
    if table_format == "parquet":
        return dataset_indexes(out)
    return [seq - BASE_SEQUENCE for seq in scan(out).column("sequence_number").to_pylist()]


@pytest.mark.parametrize("table_format", ["parquet", "iceberg"])
def test_a_tap_that_dies_before_its_first_state_keeps_the_earlier_tail_remembered(
    tmp_path, table_format
):
    """The target sees a clean end of input with no STATE (its tap failed early): rows after
    the last STATE an earlier run emitted come again on the next resume, so they stay."""
    out = tmp_path / "out"
    first = [record_message(event(i)) for i in range(150)]
    first += [state_message({"last": 149}), *(record_message(event(i)) for i in range(150, 400))]
    _run(out, tmp_path, first, "first", table_format)  # 150..399 after its last STATE
    died = [record_message(event(i)) for i in range(150, 450)]  # 400..449 are new
    logged = _run(out, tmp_path, died, "died", table_format)
    assert logged.stdout == b""  # no STATE reached it, none came out
    pattern = r"(?:journal|iceberg)_duplicates_dropped stream=events (?:table=\S+ )?rows=(\d+)"
    dropped = re.findall(pattern, logged.stderr.decode())
    assert sum(map(int, dropped)) == 250  # the first run's tail came again
    if table_format == "parquet":
        assert journal_lines(out) != []  # still remembered
    rerun = [record_message(event(i)) for i in range(150, 500)] + [state_message({"last": 499})]
    _run(out, tmp_path, rerun, "rerun", table_format)  # resumed from STATE(149), as usual
    on_disk = _written(out, table_format)
    assert len(on_disk) == len(set(on_disk)) == 500
    if table_format == "parquet":
        assert journal_lines(out) == []  # a completed run with everything covered: emptied


@pytest.mark.parametrize("table_format", ["parquet", "iceberg"])
def test_a_stateless_tap_gets_each_full_sync_written_and_the_journal_stays_empty(
    tmp_path, table_format
):
    """No STATE ever reached this output_dir: each run is a new full sync, nothing to resume."""
    out = tmp_path / "out"
    for name in ("one", "two"):
        _run(out, tmp_path, [record_message(event(i)) for i in range(120)], name, table_format)
        if table_format == "parquet":
            assert (out / "_journal" / "journal.jsonl").read_text() == ""
    assert len(_written(out, table_format)) == 240  # a snapshot per run, as the tap meant


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_failed_run_in_process_unlocks_output_dir_before_its_error_leaves(
    tmp_path, monkeypatch, request, where
):
    """A caller that keeps the failed target alive (the SDK's runners, a notebook) can run the
    next one on the same output_dir at once, and the next one still drops the replays."""
    if where == "s3":
        output_dir = request.getfixturevalue("s3_bucket").uri()
    else:
        output_dir = str(tmp_path / "out")
    lines = [schema_message(), *(record_message(event(i)) for i in range(250))]
    lines.append('{"type": "RECORD", "stream": "unknown", "record": {}}')  # fails the run
    # The failed target stays alive: the SDK's signal handler refers to it, so no finalizer
    # would unlock output_dir.
    with pytest.raises(Exception, match="unknown"):
        run_target(output_dir, lines, monkeypatch, batch_size_rows=100)
    rerun = [schema_message(), *(record_message(event(i)) for i in range(300))]
    rerun.append(state_message({"last": 299}))
    target, capture = run_target(output_dir, rerun, monkeypatch, batch_size_rows=100)
    assert capture.states == [{"last": 299}]
    assert sum(sink.rows_flushed for sink in target._sinks) == 300
    on_disk = dataset_indexes(output_dir)
    assert len(on_disk) == len(set(on_disk)) == 300  # the failed run's 200 rows were replays
