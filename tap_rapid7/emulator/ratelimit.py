"""Per-key, per-family fixed-window rate limiting, like the Logentries REST platform.

Windows are aligned to multiples of `rate_limit_window_seconds` on the emulator clock, so
`X-RateLimit-Reset` (seconds until the budget refills) is easy to predict in tests.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

UNLIMITED_DISPLAY = 1_000_000  # X-RateLimit-Limit shown when no budget is configured


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


class RateLimiter:
    """Counts requests per (key, family) in the current window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[tuple[str, str], tuple[int, int]] = {}  # -> (window index, used)

    def check(self, key: str, family: str, *, budget: int | None, window_s: float, now_ms: int,
              consume: bool = True) -> RateDecision:
        """Consume one request (if `consume`) and say whether it is allowed."""
        window_ms = max(1, round(window_s * 1000))
        index = now_ms // window_ms
        reset = max(1, math.ceil(((index + 1) * window_ms - now_ms) / 1000))
        with self._lock:
            seen_index, used = self._used.get((key, family), (index, 0))
            if seen_index != index:
                used = 0
            limit = UNLIMITED_DISPLAY if budget is None else budget
            allowed = budget is None or used < budget
            if consume and allowed:
                used += 1
            self._used[(key, family)] = (index, used)
        return RateDecision(allowed, limit, max(0, limit - used), reset)
