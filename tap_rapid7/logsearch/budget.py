"""A rate-limit gate shared by every thread that talks to one Log Search account.

Rapid7 counts requests per API key over a period; a 429 (or ``X-RateLimit-Remaining: 0``) is a
statement about the whole key, not about the one request that saw it. So when any request learns
that the budget is spent, every thread holds off until the server says it is worth trying again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

__all__ = ["RateLimitGate", "parse_rate_limit_wait"]

# ``X-RateLimit-Reset`` is documented ambiguously: a value this large is an epoch, else a delta.
_EPOCH_THRESHOLD = 1e9


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # plain dicts in tests are case-sensitive; requests' are not
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _retry_after_seconds(value: str, wall_clock: Callable[[], float]) -> float | None:
    try:
        return float(value)
    except ValueError:
        pass
    try:  # an HTTP-date is allowed by RFC 9110
        return parsedate_to_datetime(value).timestamp() - wall_clock()
    except (TypeError, ValueError, IndexError):
        return None


def _reset_seconds(value: str, wall_clock: Callable[[], float]) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number - wall_clock() if number > _EPOCH_THRESHOLD else number


def parse_rate_limit_wait(
    headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time
) -> tuple[float, str] | None:
    """Seconds to wait after a 429 and the header that said so (``Retry-After`` first).

    Returns None when neither header is usable (the caller then backs off exponentially).
    """
    retry_after = _header(headers, "Retry-After")
    if retry_after is not None:
        seconds = _retry_after_seconds(retry_after.strip(), wall_clock)
        if seconds is not None:
            return max(0.0, seconds), "Retry-After"
    reset = _header(headers, "X-RateLimit-Reset")
    if reset is not None:
        seconds = _reset_seconds(reset.strip(), wall_clock)
        if seconds is not None:
            return max(0.0, seconds), "X-RateLimit-Reset"
    return None


class RateLimitGate:
    """Blocks every caller until a shared "not before" moment (monotonic clock)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._not_before = 0.0
        self.holds = 0  # how many times the gate was closed (for tests and logs)

    def wait(self) -> float:
        """Sleep until the gate is open; return the seconds slept."""
        slept = 0.0
        while True:
            with self._lock:
                delay = self._not_before - self._clock()
            if delay <= 0:
                return slept
            self._sleep(delay)
            slept += delay

    def hold(self, seconds: float) -> None:
        """Close the gate for every thread for ``seconds`` from now (never shortens a hold)."""
        if seconds <= 0:
            return
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)
            self.holds += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Close the gate when a successful response says the budget is spent."""
        remaining = _header(headers, "X-RateLimit-Remaining")
        if remaining is None:
            return
        try:
            left = int(float(remaining))
        except ValueError:
            return
        if left > 0:
            return
        reset = _header(headers, "X-RateLimit-Reset")
        seconds = _reset_seconds(reset.strip(), self._wall_clock) if reset else None
        if seconds:
            self.hold(seconds)
