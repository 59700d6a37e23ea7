"""Deterministic fault dice: the same request sequence and `fault_seed` get the same faults.

Two independent streams: one rolled for every API request (drop, 5xx), one rolled for every
finished page response (non-page bodies), so switching one fault on does not move the other.
"""

from __future__ import annotations

import random
import threading

SERVER_ERROR_CODES = (500, 502, 503)
NON_PAGE_VARIANTS = 4  # see app.py: {}, {"events": null}, logs/leql only, {"events": {}}


class FaultInjector:
    """Decides, per API request, whether to drop it, fail it with 5xx, or force a 429; and,
    per finished page, whether to answer a body that is no page."""

    def __init__(self, fault_seed: int) -> None:
        self._lock = threading.Lock()
        self.reseed(fault_seed)

    def reseed(self, fault_seed: int) -> None:
        with self._lock:
            self.fault_seed = fault_seed
            self._rng = random.Random(f"faults-{fault_seed}")
            self._page_rng = random.Random(f"non-page-{fault_seed}")

    def roll(self, drop_rate: float, error_rate: float) -> tuple[bool, int | None]:
        """Return (drop, error_status) for the next request; always three draws, so the
        dice sequence depends only on the number of requests."""
        with self._lock:
            drop_die, error_die, code_die = (
                self._rng.random(),
                self._rng.random(),
                self._rng.random(),
            )
        if drop_die < drop_rate:
            return True, None
        if error_die < error_rate:
            return False, SERVER_ERROR_CODES[int(code_die * len(SERVER_ERROR_CODES))]
        return False, None

    def roll_non_page(self, non_page_rate: float) -> int | None:
        """For the next finished page: None (serve it) or the non-page variant to answer.
        Always two draws, so the sequence depends only on the number of finished pages."""
        with self._lock:
            die, variant_die = self._page_rng.random(), self._page_rng.random()
        if die < non_page_rate:
            return int(variant_die * NON_PAGE_VARIANTS)
        return None
