"""Stopping on SIGTERM/SIGINT between records, with a STATE that covers exactly what went out.

The SDK's own handler writes STATE and exits 0 from inside the signal handler: wherever the main
thread was, even halfway through writing a RECORD line or updating a cursor, and a scheduler
that cancelled the run sees success. Here the handler only records the signal. The streams check
it between records (``TapRapid7.stop_if_requested``) and stop there: the last STATE is the cursor
of the last RECORD written, never ahead of it. While the main thread waits for the API (a poll,
a page, a backoff: ``waiting``), nothing is being written, so the handler stops the wait at
once instead of letting it run for up to ``request_timeout_seconds``. The process then exits
128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a killed command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StopRequested", "StopSignal"]


class StopRequested(BaseException):
    """Raised out of a wait for the API when a stop signal arrives (never caught as an error)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopSignal:
    """The first stop signal received; only the main thread (where handlers run) touches it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._waiting = 0
        self._stopping = False

    def request(self, signum: int) -> None:
        """Called by the signal handler: record, and end a wait for the API if one is on.

        Only once: from then on the run is stopping (writing its STATE), and a second signal
        (Ctrl-C, then the scheduler's SIGTERM) is only recorded. A wait ended at its very edge
        may not have lowered its count yet, so the count alone cannot tell.
        """
        if self.signum is None:
            self.signum = signum
        if self._waiting and not self._stopping:
            self._stopping = True
            raise StopRequested(self.signum)

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """A stretch where the main thread writes nothing and may be stopped at any point."""
        if self.signum is not None:
            self._stopping = True
            raise StopRequested(self.signum)
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1
