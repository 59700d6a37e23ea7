"""Rapid7's published request budgets: per API key and per family, over fixed windows.

Rapid7's OpenAPI document (`docs/logsearch-api.md`, "Budgets") budgets each user separately
for three families of requests, per 15 minutes:

* ``query``: 1,500 query starts: `GET /query/logs/{keys}`, `POST /query/logs`,
  `/query/logsets…`, `/query/context/…`, and every `Next` link (a new query, `next_page=true`);
* ``poll``: 10,000 polls of a `Self` link (`GET /query/{id}`);
* ``management``: 1,500 requests to `/management/*`.

Windows are fixed and aligned to multiples of `budget_window_seconds` on the emulator clock, so a
test can predict every header. Every API response carries, for the family of its request,
`X-RateLimit-Limit` (the budget), `X-RateLimit-Remaining` (what is left in this window after
this request) and `X-RateLimit-Reset` (seconds until the window ends). Rapid7 sends whole
seconds; with windows shorter than a minute (scaled-down tests) the emulator sends milliseconds
(`"2.345"`), else Reset would be a coarse fraction of the window. A spent budget answers 429 with
a `text/plain` body `API rate limit exceeded`, `X-RateLimit-Remaining: 0`, and `Retry-After`
equal to Reset. No header names the family: a client must know it from the request it made.

Only authenticated requests that reach the budget check consume it; a 429 consumes nothing.
An unlimited family (its budget None, or `budgets=False`) still sends the headers, with a large
Limit (`UNLIMITED_DISPLAY`) and a Remaining that counts down from it but never reaches 0.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

QUERY, POLL, MANAGEMENT = "query", "poll", "management"
FAMILIES = (QUERY, POLL, MANAGEMENT)

UNLIMITED_DISPLAY = 1_000_000  # X-RateLimit-Limit shown when a family has no budget

# Below this window length, X-RateLimit-Reset and Retry-After carry milliseconds.
WHOLE_SECONDS_FROM = 60.0

RATE_LIMITED_BODY = b"API rate limit exceeded"

# Second path segments under /query that start a query (anything else is a Self link's id).
_QUERY_STARTS = frozenset({"logs", "logsets", "context"})


def family_of(path: str) -> str:
    """The budget family of an API path (without the `/log_search` prefix)."""
    segments = [s for s in path.split("/") if s]
    if segments[:1] != ["query"]:
        return MANAGEMENT
    if len(segments) == 2 and segments[1] not in _QUERY_STARTS:
        return POLL
    return QUERY


def format_reset(reset_ms: int, window_seconds: float) -> str:
    """Seconds until the window resets, as sent in X-RateLimit-Reset and Retry-After: whole
    seconds rounded up when the window is at least a minute (as Rapid7 sends), else with
    millisecond precision."""
    if window_seconds >= WHOLE_SECONDS_FROM:
        return str(math.ceil(reset_ms / 1000))
    return f"{reset_ms / 1000:.3f}"


@dataclass(frozen=True)
class RateDecision:
    """What one request may do, and the headers that say so."""

    allowed: bool
    limit: int
    remaining: int
    reset_ms: int  # milliseconds until the window ends, in (0, window]
    window_seconds: float

    @property
    def reset(self) -> str:
        return format_reset(self.reset_ms, self.window_seconds)

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": self.reset,
        }

    def limited_headers(self) -> dict[str, str]:
        """Headers of a 429: Remaining 0 and Retry-After equal to Reset."""
        return {
            **self.headers(),
            "X-RateLimit-Remaining": "0",
            "Retry-After": self.reset,
            "Content-Type": "text/plain",
        }


class RateLimiter:
    """Counts requests per (key, family) in the current fixed window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (key, family) -> (window length ms, window index, requests used)
        self._used: dict[tuple[str, str], tuple[int, int, int]] = {}

    def check(
        self,
        key: str,
        family: str,
        *,
        budget: int | None,
        window_s: float,
        now_ms: int,
        consume: bool = True,
    ) -> RateDecision:
        """Consume one request of `family` (if `consume` and the budget allows it) and say
        whether it is allowed. `budget` None: unlimited."""
        window_ms = max(1, round(window_s * 1000))
        index = now_ms // window_ms
        reset_ms = (index + 1) * window_ms - now_ms
        with self._lock:
            seen_window, seen_index, used = self._used.get((key, family), (window_ms, index, 0))
            if (seen_window, seen_index) != (window_ms, index):
                used = 0
            allowed = budget is None or used < budget
            if consume and allowed:
                used += 1
            if consume or (key, family) in self._used:
                self._used[(key, family)] = (window_ms, index, used)
        if budget is None:
            limit, remaining = UNLIMITED_DISPLAY, max(1, UNLIMITED_DISPLAY - used)
        else:
            limit, remaining = budget, max(0, budget - used)
        return RateDecision(allowed, limit, remaining, reset_ms, window_s)
