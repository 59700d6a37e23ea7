"""Target memory across flushes: RSS of one long-lived run after ~1k and after ~100k flushes.

One ``target-parquet-parts`` process (the CLI, so its ``gc.freeze()`` and raised GC thresholds
apply) is fed SCHEMA, then ``--records-per-flush`` RECORD lines and a STATE, over and over, with
``state_max_lag_seconds: 0``: every STATE flushes the stream (one new part), then is emitted. The
feeder stops at each checkpoint (1k, 2k, 5k, 10k, ... flushes) until the target has emitted that
many STATE lines; the target is then idle, waiting for input, and its current RSS (``VmRSS``) is
read from /proc, printed with its parts ``RssAnon`` (heaps) and ``RssFile`` (mapped libraries)
and the thread count. Whatever a flush leaves behind (a reference cycle the rarely run cyclic GC
does not free, a cache that only grows, a thread pool that gains a thread now and then) shows as
RSS growing with the flushes: the goal is RSS(last) / RSS(first checkpoint) <= 1.1.

Checked: the target emitted one STATE per flush, the last one the last sent; it wrote one part
per flush (one commit into an Iceberg table) and as many rows as records sent.

``--output``: ``parts`` (local, the default), ``s3`` (moto's server on loopback, as
``object_storage.py`` starts it: journal lines, parts and lock renewals are requests) or
``iceberg`` (one commit per flush; the table's metadata lists every snapshot it keeps, so without
``--retention-hours`` the writer's memory and commit time grow with every flush: use fewer
flushes, or a retention as a long-running target should).

Run: ``.venv/bin/python benchmarks/memory_flushes.py [--quick] [--flushes N] [--early E]
[--records-per-flush R] [--target-command "..."]`` (defaults: 100,000 flushes, first checkpoint
1,000, 1 record per flush; ``--quick``: 1,000 and 100).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import benchlib
import object_storage
import pyarrow.dataset as ds

GOAL = 1.1


def current_memory(pid: int) -> dict[str, float]:
    """The process's resident set now, in MiB: ``VmRSS`` (the goal's measure) and its parts
    ``RssAnon`` (heaps: what the process allocated) and ``RssFile`` (mapped files: library code
    and data pages, faulted in as code paths first run); and its ``Threads`` (a count: each
    thread keeps its own allocator caches)."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            values[key] = int(value.split()[0]) / 1024
        elif key == "Threads":
            values[key] = int(value)
    if "VmRSS" not in values:
        raise SystemExit(f"no VmRSS for process {pid}: did it exit?")
    return values


def checkpoints(early: int, flushes: int) -> list[int]:
    """``early``, then 2-5-10 steps above it (2k, 5k, 10k, ...), then ``flushes``."""
    points = [early]
    step = 10 ** len(str(early))  # the power of ten above early
    while True:
        for multiple in (step // 5, step // 2, step):
            if early < multiple < flushes and multiple > points[-1]:
                points.append(multiple)
        if step >= flushes:
            break
        step *= 10
    if points[-1] != flushes:
        points.append(flushes)
    return points


class Feeder(threading.Thread):
    """Writes the Singer stream segment by segment: segment ``k`` ends at checkpoint ``k`` and
    the next starts only once ``resume()`` was called (the RSS at the checkpoint was read)."""

    def __init__(self, stdin: IO[bytes], points: Sequence[int], per_flush: int) -> None:
        super().__init__(name="feeder", daemon=True)
        self._stdin = stdin
        self._points = points
        self._per_flush = per_flush
        self._resumed = threading.Semaphore(0)
        self.aborted = False

    def resume(self) -> None:
        """Let the next segment go."""
        self._resumed.release()

    def abort(self) -> None:
        """The target is gone: stop at the next segment."""
        self.aborted = True
        self._resumed.release()

    def run(self) -> None:
        try:
            self._stdin.write(benchlib.schema_line())
            done = 0
            for index, point in enumerate(self._points):
                if index:
                    self._resumed.acquire()
                    if self.aborted:
                        return
                buffer: list[bytes] = []
                for flush in range(done, point):
                    first = flush * self._per_flush
                    buffer.extend(
                        benchlib.record_line(i) for i in range(first, first + self._per_flush)
                    )
                    buffer.append(benchlib.state_line(first + self._per_flush - 1))
                    if len(buffer) >= 2048:
                        self._stdin.write(b"".join(buffer))
                        buffer.clear()
                self._stdin.write(b"".join(buffer))
                self._stdin.flush()
                done = point
        except BrokenPipeError:
            pass  # the target died; its return code says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                self._stdin.close()


def run(
    command: list[str],
    workdir: Path,
    points: Sequence[int],
    per_flush: int,
    *,
    output: str = "parts",
    env: dict[str, str] | None = None,
    retention_hours: float | None = None,
) -> dict[int, float]:
    """One target process through every checkpoint; returns RSS (MiB) per checkpoint."""
    output_dir = workdir / "out"
    settings: dict[str, object] = {
        "output_dir": str(output_dir),
        "state_max_lag_seconds": 0,
        "compression": "zstd",
    }
    if output == "s3":
        settings["output_dir"] = f"s3://{object_storage.BUCKET}/flushes"
    elif output == "iceberg":
        settings["table_format"] = "iceberg"
        if retention_hours is not None:
            settings["iceberg_snapshot_retention_hours"] = retention_hours
    config = workdir / "config.json"
    config.write_text(json.dumps(settings))
    stderr_path = workdir / "target.stderr"
    flushes = points[-1]
    rss: dict[int, float] = {}
    states = 0
    last_state: object = None
    started = time.perf_counter()
    with stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [*command, "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**benchlib.CHILD_ENV, **(env or {})},
        )
        watcher = benchlib.PeakRssWatcher(process.pid, period_seconds=0.5)
        assert process.stdin is not None
        assert process.stdout is not None
        feeder = Feeder(process.stdin, points, per_flush)
        feeder.start()
        pending = list(points)
        segment_started = time.perf_counter()
        for line in process.stdout:
            states += 1
            last_state = json.loads(line)
            if pending and states == pending[0]:
                point = pending.pop(0)
                now = current_memory(process.pid)
                rss[point] = now["VmRSS"]
                elapsed = time.perf_counter() - segment_started
                print(
                    f"checkpoint: flushes={point} rss_mib={rss[point]:.1f} "
                    f"anon_mib={now.get('RssAnon', 0):.1f} file_mib={now.get('RssFile', 0):.1f} "
                    f"threads={now.get('Threads', 0):.0f} segment_s={elapsed:.1f}",
                    flush=True,
                )
                segment_started = time.perf_counter()
                feeder.resume()
        process.stdout.close()
        if pending:
            feeder.abort()
        feeder.join()
        result = benchlib.wait_child(process, started, watcher)
    benchlib.fail_unless_ok("target-parquet-parts", result, stderr_path)
    check_states(flushes, per_flush, states, last_state)
    if output == "s3":
        rows, parts = object_storage.s3_check(env or {}, "flushes")
        check_written(rows, parts, flushes, per_flush)
    elif output == "iceberg":
        check_iceberg(output_dir, flushes, per_flush)
    else:
        check(output_dir, flushes, per_flush)
    benchlib.print_run("target", flushes * per_flush, result, flushes=flushes)
    return rss


def check_states(flushes: int, per_flush: int, states: int, last: object) -> None:
    """One STATE per flush, the last one the last sent; stop loudly if not."""
    expected_last = json.loads(benchlib.state_line(flushes * per_flush - 1))["value"]
    if states != flushes or last != expected_last:
        msg = f"{states} STATE lines (last {last}), expected {flushes} ({expected_last})"
        raise SystemExit(msg)
    print(f"checked: states={states}", flush=True)


def check_written(rows: int, parts: int, flushes: int, per_flush: int) -> None:
    """One part per flush and every record sent a row; stop loudly if not."""
    if parts != flushes:
        raise SystemExit(f"{parts} parts written, expected one per flush ({flushes})")
    if rows != flushes * per_flush:
        raise SystemExit(f"target-parquet-parts wrote {rows} rows, expected {flushes * per_flush}")
    print(f"checked: parts={parts} rows={rows}", flush=True)


def check(output_dir: Path, flushes: int, per_flush: int) -> None:
    """Local parts: one per flush, every record sent a row."""
    parts = list((output_dir / benchlib.STREAM).rglob("*.parquet"))
    rows = ds.dataset(parts, format="parquet").count_rows() if parts else 0
    check_written(rows, len(parts), flushes, per_flush)


def check_iceberg(output_dir: Path, flushes: int, per_flush: int) -> None:
    """The table: one data file per flush (one commit each), every record sent a row; and how
    many snapshots the table kept (all of them, or fewer with a retention)."""
    from target_parquet_parts.iceberg import load_iceberg_catalog
    from target_parquet_parts.settings import TargetSettings

    catalog = load_iceberg_catalog(TargetSettings(output_dir=str(output_dir)))
    try:
        table = catalog.load_table(("singer", benchlib.STREAM))
        rows = table.scan().to_arrow().num_rows
        data_files = sum(1 for _ in table.scan().plan_files())
        snapshots = len(table.snapshots())
        manifests = len(table.current_snapshot().manifests(table.io))
    finally:
        catalog.close()
    check_written(rows, data_files, flushes, per_flush)
    print(f"table: snapshots_kept={snapshots} manifests={manifests}", flush=True)


def main() -> None:
    """Run the target through the checkpoints; print RSS at each and the last over the first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--flushes", type=int, help="flushes in the run (100000; quick: 1000)")
    parser.add_argument("--early", type=int, help="the first checkpoint (1000; quick: 100)")
    parser.add_argument("--records-per-flush", type=int, default=1, help="records per STATE (1)")
    parser.add_argument("--target-command", help="default: the venv's target-parquet-parts")
    parser.add_argument(
        "--output", choices=["parts", "s3", "iceberg"], default="parts", help="parts (local)"
    )
    parser.add_argument(
        "--retention-hours",
        type=float,
        help="iceberg: the target's iceberg_snapshot_retention_hours (default: unset, all kept)",
    )
    benchlib.add_env_argument(parser)
    args = parser.parse_args()
    benchlib.configure_env(args)
    flushes = args.flushes or (1_000 if args.quick else 100_000)
    early = args.early or (100 if args.quick else 1_000)
    if not 0 < early < flushes or args.records_per_flush < 1:
        parser.error("need 0 < --early < --flushes and --records-per-flush >= 1")
    command = (
        shlex.split(args.target_command)
        if args.target_command
        else [benchlib.venv_bin("target-parquet-parts")]
    )
    points = checkpoints(early, flushes)
    benchlib.print_header(
        "memory_flushes",
        {
            "early": early,
            "flushes": flushes,
            "records_per_flush": args.records_per_flush,
            "state_max_lag_seconds": 0,
            "input": "pipe",
            "output": args.output,
            "retention_hours": args.retention_hours,
        },
    )
    with tempfile.TemporaryDirectory(prefix="bench-flushes-") as tmp:
        if args.output == "s3":
            with object_storage.moto_server(Path(tmp)) as env:
                object_storage.make_bucket(env)
                rss = run(command, Path(tmp), points, args.records_per_flush, output="s3", env=env)
        else:
            rss = run(
                command,
                Path(tmp),
                points,
                args.records_per_flush,
                output=args.output,
                retention_hours=args.retention_hours,
            )
    growth_kib = (rss[flushes] - rss[early]) * 1024 / (flushes - early)
    print(
        f"rss: at_{early}_mib={rss[early]:.1f} at_{flushes}_mib={rss[flushes]:.1f} "
        f"growth_kib_per_flush={growth_kib:.2f}",
        flush=True,
    )
    ratio = rss[flushes] / rss[early]
    name = "rss_100k_over_1k" if args.output == "parts" else f"rss_last_over_first_{args.output}"
    benchlib.print_ratio(name, ratio, f"<={GOAL}", ratio <= GOAL)


if __name__ == "__main__":
    main()
