"""kill -9 on S3 (moto's server): the real target process, killed at seeded random points in a
bounded loop, each rerun resuming from the last STATE it emitted, as an orchestrator would.

At the end: rows = distinct keys = input, no key lost or duplicated, every object written once
(one version each in the versioned bucket), nothing but parts visible under the dataset prefix,
and the journal and lock gone after the clean final run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from target_parquet_parts.storage import arrow_filesystem
from tests.target.conftest import TARGET_BIN
from tests.target.singer_data import event, record_message, schema_message, state_message

pytestmark = pytest.mark.e2e

SEED = 12
CYCLES = 8
TOTAL = 4000


def _start(tmp_path: Path, bucket, tag: str, **config) -> subprocess.Popen:
    config_path = tmp_path / f"target-{tag}.json"
    config_path.write_text(json.dumps({"output_dir": bucket.uri(), **config}))
    with (tmp_path / f"target-{tag}.stderr").open("wb") as stderr:
        return subprocess.Popen(
            [TARGET_BIN, "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, **bucket.env},
        )


def _lines(start: int, stop: int, state_every: int) -> list[str]:
    lines = []
    for i in range(start, stop):
        lines.append(record_message(event(i)))
        if (i + 1) % state_every == 0:
            lines.append(state_message({"bookmarks": {"events": {"last": i}}}))
    return lines


def _send(proc: subprocess.Popen, lines: list[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
    proc.stdin.flush()


def _check_objects(bucket) -> None:
    """Only parts (and the journal/lock) under the prefix; every key written exactly once."""
    for key in bucket.keys("data/"):
        relative = key.removeprefix("data/")
        assert relative.startswith(("events/part-", "_journal/")), key
        if relative.startswith("events/"):
            assert relative.endswith(".parquet"), key
    versions = bucket.versions("data/events/")
    assert all(len(v) == 1 for v in versions.values()), versions
    journal = {k: v for k, v in bucket.versions("data/_journal/").items() if k.endswith(".jsonl")}
    assert all(len(v) == 1 for v in journal.values()), journal
    assert bucket.delete_markers("data/events/") == []


def test_kill9_loop_then_rerun_is_exactly_once_on_s3(s3_bucket, tmp_path):
    rng = random.Random(SEED)
    resume = 0  # the tap restarts after the last STATE the target emitted
    figures = []
    for cycle in range(CYCLES):
        batch = rng.choice([40, 64, 100, 150])
        state_every = rng.choice([30, 50, 75])
        with _start(
            tmp_path, s3_bucket, f"c{cycle}", batch_size_rows=batch, state_max_lag_seconds=3600
        ) as proc:
            assert proc.stdout is not None
            try:
                # Enough records that a STATE must come out: a STATE, then a full batch.
                first = resume + state_every + batch + rng.randint(0, batch)
                _send(proc, [schema_message(), *_lines(resume, first, state_every)])
                seen = proc.stdout.readline()  # one STATE is out: parts are landing now
                assert seen
                # More records, then kill -9 with no pause: mid-parse, mid-flush or mid-PUT.
                more = first + rng.randint(0, 2 * batch)
                _send(proc, _lines(first, min(more, TOTAL), state_every))
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                # Every STATE it wrote before dying (through the same buffered reader as the
                # readline above: it may hold more than one line already).
                out = proc.stdout.read()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        emitted = [json.loads(line) for line in (seen + out).splitlines() if line.strip()]
        last = emitted[-1]["bookmarks"]["events"]["last"]
        figures.append({"cycle": cycle, "sent_to": min(more, TOTAL), "state": last})
        _check_objects(s3_bucket)
        resume = last + 1
    # The final run: from the last STATE to the end, input closed, a clean exit.
    with _start(tmp_path, s3_bucket, "final", batch_size_rows=100) as proc:
        lines = [schema_message(), *_lines(resume, TOTAL, 50)]
        lines.append(state_message({"bookmarks": {"events": {"last": TOTAL - 1}}}))
        out, _ = proc.communicate("".join(line + "\n" for line in lines).encode())
    assert proc.returncode == 0, (tmp_path / "target-final.stderr").read_text()
    assert out.decode().splitlines()[-1] == json.dumps(
        {"bookmarks": {"events": {"last": TOTAL - 1}}}, separators=(",", ":")
    )
    fs, root = arrow_filesystem(s3_bucket.uri())
    table = ds.dataset(f"{root}/events", filesystem=fs, format="parquet").to_table(
        columns=["sequence_number_str"]
    )
    keys = table.column("sequence_number_str").to_pylist()
    expected = {event(i)["sequence_number_str"] for i in range(TOTAL)}
    assert len(keys) == len(set(keys)) == TOTAL  # no duplicate
    assert set(keys) == expected  # no loss
    _check_objects(s3_bucket)
    assert s3_bucket.journal_remembers() == []  # clean end: entries covered, lock released
    dropped = sum(
        int(line.rsplit("rows=", 1)[1])
        for path in tmp_path.glob("target-*.stderr")
        for line in path.read_text().splitlines()
        if "journal_duplicates_dropped" in line
    )
    summary = {
        "cycles": CYCLES,
        "rows_in": TOTAL,
        "rows_out": len(keys),
        "distinct": len(set(keys)),
        "lost": len(expected - set(keys)),
        "duplicated": len(keys) - len(set(keys)),
        "replayed_dropped": dropped,
        "parts": len(s3_bucket.versions("data/events/")),
        "cycles_detail": figures,
    }
    print(json.dumps(summary))
    report = os.environ.get("OBJECT_STORAGE_CRASH_REPORT")
    if report:  # for a human: the figures and the bucket's listing with versions
        summary["versions"] = s3_bucket.versions("data/")
        summary["delete_markers"] = s3_bucket.delete_markers("data/")
        Path(report).write_text(json.dumps(summary, indent=1) + "\n")


def test_second_process_on_the_same_bucket_prefix_is_refused(s3_bucket, tmp_path):
    with _start(tmp_path, s3_bucket, "holder", batch_size_rows=10) as holder:
        assert holder.stdout is not None
        _send(holder, [schema_message(), *_lines(0, 10, 10)])
        assert holder.stdout.readline()  # the holder has its lock and wrote a part
        with _start(tmp_path, s3_bucket, "second") as second:
            second.communicate("\n".join([schema_message(), *_lines(0, 5, 5)]).encode() + b"\n")
        assert second.returncode != 0
        stderr = (tmp_path / "target-second.stderr").read_text()
        assert f"in use by another target-parquet-parts process (pid {holder.pid}" in stderr
        holder.communicate(b"")
    assert holder.returncode == 0
    assert s3_bucket.journal_remembers() == []
