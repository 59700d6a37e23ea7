"""Tap CPU path: tap-rapid7 against the emulator with no waits, vs a plain requests + msgspec loop.

The emulator (in this process, on its own thread) answers every query at once: no polls, no
latency, Next links not asynchronous. Both clients pull the same window of the same log with the
same page size, each as its own process writing to /dev/null:

* the product: ``tap-rapid7 --config C > /dev/null``;
* the baseline: ``raw_logsearch_client.py`` (requests + msgspec, follows Next, one JSON line per
  event).

Both pulls are checked against the emulator's ground truth (events served == events in the
window). Printed: events/s by wall time and events per CPU second of each client process. The
goal ratio is the CPU one (tap / raw >= 0.3): the emulator shares the machine, so the wall rate
of the fast baseline partly measures the emulator, while CPU seconds are each client's own.

Run: ``.venv/bin/python benchmarks/tap_cpu.py [--quick] [--events-per-second E] [--profile]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib

from logsearch_emulator import EmulatorOptions, RunningEmulator, running_emulator

HERE = Path(__file__).resolve().parent
GOAL = 0.3


def iso(millis: int) -> str:
    """Epoch ms as an ISO 8601 UTC string (what the tap's date settings take)."""
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def no_wait_options(*, seed: int, log_count: int, events_per_second: float) -> EmulatorOptions:
    """An emulator that answers every query at once: only the clients' CPU is measured."""
    return EmulatorOptions(
        seed=seed,
        log_count=log_count,
        events_per_second=events_per_second,
        polls_before_ready=0,
        ready_after_seconds=0.0,
        request_latency_ms=0.0,
        next_is_async=False,
    )


def fixed_window(seconds: int) -> tuple[int, int]:
    """A window of ``seconds`` at a fixed past date: the emulator's data there never changes."""
    return benchlib.BASE_MILLIS, benchlib.BASE_MILLIS + seconds * 1000


def tap_config(
    emulator: RunningEmulator, log_ids: list[str], window: tuple[int, int], **extra: Any
) -> dict[str, Any]:
    """tap-rapid7 settings (`tap-rapid7 --about`) for one window of the emulator's logs."""
    return {
        "api_key": emulator.api_key,
        "base_url": emulator.base_url,
        "log_ids": log_ids,
        "start_date": iso(window[0]),
        "end_date": iso(window[1]),
        "per_page": 500,
        **extra,
    }


def events_served(emulator: RunningEmulator) -> int:
    """Events the emulator has put on pages so far."""
    return int(emulator.stats()["requests"].get("events_served", 0))


TAP_COMMAND: list[str] = []  # set by --tap-command; empty: the venv's tap-rapid7


def run_tap(
    emulator: RunningEmulator, config: dict[str, Any], workdir: Path, name: str, profile: bool
) -> tuple[benchlib.ChildResult, int]:
    """Run tap-rapid7 to /dev/null; return its measurements and the events it was served."""
    config_path = workdir / f"{name}-config.json"
    config_path.write_text(json.dumps(config))
    command = TAP_COMMAND or [benchlib.venv_bin("tap-rapid7")]
    argv = [*command, "--config", str(config_path)]
    if profile:
        argv = benchlib.profiled(argv, workdir / f"{name}.prof")
    stderr_path = workdir / f"{name}.stderr"
    before = events_served(emulator)
    with stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=subprocess.DEVNULL, stderr=err)
    benchlib.fail_unless_ok("tap-rapid7", result, stderr_path)
    return result, events_served(emulator) - before


def run_raw(
    emulator: RunningEmulator, log_ids: list[str], window: tuple[int, int], workdir: Path
) -> tuple[benchlib.ChildResult, int]:
    """Run the raw requests + msgspec loop to /dev/null; return measurements and events."""
    argv = [sys.executable, str(HERE / "raw_logsearch_client.py"), "--base-url", emulator.base_url]
    argv += ["--api-key", emulator.api_key, "--from-ms", str(window[0]), "--to-ms", str(window[1])]
    argv += ["--per-page", "500", "--poll-interval", "0"]
    for log_id in log_ids:
        argv += ["--log-id", log_id]
    stderr_path = workdir / "raw.stderr"
    before = events_served(emulator)
    with stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=subprocess.DEVNULL, stderr=err)
    benchlib.fail_unless_ok("raw client", result, stderr_path)
    return result, events_served(emulator) - before


def main() -> None:
    """Measure both clients on the same window and print their rates and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--events-per-second", type=float, help="per log (default 50)")
    parser.add_argument("--logs", type=int, default=1, help="logs pulled (default 1)")
    parser.add_argument("--window-seconds", type=int, help="window length (default 3600)")
    parser.add_argument(
        "--profile", action="store_true", help="one more tap run, one query at a time, profiled"
    )
    parser.add_argument(
        "--tap-command", help="the tap to measure (default: the venv's tap-rapid7), for A/B runs"
    )
    benchlib.add_env_argument(parser)
    args = parser.parse_args()
    if args.tap_command:
        TAP_COMMAND[:] = shlex.split(args.tap_command)
    benchlib.configure_env(args)
    eps = args.events_per_second or (2.0 if args.quick else 50.0)
    window_seconds = args.window_seconds or (600 if args.quick else 3600)
    options = no_wait_options(seed=11, log_count=args.logs, events_per_second=eps)
    with running_emulator(options, port=0) as emulator, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        log_ids = emulator.log_ids
        window = fixed_window(window_seconds)
        expected = len(emulator.truth(*window))  # also warms the emulator's data cache
        benchlib.print_header(
            "tap_cpu",
            {
                "logs": len(log_ids),
                "window_s": window_seconds,
                "events": expected,
                "per_page": 500,
                "emulator": "no waits",
            },
        )
        raw, raw_events = run_raw(emulator, log_ids, window, workdir)
        tap, tap_events = run_tap(
            emulator, tap_config(emulator, log_ids, window), workdir, "tap", profile=False
        )
        for name, served in (("raw client", raw_events), ("tap-rapid7", tap_events)):
            if served != expected:
                raise SystemExit(f"{name} was served {served} events, the window has {expected}")
        benchlib.print_run("raw_client", expected, raw, unit="events")
        benchlib.print_run("tap", expected, tap, unit="events")
        raw_cpu_rate = benchlib.rate(expected, raw.cpu_seconds)
        tap_cpu_rate = benchlib.rate(expected, tap.cpu_seconds)
        print(
            f"events_per_cpu_s: raw_client={raw_cpu_rate:.0f} tap={tap_cpu_rate:.0f}",
            flush=True,
        )
        wall_ratio = raw.wall_seconds / tap.wall_seconds
        print(f"context: tap/raw by wall events/s={wall_ratio:.3f}")
        ratio = tap_cpu_rate / raw_cpu_rate
        benchlib.print_ratio("tap_over_raw_cpu", ratio, f">={GOAL}", ratio >= GOAL)
        if args.profile:
            # One query at a time, so the whole CPU path runs on the main thread, the only one
            # cProfile sees (with worker threads it would show the main thread waiting).
            config = tap_config(emulator, log_ids, window, max_concurrent_queries=1)
            run_tap(emulator, config, workdir, "profiled", profile=True)
            benchlib.print_profile(workdir / "profiled.prof")


if __name__ == "__main__":
    main()
