"""The whole pipeline, tap-rapid7 | target-parquet-parts, against the sum of its parts.

The emulator (in this process) answers at once (no polls, no latency), so the run is CPU-bound.
Measured, each as processes:

1. ``tap-rapid7 > FILE`` once (records the tap's output for step 3; shown, not in the ratio);
2. ``tap-rapid7 > /dev/null`` (the tap alone);
3. ``target-parquet-parts --input FILE`` (the target alone);
4. ``tap-rapid7 | target-parquet-parts`` (the pipeline, wall time until both have exited).

Steps 2-4 are repeated (``--repeat``, default 3) and the best time of each counts.

The emulator runs in this process, so the pipe has three CPU consumers: on two cores (shared
with anything else running) they contend, while each part measured alone had a core to itself;
the pipeline line shows each one's CPU seconds. Rows written in steps 3 and 4 are checked
against the emulator's ground truth. Goal: the pipe costs no more than running the parts one
after the other, pipeline / (tap + target) <= 1.0; with a free core per process it would
approach max(tap, target) / (tap + target).

Run: ``.venv/bin/python benchmarks/pipeline.py [--quick] [--events-per-second E]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import benchlib
import pyarrow.parquet as pq
from tap_cpu import events_served, fixed_window, no_wait_options, tap_config

from logsearch_emulator import running_emulator

GOAL = 1.0


def event_rows(output_dir: Path) -> int:
    """Rows in the complete parts of the events stream under ``output_dir``."""
    parts = (output_dir / "events").rglob("*.parquet")
    return sum(pq.ParquetFile(part).metadata.num_rows for part in parts)


def main() -> None:
    """Run the four measurements and print the ratio of the pipe to the sum of its parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--events-per-second", type=float, help="per log (default 30)")
    parser.add_argument("--window-seconds", type=int, help="window length (default 3600)")
    parser.add_argument("--repeat", type=int, help="runs of each, best counts (3; quick: 1)")
    benchlib.add_env_argument(parser)
    args = parser.parse_args()
    benchlib.configure_env(args)
    args.repeat = args.repeat or (1 if args.quick else 3)
    eps = args.events_per_second or (2.0 if args.quick else 30.0)
    window_seconds = args.window_seconds or (600 if args.quick else 3600)
    options = no_wait_options(seed=13, log_count=1, events_per_second=eps)
    with running_emulator(options, port=0) as emulator, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        window = fixed_window(window_seconds)
        expected = len(emulator.truth(*window))  # also warms the emulator's data cache
        benchlib.print_header(
            "pipeline",
            {"logs": 1, "window_s": window_seconds, "events": expected, "emulator": "no waits"},
        )
        tap_config_path = workdir / "tap.json"
        tap_config_path.write_text(json.dumps(tap_config(emulator, emulator.log_ids, window)))
        tap_argv = [benchlib.venv_bin("tap-rapid7"), "--config", str(tap_config_path)]

        def target_argv(name: str) -> list[str]:
            config = workdir / f"{name}-target.json"
            config.write_text(json.dumps({"output_dir": str(workdir / name)}))
            return [benchlib.venv_bin("target-parquet-parts"), "--config", str(config)]

        def served_since(before: int, name: str) -> None:
            served = events_served(emulator) - before
            if served != expected:
                raise SystemExit(f"{name}: tap was served {served} events, expected {expected}")

        def tap_alone(attempt: int) -> benchlib.ChildResult:
            stderr_path = workdir / f"tap-alone-{attempt}.stderr"
            before = events_served(emulator)
            with stderr_path.open("wb") as err:
                result = benchlib.run_child(tap_argv, stdout=subprocess.DEVNULL, stderr=err)
            benchlib.fail_unless_ok("tap-rapid7", result, stderr_path)
            served_since(before, "tap alone")
            benchlib.print_run("tap_alone", expected, result, unit="events")
            return result

        def target_alone(attempt: int, recorded: Path) -> benchlib.ChildResult:
            name = f"target-alone-{attempt}"
            stderr_path = workdir / f"{name}.stderr"
            with stderr_path.open("wb") as err:
                result = benchlib.run_child(
                    [*target_argv(name), "--input", str(recorded)],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            benchlib.fail_unless_ok("target-parquet-parts", result, stderr_path)
            if (rows := event_rows(workdir / name)) != expected:
                raise SystemExit(f"target alone wrote {rows} rows, expected {expected}")
            benchlib.print_run("target_alone", expected, result)
            return result

        def pipe(attempt: int) -> float:
            name = f"pipeline-{attempt}"
            tap_stderr, target_stderr = workdir / f"{name}-tap.err", workdir / f"{name}-target.err"
            before = events_served(emulator)
            emulator_cpu = time.process_time()  # this process is the emulator
            started = time.perf_counter()
            with tap_stderr.open("wb") as tap_err, target_stderr.open("wb") as target_err:
                tap = subprocess.Popen(
                    tap_argv, stdout=subprocess.PIPE, stderr=tap_err, env=benchlib.CHILD_ENV
                )
                target = subprocess.Popen(
                    target_argv(name),
                    stdin=tap.stdout,
                    stdout=subprocess.DEVNULL,
                    stderr=target_err,
                    env=benchlib.CHILD_ENV,
                )
                assert tap.stdout is not None
                tap.stdout.close()  # the target holds the read end now
                tap_result = benchlib.wait_child(tap, started)
                target_result = benchlib.wait_child(target, started)
            seconds = time.perf_counter() - started
            emulator_cpu = time.process_time() - emulator_cpu
            benchlib.fail_unless_ok("tap-rapid7 (pipe)", tap_result, tap_stderr)
            benchlib.fail_unless_ok("target-parquet-parts (pipe)", target_result, target_stderr)
            served_since(before, "pipeline")
            if (rows := event_rows(workdir / name)) != expected:
                raise SystemExit(f"pipeline wrote {rows} rows, expected {expected}")
            print(
                f"pipeline: events={expected} wall_s={seconds:.2f} "
                f"tap_cpu_s={tap_result.cpu_seconds:.2f} "
                f"target_cpu_s={target_result.cpu_seconds:.2f} "
                f"emulator_cpu_s={emulator_cpu:.2f} "
                f"events_per_s={benchlib.rate(expected, seconds):.0f}",
                flush=True,
            )
            return seconds

        # Record the tap's output once, for the target-alone runs.
        recorded = workdir / "tap-output.jsonl"
        before = events_served(emulator)
        with recorded.open("wb") as out, (workdir / "tap-record.stderr").open("wb") as err:
            tap_record = benchlib.run_child(tap_argv, stdout=out, stderr=err)
        benchlib.fail_unless_ok("tap-rapid7", tap_record, workdir / "tap-record.stderr")
        served_since(before, "tap recording")
        benchlib.print_run("tap_to_file", expected, tap_record, unit="events")

        taps, targets, pipes = [], [], []
        for attempt in range(args.repeat):  # alternate, keep the best: the machine is shared
            taps.append(tap_alone(attempt).wall_seconds)
            targets.append(target_alone(attempt, recorded).wall_seconds)
            pipes.append(pipe(attempt))
    parts_sum = min(taps) + min(targets)
    parts_max = max(min(taps), min(targets))
    pipe_seconds = min(pipes)
    print(
        f"best of {args.repeat}: tap_alone_s={min(taps):.2f} target_alone_s={min(targets):.2f} "
        f"pipeline_s={pipe_seconds:.2f}"
    )
    print(f"context: sum_of_parts_s={parts_sum:.2f} slowest_part_s={parts_max:.2f}")
    print(f"context: pipeline/slowest_part={pipe_seconds / parts_max:.3f}")
    ratio = pipe_seconds / parts_sum
    benchlib.print_ratio("pipeline_over_sum_of_parts", ratio, f"<={GOAL}", ratio <= GOAL)


if __name__ == "__main__":
    main()
