"""Rapid7's published request budgets, and pacing every request of one API key within them.

Rapid7 counts per user, over a window of 15 minutes (``rapid7-logsearch-api.md`` §11): 1,500
*queries* (a start, and every ``Next`` page, which launches a new query), 10,000 *polls* of
``Self`` links, 1,500 *management* requests. Every answer carries ``X-RateLimit-Limit``,
``-Remaining`` and ``-Reset`` (seconds) for the family of the request that got it; a 429 carries
``Retry-After`` too. A rate-limited poll lets its link expire (links die when not polled for
20 s), so the query must start again: that costs a query, the scarce resource.

So the tap paces instead of bouncing. Each family has its own pacer state, shared by every
thread, and a request waits only for its own family: a spent query budget never holds a poll of
a query that is already running. Within a window the pacer lets a quarter of the budget go at
once (a small sync is not slowed down), then spreads the rest evenly over the time left until
the reset, keeping a small reserve for other users of the key (other jobs, the console,
reconciliation). A sync whose work fits the budget therefore sees no 429; one that does not
slows down smoothly to the budget's rate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from plugin_io.log_events import log_event

__all__ = [
    "FAMILIES",
    "BudgetPacer",
    "FamilyBudget",
    "ServerWait",
    "parse_rate_limit_wait",
    "rate_limit_headers",
    "server_wait",
]

# The request families Rapid7 budgets separately.
QUERY, POLL, MANAGEMENT = "query", "poll", "management"
FAMILIES = (QUERY, POLL, MANAGEMENT)

# ``X-RateLimit-Reset`` is documented as seconds; a value this large can only be an epoch.
_EPOCH_THRESHOLD = 1e9

logger = logging.getLogger("tap_rapid7.logsearch")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # plain dicts in tests are case-sensitive; requests' are not
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


@dataclass(frozen=True)
class ServerWait:
    """What a 429's headers asked for, and what the tap makes of it.

    ``seconds`` is None when no header named a usable wait (the caller backs off on its own,
    bounded by ``backoff_max_seconds``). ``ignored`` lists the headers that named an unusable one
    (``Retry-After='inf'``): not a finite number, negative, a date in the past. ``asked_seconds``
    is set when the server asked for longer than ``max_seconds`` and ``seconds`` was cut to it.
    A server (or a proxy in front of it) can send anything; none of it may hang or crash the tap.
    """

    seconds: float | None
    source: str  # "Retry-After", "X-RateLimit-Reset" or "backoff"
    ignored: tuple[str, ...] = ()
    asked_seconds: float | None = None


# Header values quoted in warnings are cut to this many characters (the server chose them).
_SHOWN_VALUE_CHARS = 40


def _shown(name: str, value: str) -> str:
    text = value if len(value) <= _SHOWN_VALUE_CHARS else value[:_SHOWN_VALUE_CHARS] + "..."
    return f"{name}={text!r}"


def _finite(value: str) -> float | None:
    """``value`` as a finite number, else None (``inf``, ``nan``, text)."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _retry_after_seconds(value: str, wall_clock: Callable[[], float]) -> float | None:
    """Seconds a ``Retry-After`` asks for: delay-seconds, or an HTTP-date (RFC 9110 §10.2.3)."""
    try:
        float(value)
    except ValueError:
        pass
    else:
        return _finite(value)  # a number, if possibly not a usable one: never read as a date
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000" (RFC 5322: UTC, source unknown) parses naive
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() - wall_clock()


def _reset_seconds(value: str, wall_clock: Callable[[], float]) -> float | None:
    number = _finite(value)
    if number is None:
        return None
    return number - wall_clock() if number > _EPOCH_THRESHOLD else number


def server_wait(
    headers: Mapping[str, str],
    wall_clock: Callable[[], float] = time.time,
    *,
    max_seconds: float = math.inf,
) -> ServerWait:
    """The wait a 429 asks for (``Retry-After`` first, then ``X-RateLimit-Reset``), bounded.

    A header that is not a finite, non-negative number of seconds (or, for ``Retry-After``, an
    HTTP-date in the future) is treated as absent and listed in ``ignored``: ``inf`` used to
    crash the sleep, a negative or ``nan`` one gave no wait at all. A wait above ``max_seconds``
    (the budget window: Rapid7's budgets refill within it, so no honest server asks for more) is
    cut to it; ``Retry-After: 1000000000`` would otherwise sleep for 31 years.
    """
    ignored: list[str] = []
    for name, parse in (
        ("Retry-After", _retry_after_seconds),
        ("X-RateLimit-Reset", _reset_seconds),
    ):
        value = _header(headers, name)
        if value is None:
            continue
        seconds = parse(value.strip(), wall_clock)
        if seconds is None or seconds < 0:
            ignored.append(_shown(name, value))
            continue
        if seconds > max_seconds:
            return ServerWait(max_seconds, name, tuple(ignored), asked_seconds=seconds)
        return ServerWait(seconds, name, tuple(ignored))
    return ServerWait(None, "backoff", tuple(ignored))


def parse_rate_limit_wait(
    headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time
) -> tuple[float, str] | None:
    """Seconds to wait after a 429 and the header that said so (``Retry-After`` first).

    Returns None when neither header is usable (the caller then backs off exponentially).
    Unbounded: ``server_wait`` is the bounded form the HTTP layer uses.
    """
    told = server_wait(headers, wall_clock)
    return None if told.seconds is None else (told.seconds, told.source)


def rate_limit_headers(
    headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time
) -> tuple[int, int, float] | None:
    """``(limit, remaining, seconds until reset)`` from an answer, or None if incomplete."""
    values = [_header(headers, f"X-RateLimit-{name}") for name in ("Limit", "Remaining", "Reset")]
    if any(v is None for v in values):
        return None
    try:
        limit, remaining = int(float(values[0] or "")), int(float(values[1] or ""))
    except (ValueError, OverflowError):  # text, nan, inf
        return None
    reset = _reset_seconds((values[2] or "").strip(), wall_clock)
    if reset is None or limit <= 0:
        return None
    return limit, max(0, remaining), max(0.0, reset)


@dataclass
class FamilyBudget:
    """What the tap knows and did about one family's budget (guarded by the pacer's lock)."""

    limit: int | None = None
    remaining: int | None = None  # as last reported (or estimated after a reset)
    reset_at: float | None = None  # monotonic moment the window refills
    sent_since_report: int = 0
    hold_until: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    waited_seconds: float = 0.0
    lowest_remaining: int | None = None

    def estimate(self) -> int | None:
        """Requests still allowed in this window, counting those sent since the last report."""
        if self.remaining is None:
            return None
        return self.remaining - self.sent_since_report


class BudgetPacer:
    """Per-family pacing of one API key's requests, shared by every thread."""

    def __init__(
        self,
        *,
        window_seconds: float = 900.0,
        reserve_share: float = 0.05,
        burst_share: float = 0.25,
        log_interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if window_seconds <= 0:
            msg = f"budget_window_seconds must be > 0, got {window_seconds}"
            raise ValueError(msg)
        if not 0 <= reserve_share < 1 or not 0 <= burst_share <= 1:
            msg = "budget_reserve_share must be in [0, 1) and the burst share in [0, 1]"
            raise ValueError(msg)
        self.window_seconds = window_seconds
        self.reserve_share = reserve_share
        self.burst_share = burst_share
        self.log_interval_seconds = log_interval_seconds
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self.families = {family: FamilyBudget() for family in FAMILIES}
        self.restarts = 0
        self.events = 0
        self._started = clock()
        self._last_log = clock()

    # ------------------------------------------------------------------ pacing

    def _delay(self, budget: FamilyBudget, now: float) -> float:
        """Seconds this family must still wait before one more request (0: go now)."""
        if budget.hold_until > now:
            return budget.hold_until - now
        limit, remaining, reset_at = budget.limit, budget.remaining, budget.reset_at
        if limit is None or remaining is None or reset_at is None:
            return 0.0  # nothing known yet: the first answer tells
        window = max(self.window_seconds, 1e-9)
        if now >= reset_at:  # the window refilled; move to the current one
            periods = math.floor((now - reset_at) / window) + 1
            budget.reset_at = reset_at = reset_at + periods * window
            budget.remaining = remaining = limit
            budget.sent_since_report = 0
        left = reset_at - now
        window = max(window, left)  # a server window longer than configured
        reserve = min(limit - 1, math.ceil(self.reserve_share * limit))
        usable = limit - reserve
        burst = min(usable, math.floor(self.burst_share * limit))
        used = limit - (remaining - budget.sent_since_report)
        if used + 1 > usable:
            return left  # spent (but for the reserve): wait for the refill
        if usable == burst:
            return 0.0
        elapsed = window - left
        allowed = burst + (usable - burst) * elapsed / window
        if used + 1 <= allowed:
            return 0.0
        return (used + 1 - burst) * window / (usable - burst) - elapsed

    def acquire(self, family: str, *, max_wait: float | None = None) -> float:
        """Wait until one more request of ``family`` fits its budget; count it; return the wait.

        ``max_wait`` bounds the wait (a poll must go out before its link expires: it is sent
        then, and a 429 it may get is handled like any other).
        """
        waited = 0.0
        while True:
            with self._lock:
                budget = self.families[family]
                delay = self._delay(budget, self._clock())
                if max_wait is not None:
                    delay = min(delay, max(0.0, max_wait - waited))
                if delay <= 1e-6:
                    budget.sent_since_report += 1
                    budget.requests += 1
                    budget.waited_seconds += waited
                    return waited
            self._sleep(delay)
            waited += delay

    def observe(self, family: str, headers: Mapping[str, str]) -> None:
        """Take in the budget an answer reports for its family."""
        parsed = rate_limit_headers(headers, self._wall_clock)
        if parsed is None:
            return
        limit, remaining, reset = parsed
        # A reset beyond the window is not Rapid7's (budgets refill within it): never wait
        # longer than a window for it (an absurd value would hold the family for years).
        reset = min(reset, self.window_seconds)
        now = self._clock()
        with self._lock:
            budget = self.families[family]
            reset_at = now + reset
            # Answers of one window name the same reset, give or take their latency; there an
            # older answer arriving late must not raise the estimate. Any other reset (a new
            # window, or a 429 saying "spent until ...") is the server's word and replaces ours.
            tolerance = min(1.0, 0.05 * self.window_seconds)
            same_window = (
                budget.reset_at is not None
                and budget.remaining is not None
                and abs(reset_at - budget.reset_at) <= tolerance
            )
            if same_window:
                estimate = budget.estimate()
                budget.remaining = min(remaining, estimate if estimate is not None else remaining)
            else:
                budget.remaining = remaining
                budget.reset_at = reset_at
            budget.limit = limit
            budget.sent_since_report = 0
            if budget.lowest_remaining is None or remaining < budget.lowest_remaining:
                budget.lowest_remaining = remaining
        self._maybe_log(now)

    def hold(self, family: str, seconds: float) -> None:
        """After a 429: no request of ``family`` before ``seconds`` from now (never shortened)."""
        now = self._clock()
        with self._lock:
            budget = self.families[family]
            budget.rate_limited += 1
            if not math.isfinite(seconds):  # callers bound their waits; never hold forever
                seconds = 0.0 if math.isnan(seconds) else self.window_seconds
            budget.hold_until = max(budget.hold_until, now + seconds)

    def count_restart(self) -> None:
        """A query was started again (its link expired, was refused or timed out)."""
        with self._lock:
            self.restarts += 1

    def count_events(self, events: int) -> None:
        """Events accepted (for events per query)."""
        with self._lock:
            self.events += events

    # ------------------------------------------------------------------ reporting

    def snapshot(self) -> dict[str, object]:
        """Every figure of the budget, flat, for log lines and tests."""
        now = self._clock()
        with self._lock:
            fields: dict[str, object] = {}
            for family, budget in self.families.items():
                fields[f"{family}_requests"] = budget.requests
                fields[f"{family}_rate_limited"] = budget.rate_limited
                fields[f"{family}_remaining"] = budget.estimate()
                fields[f"{family}_limit"] = budget.limit
                fields[f"{family}_lowest_remaining"] = budget.lowest_remaining
                fields[f"{family}_reset_seconds"] = (
                    None if budget.reset_at is None else round(max(0.0, budget.reset_at - now), 3)
                )
                fields[f"{family}_waited_seconds"] = round(budget.waited_seconds, 3)
            queries = self.families[QUERY].requests
            fields["restarts"] = self.restarts
            fields["events"] = self.events
            fields["events_per_query"] = round(self.events / queries, 1) if queries else None
            fields["elapsed_seconds"] = round(now - self._started, 3)
        return fields

    def _maybe_log(self, now: float) -> None:
        with self._lock:
            if now - self._last_log < self.log_interval_seconds:
                return
            self._last_log = now
        log_event(logger, logging.INFO, "logsearch_budget", **self.snapshot())

    def log_summary(self) -> None:
        """One line for the whole sync: what it spent of each budget, and how well."""
        log_event(logger, logging.INFO, "logsearch_budget_summary", **self.snapshot())
