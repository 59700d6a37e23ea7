"""Pure window and cursor arithmetic for Log Search pulls (no I/O, no clock).

Everything that decides *which* events belong to a sync lives here so it can be tested without
HTTP: the half-open windows ``[from, to)`` a sync is cut into, the per-log resume cursor
``(timestamp, sequence_number)`` and the per-window filter that drops events outside the window
(whatever the server does with ``to``), events already emitted before a resume, and duplicates.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CURSOR_MILLIS_KEY",
    "CURSOR_SEQUENCE_KEY",
    "Cursor",
    "Window",
    "WindowFilter",
    "iso_to_millis",
    "millis_to_iso",
    "plan_windows",
    "sync_end_millis",
]

# State keys per log partition (conventions: ints and strings only).
CURSOR_MILLIS_KEY = "next_from_millis"
CURSOR_SEQUENCE_KEY = "next_from_sequence_number_str"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso_to_millis(value: str | dt.datetime) -> int:
    """Epoch milliseconds of an ISO 8601 date-time (naive values are taken as UTC)."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - _EPOCH
    # Integer arithmetic: no float ever touches a millisecond boundary.
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@functools.lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    # isoformat pads the year to four digits (strftime("%Y") does not on Linux: year 1 -> "1").
    return (_EPOCH + dt.timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()[:19]


def millis_to_iso(millis: int) -> str:
    """ISO 8601 UTC date-time with millisecond precision for an epoch-ms value.

    On the per-record path: the date part is cached per second (events arrive in time order).
    """
    seconds, rest = divmod(millis, 1000)
    return f"{_second_prefix(seconds)}.{rest:03d}+00:00"


def sync_end_millis(end_date: str | None, now_millis: int, lag_seconds: float) -> int:
    """Exclusive end of a sync: ``end_date`` if set, else now minus the safety lag."""
    if end_date:
        return iso_to_millis(end_date)
    return now_millis - round(lag_seconds * 1000)


@dataclass(frozen=True, order=True)
class Window:
    """A half-open query window ``[from_ms, to_ms)`` in epoch milliseconds."""

    from_ms: int
    to_ms: int

    def contains(self, timestamp: int) -> bool:
        """True when ``from_ms <= timestamp < to_ms``."""
        return self.from_ms <= timestamp < self.to_ms


def plan_windows(start_ms: int, end_ms: int, window_ms: int) -> Iterator[Window]:
    """Consecutive windows from ``start_ms`` to ``end_ms``, each at most ``window_ms`` long."""
    if window_ms <= 0:
        msg = f"window length must be positive, got {window_ms} ms (check window_seconds)"
        raise ValueError(msg)
    low = start_ms
    while low < end_ms:
        high = min(low + window_ms, end_ms)
        yield Window(low, high)
        low = high


@dataclass(frozen=True)
class Cursor:
    """Where a log resumes: at ``millis``, after ``sequence_number`` (None: nothing emitted there).

    Sequence numbers are unique per log and ordered inside one millisecond, but not across
    milliseconds, so the resume point is the pair, never the sequence number alone.
    """

    millis: int
    sequence_number: int | None = None

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Cursor | None:
        """The cursor stored in one partition's state, or None when there is none."""
        millis = state.get(CURSOR_MILLIS_KEY)
        if millis is None:
            return None
        if isinstance(millis, bool) or not isinstance(millis, int | str):
            msg = f"state {CURSOR_MILLIS_KEY}={millis!r} is not an integer"
            raise ValueError(msg)
        sequence = state.get(CURSOR_SEQUENCE_KEY) or None
        return cls(int(millis), int(sequence) if sequence is not None else None)

    def state_fields(self) -> dict[str, int | str]:
        """The state entries for this cursor (an int and a string, never a float)."""
        sequence = "" if self.sequence_number is None else str(self.sequence_number)
        return {CURSOR_MILLIS_KEY: self.millis, CURSOR_SEQUENCE_KEY: sequence}

    def already_emitted(self, timestamp: int, sequence_number: int) -> bool:
        """True for events at or before this cursor in ``(timestamp, sequence_number)`` order."""
        if timestamp != self.millis:
            return timestamp < self.millis
        return self.sequence_number is not None and sequence_number <= self.sequence_number


@dataclass
class WindowFilter:
    """Decides, event by event, what one window of one log emits, and counts what it drops.

    ``resume`` is the cursor the window starts from (a stored state, or nothing); events at or
    before it were emitted by an earlier run. An entry's identity is ``(log_id, timestamp,
    sequence_number)`` (§11: sequence numbers are unique only within one millisecond); the log
    is fixed per filter, so dedupe is on ``(timestamp, sequence_number_str)``. That also absorbs
    the re-reads of a restarted query and of the millisecond before ``from`` that the reader
    asks for (so that a server excluding ``from`` still returns ``from`` itself).
    """

    window: Window
    resume: Cursor | None = None
    accepted: int = 0
    duplicates_dropped: int = 0
    out_of_window_dropped: int = 0
    resume_skipped: int = 0
    last_timestamp: int | None = None
    last_sequence_number: int | None = None
    _seen: set[tuple[int, str]] = field(default_factory=set, repr=False)

    def accept(self, timestamp: int, sequence_number: int, sequence_number_str: str) -> bool:
        """Return True when the event must be emitted; count it under its reason otherwise."""
        if not self.window.contains(timestamp):
            self.out_of_window_dropped += 1
            return False
        identity = (timestamp, sequence_number_str)
        if identity in self._seen:
            self.duplicates_dropped += 1
            return False
        if self.resume is not None and self.resume.already_emitted(timestamp, sequence_number):
            self.resume_skipped += 1
            return False
        self._seen.add(identity)
        self.accepted += 1
        if self.last_timestamp is None or (timestamp, sequence_number) > (
            self.last_timestamp,
            self.last_sequence_number,
        ):
            self.last_timestamp = timestamp
            self.last_sequence_number = sequence_number
        return True

    def start_from_ms(self) -> int:
        """The first millisecond still to read: the window start, the resume point, or the
        millisecond of the last accepted event after a restart (it may hold more events)."""
        if self.last_timestamp is not None:
            return self.last_timestamp
        if self.resume is not None:
            return max(self.window.from_ms, self.resume.millis)
        return self.window.from_ms

    def next_from_millis(self) -> int:
        """The cursor millisecond reached so far (for logs)."""
        if self.last_timestamp is None:
            return self.window.from_ms if self.resume is None else self.resume.millis
        return self.last_timestamp
