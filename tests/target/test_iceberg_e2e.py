"""table_format iceberg as real processes: concurrent writers, kill -9 mid-commit, reruns."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from tests.target.conftest import TARGET_BIN, start_target_process
from tests.target.iceberg_helpers import (
    ICEBERG,
    duckdb_counts,
    key_multiset,
    scan,
    send,
    summaries,
)
from tests.target.singer_data import event, record_message, schema_message, state_message

pytestmark = pytest.mark.e2e

KILL_ENV = "TARGET_PARQUET_PARTS_TEST_KILL"


def _lines(log_id: str, start: int, stop: int, state_every: int) -> list[str]:
    lines = [schema_message()]
    for i in range(start, stop):
        lines.append(record_message(event(i, log_id=log_id)))
        if (i + 1) % state_every == 0:
            lines.append(state_message({"bookmarks": {"events": {"last": i}}}))
    return lines


@pytest.mark.parametrize("writers", [2, 3])
def test_concurrent_writers_into_one_table(tmp_path, writers):
    out = tmp_path / "out"
    per_writer, chunk = 600, 50
    log_ids = [f"log-{w}" for w in range(writers)]
    config = {"batch_size_rows": chunk, "partition_date_field": "event_time", **ICEBERG}
    procs = [start_target_process(out, **config) for _ in log_ids]
    try:
        inputs = [_lines(log_id, 0, per_writer, chunk) for log_id in log_ids]
        for proc, lines in zip(procs, inputs, strict=True):
            send(proc, lines[:1])
        # Round robin, one batch (and its STATE) at a time, so the commits overlap.
        position = 1
        while position < len(inputs[0]):
            for proc, lines in zip(procs, inputs, strict=True):
                send(proc, lines[position : position + chunk + 1])
            position += chunk + 1
        outputs = []
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.stdout is not None
            outputs.append(proc.stdout.read().decode())
            proc.wait()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    # the process may have died with input still buffered
                    with contextlib.suppress(BrokenPipeError):
                        pipe.close()
    assert [p.returncode for p in procs] == [0] * writers
    for text in outputs:
        assert json.loads(text.splitlines()[-1]) == {"bookmarks": {"events": {"last": 599}}}
    rows = scan(out)
    expected = sorted(
        (log_id, event(i, log_id=log_id)["sequence_number_str"])
        for log_id in log_ids
        for i in range(per_writer)
    )
    assert key_multiset(rows) == expected  # every row once, none lost, none twice
    assert duckdb_counts(out) == (writers * per_writer, writers * per_writer)
    history = summaries(out)
    commits = [s for s in history if "singer.flush" in s]
    runs = {s["singer.run-id"] for s in commits}
    assert len(runs) == writers
    for run in runs:
        flushes = [int(s["singer.flush"]) for s in commits if s["singer.run-id"] == run]
        assert flushes == list(range(1, per_writer // chunk + 1))
    ends = [s for s in history if s.get("singer.run-end") == "complete"]
    assert len(ends) == writers
    stderr = "".join(p.read_text() for p in tmp_path.glob("target-*.stderr"))
    retries = stderr.count("iceberg_commit_retry")
    # Each retry is logged; a conflict is possible at every commit (writers overlap), but
    # whether one happens depends on the scheduler, so only the bookkeeping is asserted.
    assert retries == sum(1 for line in stderr.splitlines() if "iceberg_commit_retry " in line)
    print(f"{writers} writers: {len(commits)} commits, {retries} commit retries")


def _run(out: Path, lines: list[str], kill: str | None) -> tuple[int, list[dict], str]:
    config = out.parent / "rerun.json"
    config.write_text(json.dumps({"output_dir": str(out), "batch_size_rows": 100, **ICEBERG}))
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill:
        env[KILL_ENV] = kill
    result = subprocess.run(
        [TARGET_BIN, "--config", str(config)],
        input="".join(line + "\n" for line in lines).encode(),
        capture_output=True,
        env=env,
        check=False,
    )
    states = [json.loads(line) for line in result.stdout.decode().splitlines() if line]
    return result.returncode, states, result.stderr.decode()


@pytest.mark.parametrize(("point", "dropped"), [("before_commit", 0), ("after_commit", 100)])
def test_kill9_mid_commit_then_rerun_from_last_state(tmp_path, point, dropped):
    out = tmp_path / "out"
    code, states, _ = _run(out, _lines("log-a", 0, 500, 100), kill=f"{point}:3")
    assert code == -signal.SIGKILL
    # Commit 3 holds records 200..299: STATE 199 was the last one out.
    assert states[-1] == {"bookmarks": {"events": {"last": 199}}}
    landed = scan(out).num_rows
    assert landed == (300 if point == "after_commit" else 200)
    code, states, stderr = _run(out, _lines("log-a", 200, 500, 100), kill=None)
    assert code == 0
    assert states[-1] == {"bookmarks": {"events": {"last": 499}}}
    if dropped:
        assert f"iceberg_duplicates_dropped stream=events table=singer.events rows={dropped}" in (
            stderr
        )
    else:
        assert "iceberg_duplicates_dropped" not in stderr
    rows = scan(out)
    assert key_multiset(rows) == sorted(
        ("log-a", event(i)["sequence_number_str"]) for i in range(500)
    )
    assert duckdb_counts(out) == (500, 500)


def test_kill9_at_seeded_random_commits_then_reruns_land_each_record_once(tmp_path):
    rng = random.Random(20240601)
    out = tmp_path / "out"
    total, start, crashes = 1200, 0, 0
    for _ in range(4):
        point = rng.choice(["before_commit", "after_commit"])
        kill = f"{point}:{rng.randint(1, 4)}"
        code, states, _ = _run(out, _lines("log-r", start, total, 100), kill=kill)
        if code == 0:
            break
        assert code == -signal.SIGKILL, kill
        crashes += 1
        if states:
            start = states[-1]["bookmarks"]["events"]["last"] + 1
    code, states, _ = _run(out, _lines("log-r", start, total, 100), kill=None)
    assert code == 0
    assert states[-1] == {"bookmarks": {"events": {"last": total - 1}}}
    assert crashes >= 2
    rows = scan(out)
    assert key_multiset(rows) == sorted(
        ("log-r", event(i, log_id="log-r")["sequence_number_str"]) for i in range(total)
    )


def test_process_killed_while_idle_between_states_resumes(tmp_path):
    """kill -9 from outside (no hook), records buffered after the last STATE: rerun once."""
    out = tmp_path / "out"
    with start_target_process(out, batch_size_rows=100, state_max_lag_seconds=3600, **ICEBERG) as p:
        try:
            send(p, _lines("log-k", 0, 250, 100))
            assert p.stdout is not None
            assert json.loads(p.stdout.readline())["bookmarks"]["events"]["last"] == 99
            assert json.loads(p.stdout.readline())["bookmarks"]["events"]["last"] == 199
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    code, _, _ = _run(out, _lines("log-k", 200, 300, 100), kill=None)
    assert code == 0
    assert key_multiset(scan(out)) == sorted(
        ("log-k", event(i, log_id="log-k")["sequence_number_str"]) for i in range(300)
    )
