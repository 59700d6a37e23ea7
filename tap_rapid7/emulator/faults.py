"""Deterministic fault dice: the same request sequence and `fault_seed` get the same faults."""

from __future__ import annotations

import random
import threading

SERVER_ERROR_CODES = (500, 502, 503)


class FaultInjector:
    """Decides, per API request, whether to drop it, fail it with 5xx, or force a 429."""

    def __init__(self, fault_seed: int) -> None:
        self._lock = threading.Lock()
        self.reseed(fault_seed)

    def reseed(self, fault_seed: int) -> None:
        with self._lock:
            self.fault_seed = fault_seed
            self._rng = random.Random(f"faults-{fault_seed}")

    def roll(self, drop_rate: float, error_rate: float) -> tuple[bool, int | None]:
        """Return (drop, error_status) for the next request; always three draws, so the
        dice sequence depends only on the number of requests."""
        with self._lock:
            drop_die, error_die, code_die = (self._rng.random(), self._rng.random(),
                                             self._rng.random())
        if drop_die < drop_rate:
            return True, None
        if error_die < error_rate:
            return False, SERVER_ERROR_CODES[int(code_die * len(SERVER_ERROR_CODES))]
        return False, None
