"""Tap against Rapid7's query budget: queries spent, 429s, and wall time at the budget's rate.

Against Rapid7 the scarce resource is the per-user budget (``rapid7-logsearch-api.md`` §11):
1,500 queries and 10,000 polls per 15 minutes, every ``Next`` page a new query, at most 500
events a page, Self links dead after 20 s without a poll. The emulator (in this process) models
all of it; three measurements, each a ratio within one run:

1. **dense**: a few logs with tens of thousands of events each over a fixed past window, the
   published model scaled down in time (budget window 3 s, 30 queries / 200 polls / 30
   management requests per window: the published ratios; Self links die after 2 s; queries
   ready after 1 poll), the tap configured to match (``budget_window_seconds``,
   ``link_lifetime_seconds``, fast polling). ``tap-rapid7`` runs as a process (stdout counted,
   checked against the emulator's ground truth). Ratios: queries the emulator started over the
   fewest possible (per log, ceil(events / 500)), goal <= 1.05; 429s, goal 0; the tap's wall
   time from its first request to its exit (interpreter start-up excluded, printed apart) over
   the fewest queries / allowed query rate (``query_budget / budget_window_seconds``), goal
   <= 1.2. The tap's ``logsearch_budget_summary`` line is printed and checked against the
   emulator's own counts per family.
2. **quiet**: hundreds of logs with a few events an hour each; one incremental sync (from the
   STATE of a first sync) over one hour, at the published budget. Ratio: queries of that sync
   per log, goal <= 0.2 (one query per log would be 1.0).
3. **backfill plan**: 50 logs x 13 months (396 days), rates log-uniform in [0.05, 20] events/s
   (seeded). The hours the tap's plan (``pipeline_tools.capacity.plan_queries`` with the tap's
   default ``window_seconds`` and ``logs_per_query``) needs at the published budget less its 5%
   reserve, over the hours the fewest queries (every page full) need at the full budget. Goal
   <= 1.1. The same cost model's prediction for the dense run is printed next to what the
   emulator counted.

Run: ``.venv/bin/python benchmarks/tap_budget.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import benchlib
from tap_cpu import fixed_window, tap_config

from logsearch_emulator import EmulatorOptions, RunningEmulator, running_emulator
from pipeline_tools.capacity import (
    EVENTS_PER_PAGE,
    PUBLISHED_QUERY_BUDGET,
    PUBLISHED_WINDOW_SECONDS,
    budget_hours,
    ideal_queries,
    plan_queries,
)

QUERIES_GOAL = 1.05
WALL_GOAL = 1.2
QUIET_GOAL = 0.2
BACKFILL_GOAL = 1.1

# Rapid7's published budgets per 15 minutes (§11); a scaled-down model keeps their ratios.
PUBLISHED_POLL_BUDGET = 10_000
PUBLISHED_MANAGEMENT_BUDGET = 1_500
TAP_WINDOW_SECONDS = 86_400  # the tap's defaults, what the cost model is asked about
TAP_LOGS_PER_QUERY = 20
TAP_RESERVE_SHARE = 0.05
FAMILIES = ("query", "poll", "management")

SUMMARY_EVENT = "logsearch_budget_summary"
_FIELD = re.compile(r"(\w+)=(\S+)")


def parse_summary(text: str) -> dict[str, str]:
    """The fields of the last ``logsearch_budget_summary`` line in the tap's stderr."""
    lines = [line for line in text.splitlines() if SUMMARY_EVENT + " " in line]
    if not lines:
        raise SystemExit(f"tap-rapid7 logged no {SUMMARY_EVENT} line")
    line = lines[-1]
    return dict(_FIELD.findall(line[line.index(SUMMARY_EVENT) :]))


def summary_line(summary: dict[str, str]) -> str:
    """The summary's figures worth printing, in a fixed order."""
    names = [
        *(f"{family}_{what}" for family in FAMILIES for what in ("requests", "rate_limited")),
        *(f"{family}_lowest_remaining" for family in FAMILIES),
        "restarts",
        "events",
        "events_per_query",
        "elapsed_seconds",
    ]
    return " ".join(f"{name}={summary.get(name, '?')}" for name in names)


def fewest_queries(events_by_log: dict[str, int]) -> int:
    """Per log ceil(events / 500): every page full (an empty log still costs one query)."""
    return sum(max(1, math.ceil(events / EVENTS_PER_PAGE)) for events in events_by_log.values())


def scaled_budgets(query_budget: int) -> dict[str, int]:
    """Query, poll and management budgets in the published proportions (1,500 : 10,000 : 1,500)."""
    scale = query_budget / PUBLISHED_QUERY_BUDGET
    return {
        "query_budget": query_budget,
        "poll_budget": max(1, round(PUBLISHED_POLL_BUDGET * scale)),
        "management_budget": max(1, round(PUBLISHED_MANAGEMENT_BUDGET * scale)),
    }


def backfill_rates(logs: int, seed: int, low: float = 0.05, high: float = 20.0) -> list[float]:
    """Events per second per log, spread log-uniformly in [low, high] (seeded)."""
    rng = random.Random(seed)
    return [math.exp(rng.uniform(math.log(low), math.log(high))) for _ in range(logs)]


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


@dataclass
class TapRun:
    """One run of tap-rapid7: what it emitted, how long it took, what it says it spent."""

    events: int
    sync_seconds: float  # from its first API request to its exit
    startup_seconds: float  # from exec to its first API request
    summary: dict[str, str]
    state: dict[str, Any] | None
    emulator: dict[str, Any] = field(default_factory=dict)  # stats delta over the run


def _read_stdout(stream: IO[bytes], out: dict[str, Any]) -> None:
    for line in stream:
        if line.startswith(b'{"type":"RECORD"'):
            if b'"stream":"events"' in line[:40]:
                out["events"] += 1
        elif line.startswith(b'{"type":"STATE"'):
            out["state"] = line


def _stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Counters of the emulator over one run (the run's own requests only)."""
    delta: dict[str, Any] = {
        "requests": {
            key: value - before["requests"].get(key, 0)
            for key, value in after["requests"].items()
            if isinstance(value, int)
        },
        "budgets": {},
    }
    for family in FAMILIES:
        seen, now = before["budgets"][family], after["budgets"][family]
        delta["budgets"][family] = {
            "requests": now["requests"] - seen["requests"],
            "rate_limited": now["rate_limited"] - seen["rate_limited"],
            "forced_429": now["forced_429"] - seen["forced_429"],
            "min_remaining": now["min_remaining"],
        }
    delta["expired_links"] = after["faults"]["expired_links"] - before["faults"]["expired_links"]
    return delta


def run_tap(
    emulator: RunningEmulator,
    clock: FirstRequestClock,
    config: dict[str, Any],
    workdir: Path,
    name: str,
    *,
    state: dict[str, Any] | None = None,
) -> TapRun:
    """Run the installed tap-rapid7 (stdout counted, then dropped) and measure it."""
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(config))
    argv = [benchlib.venv_bin("tap-rapid7"), "--config", str(config_path)]
    if state is not None:
        state_path = workdir / f"{name}-state.json"
        state_path.write_text(json.dumps(state))
        argv += ["--state", str(state_path)]
    stderr_path = workdir / f"{name}.stderr"
    out: dict[str, Any] = {"events": 0, "state": None}
    before = emulator.stats()
    clock.arm()
    started = time.perf_counter()
    with stderr_path.open("wb") as err:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=benchlib.CHILD_ENV)
        reader = threading.Thread(target=_read_stdout, args=(process.stdout, out))
        reader.start()
        result = benchlib.wait_child(process, started)
        reader.join()
    benchlib.fail_unless_ok(f"tap-rapid7 ({name})", result, stderr_path)
    if clock.at is None:
        raise SystemExit(f"tap-rapid7 ({name}) sent no request")
    last_state = json.loads(out["state"])["value"] if out["state"] else None
    return TapRun(
        events=out["events"],
        sync_seconds=started + result.wall_seconds - clock.at,
        startup_seconds=clock.at - started,
        summary=parse_summary(stderr_path.read_text(errors="replace")),
        state=last_state,
        emulator=_stats_delta(before, emulator.stats()),
    )


def check_events(name: str, run: TapRun, expected: int) -> None:
    """Stop loudly unless the tap emitted exactly the window's events."""
    if run.events != expected:
        raise SystemExit(f"{name}: tap emitted {run.events} events, the window has {expected}")


def check_summary_against_emulator(name: str, run: TapRun) -> list[str]:
    """Compare the tap's own counts with the emulator's, family by family; return mismatches.

    The tap's ``<family>_requests`` counts every request it sent of that family, 429'd or
    failed ones included; the emulator's ``requests.<family>_requests`` counts every request it
    received, and ``budgets.<family>.requests`` every one it answered (a 429 is an answer;
    dropped connections are not). With no injected faults the three agree, and the queries the
    emulator started are its answered query requests less the 429s.
    """
    problems = []
    emulator = run.emulator
    for family in FAMILIES:
        sent = int(run.summary.get(f"{family}_requests", -1))
        received = emulator["requests"].get(f"{family}_requests", 0)
        answered = emulator["budgets"][family]["requests"]
        tap_429 = int(run.summary.get(f"{family}_rate_limited", -1))
        emulator_429 = (
            emulator["budgets"][family]["rate_limited"] + emulator["budgets"][family]["forced_429"]
        )
        if not sent == received == answered:
            problems.append(f"{family}: tap sent {sent}, emulator received {received}, "
                            f"answered {answered}")  # fmt: skip
        if tap_429 != emulator_429:
            problems.append(f"{family}: tap saw {tap_429} 429s, emulator sent {emulator_429}")
    started = emulator["requests"].get("queries_started", 0)
    answered = emulator["budgets"]["query"]["requests"]
    limited = emulator["budgets"]["query"]["rate_limited"]
    if started != answered - limited:
        problems.append(f"queries started {started} != answered {answered} - 429s {limited}")
    print(
        f"{name}_emulator: "
        + " ".join(
            f"{family}_requests={emulator['budgets'][family]['requests']} "
            f"{family}_rate_limited={emulator['budgets'][family]['rate_limited']} "
            f"{family}_min_remaining={emulator['budgets'][family]['min_remaining']}"
            for family in FAMILIES
        )
        + f" queries_started={started} next_queries_started="
        f"{emulator['requests'].get('next_queries_started', 0)} "
        f"expired_links={emulator['expired_links']}",
        flush=True,
    )
    print(f"{name}_tap_summary: {summary_line(run.summary)}", flush=True)
    print(
        f"{name}_agree: tap <family>_requests == emulator received == answered, 429s equal, "
        f"queries_started == answered query requests - 429s: "
        + ("yes" if not problems else "NO: " + "; ".join(problems)),
        flush=True,
    )
    return problems


def dense(args: argparse.Namespace, workdir: Path) -> tuple[int, dict[str, int]]:
    """Measurement 1; returns (queries the emulator started, events per log)."""
    budgets = scaled_budgets(args.query_budget)
    options = EmulatorOptions(
        seed=13,
        log_count=args.dense_logs or (3 if args.quick else 4),
        events_per_second=args.dense_events_per_second or (3.0 if args.quick else 10.0),
        polls_before_ready=1,
        ready_after_seconds=0.0,
        next_is_async=True,
        link_ttl_seconds=args.link_ttl,
        budget_window_seconds=args.budget_window,
        cache_max_events=400_000,
        **budgets,
    )
    window_seconds = 1200 if args.quick else 3600
    query_rate = options.query_budget / options.budget_window_seconds
    with running_emulator(options, port=0) as emulator:
        log_ids = emulator.log_ids
        window = fixed_window(window_seconds)
        per_log = {log_id: len(emulator.truth(*window, log_id)) for log_id in log_ids}
        expected = sum(per_log.values())
        fewest = fewest_queries(per_log)
        bound = fewest / query_rate
        benchlib.print_header(
            "tap_budget dense",
            {
                "logs": len(log_ids),
                "window_s": window_seconds,
                "events": expected,
                "fewest_queries": fewest,
                **budgets,
                "budget_window_s": options.budget_window_seconds,
                "link_ttl_s": options.link_ttl_seconds,
                "polls_before_ready": options.polls_before_ready,
                "budget_bound_s": f"{bound:.2f}",
            },
        )
        clock = FirstRequestClock(emulator)
        config = tap_config(
            emulator,
            log_ids,
            window,
            budget_window_seconds=options.budget_window_seconds,
            link_lifetime_seconds=options.link_ttl_seconds,
            poll_interval_seconds=0.05,
            poll_interval_max_seconds=0.5,
        )
        run = run_tap(emulator, clock, config, workdir, "dense")
    check_events("dense", run, expected)
    started = run.emulator["requests"].get("queries_started", 0)
    problems = check_summary_against_emulator("dense", run)
    print(
        f"dense_tap: events={run.events} sync_wall_s={run.sync_seconds:.2f} "
        f"startup_s={run.startup_seconds:.2f} queries_started={started} fewest={fewest} "
        f"budget_bound_s={bound:.2f} (fewest / {query_rate:g} queries per s)",
        flush=True,
    )
    usable = options.query_budget - math.ceil(TAP_RESERVE_SHARE * options.query_budget)
    reserve_bound = fewest / usable * options.budget_window_seconds
    print(
        f"context: with the tap's {TAP_RESERVE_SHARE:.0%} reserve it may use {usable} of "
        f"{options.query_budget} queries a window: {reserve_bound:.2f} s "
        f"= {options.query_budget / usable:.3f} x the bound; fixed windows let a run use the rest "
        "of the window it starts in, so short runs can beat the bound",
        flush=True,
    )
    ratio = started / fewest
    benchlib.print_ratio("queries_over_fewest", ratio, f"<={QUERIES_GOAL}", ratio <= QUERIES_GOAL)
    limited = sum(run.emulator["budgets"][f]["rate_limited"] for f in FAMILIES)
    benchlib.print_ratio("http_429s", limited, "0", limited == 0)
    ratio = run.sync_seconds / bound
    benchlib.print_ratio("wall_over_budget_bound", ratio, f"<={WALL_GOAL}", ratio <= WALL_GOAL)
    if problems:
        raise SystemExit("dense: the tap's budget summary disagrees with the emulator")
    return started, per_log


def quiet(args: argparse.Namespace, workdir: Path) -> None:
    """Measurement 2: many quiet logs, one incremental sync over one hour."""
    options = EmulatorOptions(
        seed=17,
        log_count=args.quiet_logs or (60 if args.quick else 300),
        events_per_second=0.001,
        burst_probability=0.0,
        polls_before_ready=1,
    )
    hour = 3600
    with running_emulator(options, port=0) as emulator:
        log_ids = emulator.log_ids
        first = fixed_window(hour)
        second = (first[1], first[1] + hour * 1000)
        per_log = {log_id: len(emulator.truth(*second, log_id)) for log_id in log_ids}
        expected = sum(per_log.values())
        benchlib.print_header(
            "tap_budget quiet",
            {
                "logs": len(log_ids),
                "events_per_s_per_log": options.events_per_second,
                "incremental_window_s": hour,
                "events": expected,
                "logs_with_events": sum(1 for n in per_log.values() if n),
                "query_budget": options.query_budget,
                "budget_window_s": options.budget_window_seconds,
            },
        )
        clock = FirstRequestClock(emulator)
        settings = {"poll_interval_seconds": 0.05, "poll_interval_max_seconds": 0.5}
        initial = run_tap(
            emulator, clock, tap_config(emulator, log_ids, first, **settings), workdir, "quiet-1"
        )
        check_events("quiet first sync", initial, len(emulator.truth(*first)))
        if initial.state is None:
            raise SystemExit("quiet: the first sync emitted no STATE")
        config = tap_config(emulator, log_ids, (first[0], second[1]), **settings)
        run = run_tap(emulator, clock, config, workdir, "quiet-2", state=initial.state)
    check_events("quiet incremental sync", run, expected)
    problems = check_summary_against_emulator("quiet", run)
    started = run.emulator["requests"].get("queries_started", 0)
    predicted = plan_queries(per_log, windows=1, logs_per_query=TAP_LOGS_PER_QUERY)
    print(
        f"quiet_tap: events={run.events} queries_started={started} "
        f"plan_queries_predicted={predicted} one_query_per_log={len(log_ids)} "
        f"sync_wall_s={run.sync_seconds:.2f} (first sync: {initial.events} events, "
        f"{initial.emulator['requests'].get('queries_started', 0)} queries)",
        flush=True,
    )
    ratio = started / len(log_ids)
    benchlib.print_ratio("queries_per_log", ratio, f"<={QUIET_GOAL}", ratio <= QUIET_GOAL)
    if problems:
        raise SystemExit("quiet: the tap's budget summary disagrees with the emulator")


def backfill(args: argparse.Namespace, dense_queries: int, dense_events: dict[str, int]) -> None:
    """Measurement 3: the cost model for 13 months of 50 logs, and checked against the dense run."""
    days = 396
    rates = backfill_rates(args.backfill_logs, seed=args.seed)
    events = {f"log{n:03d}": round(rate * days * 86_400) for n, rate in enumerate(rates)}
    windows = math.ceil(days * 86_400 / TAP_WINDOW_SECONDS)
    planned = plan_queries(events, windows=windows, logs_per_query=TAP_LOGS_PER_QUERY)
    ideal = ideal_queries(events)
    hours = budget_hours(planned, reserve_share=TAP_RESERVE_SHARE)
    ideal_hours = budget_hours(ideal)
    benchlib.print_header(
        "tap_budget backfill plan",
        {
            "logs": len(events),
            "days": days,
            "rates_events_per_s": f"log-uniform[0.05,20] seed={args.seed} "
            f"(min {min(rates):.3f} median {sorted(rates)[len(rates) // 2]:.2f} "
            f"max {max(rates):.2f})",
            "events": sum(events.values()),
            "window_s": TAP_WINDOW_SECONDS,
            "logs_per_query": TAP_LOGS_PER_QUERY,
            "budget": f"{PUBLISHED_QUERY_BUDGET}/{PUBLISHED_WINDOW_SECONDS}s",
            "reserve_share": TAP_RESERVE_SHARE,
        },
    )
    print(
        f"backfill_plan: planned_queries={planned} fewest_queries={ideal} "
        f"planned_over_fewest={planned / ideal:.4f} hours={hours:.1f} "
        f"ideal_hours={ideal_hours:.1f} "
        f"(days of pulling: {hours / 24:.1f})",
        flush=True,
    )
    dense_windows = 1  # the dense window is shorter than the tap's default window
    predicted = plan_queries(dense_events, windows=dense_windows, logs_per_query=TAP_LOGS_PER_QUERY)
    print(
        f"cost_model_vs_dense: plan_queries_predicted={predicted} "
        f"emulator_queries_started={dense_queries} "
        f"measured_over_predicted={dense_queries / predicted:.3f}",
        flush=True,
    )
    ratio = hours / ideal_hours
    benchlib.print_ratio(
        "backfill_hours_over_ideal", ratio, f"<={BACKFILL_GOAL}", ratio <= BACKFILL_GOAL
    )


def main() -> None:
    """Run the three measurements and print their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--dense-logs", type=int, help="dense: logs (default 4; quick 3)")
    parser.add_argument(
        "--dense-events-per-second", type=float, help="dense: per log (default 10; quick 3)"
    )
    parser.add_argument(
        "--query-budget", type=int, default=30, help="dense: queries per budget window (30)"
    )
    parser.add_argument(
        "--budget-window", type=float, default=3.0, help="dense: budget window, seconds (3)"
    )
    parser.add_argument("--link-ttl", type=float, default=2.0, help="dense: link lifetime (2 s)")
    parser.add_argument("--quiet-logs", type=int, help="quiet: logs (default 300; quick 60)")
    parser.add_argument("--backfill-logs", type=int, default=50, help="backfill plan: logs (50)")
    parser.add_argument("--seed", type=int, default=1, help="backfill plan: seed of the rates")
    benchlib.add_env_argument(parser)
    args = parser.parse_args()
    benchlib.configure_env(args)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        dense_queries, dense_events = dense(args, workdir)
        quiet(args, workdir)
    backfill(args, dense_queries, dense_events)


if __name__ == "__main__":
    main()
