"""Tap wall time with realistic latency, against its lower bound and a plain sequential client.

The emulator (in this process) makes every query, and every Next page (``next_is_async``), ready
only ``ready_after_seconds`` after it starts, and every request takes ``request_latency_ms``.
8 logs x 1 hour, with enough events per log that each needs several pages.

Lower bound, computed from those parameters: a page cannot arrive sooner than R + L after the
request that starts it (R = ready_after_seconds, L = latency: the start answers after L, the
query becomes ready R after that, and the poll that fetches the page takes L, which it can spend
while the query is still running). A log is a chain of ``pages`` such steps, so

* ``chain(log) = pages(log) * (R + L)``; the lower bound is the longest chain;
* with k queries in flight at most, it is also at least ``sum(chains) / k``;
* with Rapid7's budgets (per window W: ``query_budget`` Q query starts, ``poll_budget`` P polls;
  every page is one query start and at least one poll), ``ceil(pages / Q) - 1`` and
  ``ceil(pages / P) - 1`` whole windows must pass, whichever binds. This one is approximate:
  the emulator's windows are fixed (aligned to multiples of W) and shared by the runs, so a run
  that starts late in a window with budget left can beat it by up to one window.

Measured: ``tap-rapid7`` with the default ``max_concurrent_queries`` (4), with 1, and with one
query per log (8), each from its first API request to its exit (its interpreter start-up is
shown separately), and a plain sequential client in the style of Rapid7's own (poll every 1 s,
log after log: raw_logsearch_client.py). Every run's event count is checked against the
emulator's ground truth.
Goal: tap (default settings) <= 1.3 x the lower bound. With 8 logs and 4 queries in flight the
bound at that concurrency (sum of chains / 4) is printed too: it is what the default can reach.

Run: ``.venv/bin/python benchmarks/tap_wall.py [--quick] [--latency-ms 30] [--ready-after 1]``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import benchlib
import raw_logsearch_client
from tap_cpu import fixed_window, tap_config

from tap_rapid7.emulator import EmulatorOptions, RunningEmulator, running_emulator

GOAL = 1.3


@dataclass
class Bounds:
    """The lower bounds of one configuration, in seconds."""

    longest_chain: float
    total_chains: float
    rate_limit: float
    requests: int

    def at_concurrency(self, k: int) -> float:
        """Lower bound when at most ``k`` queries are in flight."""
        return max(self.longest_chain, self.total_chains / k, self.rate_limit)

    @property
    def unbounded(self) -> float:
        """Lower bound with any number of queries in flight."""
        return max(self.longest_chain, self.rate_limit)


def lower_bounds(pages: list[int], options: EmulatorOptions) -> Bounds:
    """The bounds described in the module docstring, from the pages each log needs."""
    step = options.ready_after_seconds + options.request_latency_ms / 1000
    chains = [count * step for count in pages]
    requests = 2 * sum(pages)  # per page: one query start and at least one poll
    windows = 0
    for family in ("query", "poll"):
        budget = options.budget_for(family)
        if budget:  # None: unlimited (0 would never finish: no bound to compute)
            windows = max(windows, math.ceil(sum(pages) / budget) - 1)
    return Bounds(max(chains), sum(chains), windows * options.budget_window_seconds, requests)


class FirstRequestClock:
    """Notes when the emulator receives its first API request after ``arm()``."""

    def __init__(self, emulator: RunningEmulator) -> None:
        self.at: float | None = None
        self._armed = False
        original = emulator.app.handle

        def handle(*args: Any, **kwargs: Any) -> Any:
            if self._armed and self.at is None:
                self.at = time.perf_counter()
            return original(*args, **kwargs)

        emulator.app.handle = handle  # type: ignore[method-assign]

    def arm(self) -> None:
        """Start watching for the next first request."""
        self.at, self._armed = None, True


def count_records(stream: IO[bytes], counts: dict[str, int]) -> None:
    """Count RECORD lines of the events stream (runs on a thread reading the tap's stdout)."""
    for line in stream:
        if line.startswith(b'{"type":"RECORD"') and b'"stream":"events"' in line[:40]:
            counts["events"] += 1


def run_tap(
    emulator: RunningEmulator,
    clock: FirstRequestClock,
    config: dict[str, Any],
    workdir: Path,
    name: str,
) -> tuple[float, float, int]:
    """Run the tap; return (seconds from first request to exit, start-up seconds, events)."""
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(config))
    stderr_path = workdir / f"{name}.stderr"
    counts = {"events": 0}
    clock.arm()
    started = time.perf_counter()
    with stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [benchlib.venv_bin("tap-rapid7"), "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=benchlib.CHILD_ENV,
        )
        reader = threading.Thread(target=count_records, args=(process.stdout, counts))
        reader.start()
        result = benchlib.wait_child(process, started)
        reader.join()
    benchlib.fail_unless_ok(f"tap-rapid7 ({name})", result, stderr_path)
    if clock.at is None:
        raise SystemExit(f"tap-rapid7 ({name}) sent no request")
    ended = started + result.wall_seconds
    return ended - clock.at, clock.at - started, counts["events"]


def main() -> None:
    """Run the three clients, print their times, the bounds and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--logs", type=int, help="logs (default 8)")
    parser.add_argument("--events-per-second", type=float, help="per log (default 0.2)")
    parser.add_argument("--latency-ms", type=float, help="per request (default 30)")
    parser.add_argument("--ready-after", type=float, help="seconds per query (default 1.0)")
    defaults = EmulatorOptions()
    parser.add_argument(
        "--query-budget", type=int, default=defaults.query_budget, help="query starts per window"
    )
    parser.add_argument(
        "--poll-budget", type=int, default=defaults.poll_budget, help="polls per window"
    )
    parser.add_argument(
        "--budget-window", type=float, default=defaults.budget_window_seconds, help="seconds"
    )
    parser.add_argument(
        "--no-budgets", action="store_true", help="no budgets at all (the emulator's budgets=False)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="the tap's default, for bounds")
    benchlib.add_env_argument(parser)
    args = parser.parse_args()
    benchlib.configure_env(args)
    options = EmulatorOptions(
        seed=5,
        log_count=args.logs or (2 if args.quick else 8),
        events_per_second=args.events_per_second or (0.3 if args.quick else 0.2),
        polls_before_ready=0,
        ready_after_seconds=args.ready_after or 1.0,
        request_latency_ms=args.latency_ms if args.latency_ms is not None else 30.0,
        next_is_async=True,
        budgets=not args.no_budgets,
        query_budget=args.query_budget,
        poll_budget=args.poll_budget,
        budget_window_seconds=args.budget_window,
    )
    window_seconds = 600 if args.quick else 3600
    with (
        running_emulator(options, port=0) as emulator,
        tempfile.TemporaryDirectory() as tmp,
    ):
        workdir = Path(tmp)
        log_ids = emulator.log_ids
        window = fixed_window(window_seconds)
        per_log = [len(emulator.truth(*window, log_id)) for log_id in log_ids]
        pages = [max(1, math.ceil(count / 500)) for count in per_log]
        expected = sum(per_log)
        bounds = lower_bounds(pages, options)
        benchlib.print_header(
            "tap_wall",
            {
                "logs": len(log_ids),
                "window_s": window_seconds,
                "events": expected,
                "pages_per_log": ",".join(map(str, pages)),
                "ready_after_s": options.ready_after_seconds,
                "latency_ms": options.request_latency_ms,
                "query_budget": options.budget_for("query"),
                "poll_budget": options.budget_for("poll"),
                "budget_window_s": options.budget_window_seconds,
            },
        )
        print(
            f"lower_bound: longest_chain_s={bounds.longest_chain:.2f} "
            f"sum_of_chains_s={bounds.total_chains:.2f} rate_limit_s={bounds.rate_limit:.0f} "
            f"min_requests={bounds.requests} "
            f"at_k{args.concurrency}_s={bounds.at_concurrency(args.concurrency):.2f}",
            flush=True,
        )
        clock = FirstRequestClock(emulator)
        results: dict[str, float] = {}
        runs: list[tuple[str, dict[str, Any]]] = [
            ("tap_default", {}),
            ("tap_k1", {"max_concurrent_queries": 1}),
            (f"tap_k{len(log_ids)}", {"max_concurrent_queries": len(log_ids)}),
        ]
        for name, extra in runs:
            config = tap_config(emulator, log_ids, window, **extra)
            sync_seconds, startup, events = run_tap(emulator, clock, config, workdir, name)
            if events != expected:
                raise SystemExit(f"{name} emitted {events} events, the window has {expected}")
            results[name] = sync_seconds
            print(
                f"{name}: events={events} sync_wall_s={sync_seconds:.2f} startup_s={startup:.2f}",
                flush=True,
            )
        started = time.perf_counter()
        pulled = raw_logsearch_client.pull(
            base_url=emulator.base_url,
            api_key=emulator.api_key,
            log_ids=log_ids,
            from_ms=window[0],
            to_ms=window[1],
            poll_interval=1.0,
        )
        sequential = time.perf_counter() - started
        if pulled.events != expected:
            raise SystemExit(f"sequential client got {pulled.events} events, expected {expected}")
        print(
            f"sequential_client: events={pulled.events} wall_s={sequential:.2f} "
            f"pages={pulled.pages} requests={pulled.requests}",
            flush=True,
        )
    k = args.concurrency
    at_k = results["tap_default"] / bounds.at_concurrency(k)
    print(f"context: tap_default/bound_at_k{k}={at_k:.3f}")
    print(f"context: tap_k1/sum_of_chains={results['tap_k1'] / bounds.at_concurrency(1):.3f}")
    print(f"context: sequential_client/tap_default={sequential / results['tap_default']:.2f}x")
    print(f"context: sequential_client/lower_bound={sequential / bounds.unbounded:.2f}x")
    per_log = f"tap_k{len(log_ids)}"
    ratio = results[per_log] / bounds.unbounded
    benchlib.print_ratio(f"{per_log}_over_lower_bound", ratio, f"<={GOAL}", ratio <= GOAL)
    benchlib.print_ratio(f"tap_default_over_bound_at_k{k}", at_k, f"<={GOAL}", at_k <= GOAL)
    ratio = results["tap_default"] / bounds.unbounded
    benchlib.print_ratio("tap_over_lower_bound", ratio, f"<={GOAL}", ratio <= GOAL)


if __name__ == "__main__":
    main()
