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
import shutil
import signal
import subprocess
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from target_parquet_parts import objectstore
from target_parquet_parts.storage import arrow_filesystem
from tests.stalling_proxy import StallingProxy
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


UNSHARE = shutil.which("unshare")


@pytest.mark.skipif(
    UNSHARE is None and not os.environ.get("CI"),
    reason="needs unshare (util-linux) to run the second target in another pid namespace",
)
def test_a_part_upload_stalled_past_its_lease_is_fenced_by_the_next_run(s3_bucket, tmp_path):
    """Run A's part PUT and all its lock requests stall in a proxy on loopback past its 6 s
    lease (a stalled proxy, a VM pause). A abandons them within its lease and fails; run B, in
    another pid namespace (another container: the lease decides), takes the lock over, fences
    the stalled part's name and writes the rows. Released, the stalled PUT reaches the store
    late and meets the fence (412): no STATE from A, and every row is there once."""
    assert UNSHARE is not None
    config = tmp_path / "target.json"
    settings = {"output_dir": s3_bucket.uri(), "batch_size_rows": 100, "state_max_lag_seconds": 0}
    config.write_text(json.dumps({**settings, "lock_lease_seconds": 6}))
    b_config = tmp_path / "takeover.json"
    b_config.write_text(json.dumps({**settings, "lock_lease_seconds": 60}))
    first = [schema_message(), *(record_message(event(i)) for i in range(100))]
    rest = [record_message(event(i)) for i in range(100, 200)]
    with StallingProxy(s3_bucket.endpoint) as proxy:
        env = {**os.environ, **s3_bucket.env, "AWS_ENDPOINT_URL": proxy.url}
        with (tmp_path / "a.stderr").open("wb") as a_err:
            stalled = subprocess.Popen(
                [TARGET_BIN, "--config", str(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=a_err,
                env=env,
            )
        try:
            assert stalled.stdout is not None
            _send(stalled, [*first, state_message({"last": 99})])
            assert json.loads(stalled.stdout.readline()) == {"last": 99}  # part 1 is durable
            proxy.hold(
                f"PUT /{s3_bucket.name}/data/events/part-".encode(),
                f"/{s3_bucket.name}/data/_journal/lock ".encode(),  # renewals and the delete
            )
            _send(stalled, rest)  # its part 2: journal line written, PUT held
            assert proxy.held.wait(60)
            takeover = subprocess.run(
                [UNSHARE, "--pid", "--fork", "--mount-proc", TARGET_BIN, "--config", str(b_config)],
                input="".join(f"{line}\n" for line in [first[0], *rest]).encode()
                + (state_message({"last": 199}) + "\n").encode(),
                capture_output=True,
                env={**os.environ, **s3_bucket.env},
                timeout=180,
                check=False,
            )
            logged = takeover.stderr.decode()
            assert takeover.returncode == 0, logged[-3000:]
            assert takeover.stdout.decode().splitlines() == ['{"last":199}']
            assert "took over the lock" in logged
            assert "journal_fenced stream=events fenced=1 landed=0" in logged
            proxy.release()  # A's PUT and renewal finally reach the store
            assert stalled.stdin is not None
            stalled.stdin.close()
            late_out = stalled.stdout.read()
            code = stalled.wait(timeout=120)
        finally:
            if stalled.poll() is None:
                stalled.kill()
                stalled.wait()
            for pipe in (stalled.stdin, stalled.stdout):
                if pipe is not None:
                    pipe.close()
    a_log = (tmp_path / "a.stderr").read_text()
    assert code != 0, a_log[-3000:]
    assert late_out == b""  # no STATE after the stall: nothing claimed for rows 100..199
    held = proxy.held_requests
    # A cut each stalled attempt at its deadline, within its lease, and failed: all attempts
    # timed out, or its last one reached the store after the fence and was refused (naming the
    # part), or, while the part was still in flight on the writer thread, the reading thread
    # found the lease lost first (naming the lock).
    attempts = sum(b"data/events/part-" in request for request in held)
    assert 2 <= attempts <= objectstore._ATTEMPTS
    assert any(
        said in a_log
        for said in ("ReadTimeoutError", "is already taken", "this run no longer holds its lock")
    )
    fs, root = arrow_filesystem(s3_bucket.uri())
    keys = (
        ds.dataset(f"{root}/events", filesystem=fs, format="parquet")
        .to_table(columns=["sequence_number_str"])
        .column(0)
        .to_pylist()
    )
    print(
        f"late-PUT fencing: rows {len(keys)}, distinct {len(set(keys))}, held {proxy.held_requests}"
    )
    assert len(keys) == len(set(keys)) == 200
