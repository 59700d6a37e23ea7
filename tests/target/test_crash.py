"""kill -9 between batches, then a rerun from the last STATE: complete parts, exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.target.conftest import TARGET_BIN, part_files, start_target_process, temp_files
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
    assert (out / "_journal" / "journal.jsonl").read_text() == ""


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
