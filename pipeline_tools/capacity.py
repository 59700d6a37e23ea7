"""`tap-rapid7-capacity`: how long a pull takes at Rapid7's published query budget.

Against Rapid7 the scarce resource is the query budget, not CPU (``rapid7-logsearch-api.md``
§11): 1,500 queries per user per 15 minutes, every ``Next`` page a new query, at most 500 events
a page. One key therefore moves at most 750,000 events per 15 minutes (3 M an hour), and only if
every page is full. This command estimates what a range costs with the tap's own plan (its
windows, its logs read together) and how long that takes at the budget, using one
``calculate(count)`` per log over the whole range (a few queries, not one per window: events are
assumed spread evenly over the range, which is what a plan needs, not an exact count).

The cost model (``plan_queries``) is the tap's reading rule: per window, a group of logs read
together costs one query when all of its events fit one page; otherwise that first page plus,
for each log, the pages of what the first page did not hold.

Failures are one line on stderr and exit status 2 (``--log-level DEBUG`` adds the traceback):
bad arguments or settings (a range that ends before it starts, a time before 1970 or after
9999, an empty ``--log-id``, a ``window_seconds`` that is not a positive number), an API that
cannot be asked, and a count that is not a number of events (negative, not a whole number,
above ``MAX_EVENTS``): such a count is named with its log and never estimated from.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plugin_io.log_events import add_log_level_argument
from tap_rapid7.windows import MAX_EVENTS

if TYPE_CHECKING:
    from tap_rapid7.logsearch import LogSearchClient
    from tap_rapid7.settings import TapSettings

__all__ = [
    "EVENTS_PER_PAGE",
    "MAX_EVENTS",
    "PUBLISHED_QUERY_BUDGET",
    "PUBLISHED_WINDOW_SECONDS",
    "Plan",
    "budget_hours",
    "ideal_queries",
    "main",
    "plan_queries",
]

PUBLISHED_QUERY_BUDGET = 1500  # queries per user per budget window (§11)
PUBLISHED_WINDOW_SECONDS = 900
EVENTS_PER_PAGE = 500  # the API's largest page
# Times are epoch milliseconds from 1970 up to the end of year 9999 (what ISO 8601 can spell).
MAX_TIME_MS = 253_402_300_800_000


def ideal_queries(events_by_log: Mapping[str, int], per_page: int = EVENTS_PER_PAGE) -> int:
    """The fewest queries that can move these events: every page full, per log."""
    return sum(math.ceil(events / per_page) for events in events_by_log.values())


def _group_window_queries(events: Sequence[float], per_page: int) -> int:
    total = sum(events)
    if total <= 0:
        return 1  # an empty window still costs its query
    if total <= per_page:
        return 1
    # the shared first page holds a share of each log; each log then continues alone
    return 1 + sum(
        math.ceil(max(0.0, e - e / total * per_page) / per_page) for e in events if e > 0
    )


def plan_queries(
    events_by_log: Mapping[str, float],
    *,
    windows: int,
    per_page: int = EVENTS_PER_PAGE,
    logs_per_query: int = 1,
) -> int:
    """Queries the tap's plan spends: ``windows`` windows, logs read ``logs_per_query`` at once.

    ``events_by_log`` is each log's events over the whole range, assumed even across windows.
    """
    logs = list(events_by_log)
    total = 0
    for first in range(0, len(logs), max(1, logs_per_query)):
        group = logs[first : first + max(1, logs_per_query)]
        per_window = [events_by_log[log] / windows for log in group]
        if len(group) == 1:
            total += windows * max(1, math.ceil(per_window[0] / per_page))
        else:
            total += windows * _group_window_queries(per_window, per_page)
    return total


def budget_hours(
    queries: int,
    *,
    limit: int = PUBLISHED_QUERY_BUDGET,
    window_seconds: float = PUBLISHED_WINDOW_SECONDS,
    reserve_share: float = 0.0,
) -> float:
    """Hours ``queries`` take at the budget (``reserve_share`` left for other users)."""
    usable = limit * (1 - reserve_share)
    return queries / usable * window_seconds / 3600


@dataclass
class Plan:
    """A pull's estimated cost."""

    events: dict[str, int]
    windows: int
    planned_queries: int
    ideal_queries: int
    hours: float
    ideal_hours: float

    def render(self) -> str:
        width = max([len(log) for log in self.events] + [6])
        lines = [f"{'log':<{width}}  {'events':>12}  {'full pages':>10}"]
        for log, events in self.events.items():
            lines.append(f"{log:<{width}}  {events:>12}  {math.ceil(events / EVENTS_PER_PAGE):>10}")
        lines += [
            f"{'total':<{width}}  {sum(self.events.values()):>12}  {self.ideal_queries:>10}",
            "",
            f"windows per log: {self.windows}; queries the tap's plan spends: "
            f"{self.planned_queries} ({self.planned_queries / max(1, self.ideal_queries):.2f} x "
            "the fewest possible)",
            f"time at the budget: {self.hours:.2f} h with the tap's reserve "
            f"(the fewest queries at the full budget: {self.ideal_hours:.2f} h)",
            "one key moves at most 750,000 events per 15 minutes (1,500 full pages of 500)",
        ]
        return "\n".join(lines)


def estimate(
    events: dict[str, int],
    *,
    range_seconds: float,
    settings: TapSettings,
) -> Plan:
    """The plan's cost for ``events`` per log over a range of ``range_seconds``."""
    windows = max(1, math.ceil(range_seconds / settings.window_seconds))
    planned = plan_queries(
        events,
        windows=windows,
        per_page=settings.per_page,
        logs_per_query=max(1, settings.logs_per_query),
    )
    ideal = ideal_queries(events)
    reserve = settings.budget_reserve_share
    return Plan(
        events, windows, planned, ideal, budget_hours(planned, reserve_share=reserve),
        budget_hours(ideal),
    )  # fmt: skip


def _shown(count: int) -> str:
    """A count as a person reads it: digits, or its order of magnitude when it is absurdly long."""
    if abs(count) < 10**18:
        return str(count)
    try:
        return f"{float(count):.3g}"
    except OverflowError:
        return f"about 10^{len(str(abs(count))) - 1}"


def checked_count(log_id: str, count: object) -> int:
    """``count`` when it is a number of events (a whole number 0..MAX_EVENTS), else UsageError."""
    from pipeline_tools.reconcile.cli import UsageError  # noqa: PLC0415

    where = f"the API's calculate(count) for log {log_id!r} over the range"
    if isinstance(count, bool) or not isinstance(count, int | float):
        raise UsageError(f"{where} is {count!r}: not a number of events")
    if isinstance(count, float):
        if not math.isfinite(count) or count != int(count):
            raise UsageError(f"{where} is {count!r}: not a whole, finite number of events")
        count = int(count)
    if not 0 <= count <= MAX_EVENTS:
        raise UsageError(
            f"{where} is {_shown(count)}: not a number of events "
            f"(expected 0 to {MAX_EVENTS:.0e}); nothing estimated"
        )
    return count


def _count(
    client: LogSearchClient, log_id: str, span: tuple[int, int], statement: str | None
) -> int:
    """One log's count over the range, checked (an answer int() refused is named too)."""
    from pipeline_tools.reconcile.cli import UsageError  # noqa: PLC0415

    try:
        count = client.protocol.count_range(log_id, span[0], span[1], statement)
    except (ValueError, TypeError, OverflowError) as exc:  # the answer's count is no integer
        where = f"the API's calculate(count) for log {log_id!r} over the range"
        raise UsageError(f"{where} is not a number of events ({exc})") from exc
    return checked_count(log_id, count)


def _time(option: str, text: str) -> int:
    """``--from``/``--to`` as epoch milliseconds within 1970..9999."""
    from pipeline_tools.reconcile.cli import UsageError, parse_time  # noqa: PLC0415

    try:
        millis = parse_time(text)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}") from exc
    if not 0 <= millis < MAX_TIME_MS:
        raise UsageError(
            f"{option} {text.strip()}: out of range (epoch milliseconds from 0, 1970, "
            f"to {MAX_TIME_MS}, the end of 9999)"
        )
    return millis


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tap-rapid7-capacity`."""
    from pipeline_tools.reconcile.cli import UsageError, load_config  # noqa: PLC0415
    from plugin_io.log_events import redact  # noqa: PLC0415
    from tap_rapid7.logsearch import LogSearchClient  # noqa: PLC0415  (keeps --help fast)

    parser = argparse.ArgumentParser(
        prog="tap-rapid7-capacity",
        description="Estimate the queries and hours a pull costs at Rapid7's query budget "
        "(one calculate(count) per log over the range).",
    )
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="FILE|ENV",
        help="the tap's settings (JSON file, or ENV for TAP_RAPID7_* variables)",
    )
    parser.add_argument(
        "--from", dest="from_", required=True, metavar="TIME", help="start, ISO 8601 or epoch ms"
    )
    parser.add_argument("--to", required=True, metavar="TIME", help="end (exclusive)")
    parser.add_argument(
        "--log-id",
        action="append",
        dest="log_ids",
        metavar="ID",
        help="only this log (repeatable; default: log_ids, else every log)",
    )
    add_log_level_argument(parser)
    args = parser.parse_args(argv)
    debug = args.log_level == "DEBUG"
    settings: TapSettings | None = None
    try:
        settings = load_config(args.config)
        from_ms, to_ms = _time("--from", args.from_), _time("--to", args.to)
        if to_ms <= from_ms:
            raise UsageError("--to must be after --from")
        if any(not log_id.strip() for log_id in args.log_ids or []):
            raise UsageError("--log-id must not be empty")
        window = settings.window_seconds
        if not math.isfinite(window) or window <= 0:
            raise UsageError(f"setting window_seconds: expected a positive number, got {window!r}")
        client = LogSearchClient(settings)
        log_ids = args.log_ids or settings.logs
        if not log_ids:
            log_ids = [str(log["id"]) for log in client.list_logs() if log.get("id")]
        statement = settings.query or None
        events = {log_id: _count(client, log_id, (from_ms, to_ms), statement) for log_id in log_ids}
        plan = estimate(events, range_seconds=(to_ms - from_ms) / 1000, settings=settings)
    except UsageError as exc:
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"tap-rapid7-capacity: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # API failure: one line, never the key, whatever raised it
        key = settings.api_key if settings else ""
        if debug:  # the traceback too, the key redacted from it
            text = "".join(traceback.format_exception(exc))
            print(redact(text, [key, key.strip()]), file=sys.stderr, end="")
        text = redact(f"{type(exc).__name__}: {exc}", [key, key.strip()])
        print(f"tap-rapid7-capacity: could not estimate: {text}", file=sys.stderr)
        return 2
    print(plan.render())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
