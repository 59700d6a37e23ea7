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
    "CURSOR_EMITTED_KEY",
    "CURSOR_FLOOR_KEY",
    "CURSOR_MILLIS_KEY",
    "CURSOR_SEQUENCE_KEY",
    "MAX_EMITTED_IN_STATE",
    "MAX_EVENTS",
    "Cursor",
    "SequenceOrder",
    "Window",
    "WindowFilter",
    "add_emitted",
    "iso_to_millis",
    "millis_to_iso",
    "plan_windows",
    "sync_end_millis",
]

# State keys per log partition (conventions: ints and strings only).
CURSOR_MILLIS_KEY = "next_from_millis"
CURSOR_SEQUENCE_KEY = "next_from_sequence_number_str"
# The sequence numbers already emitted in the cursor's millisecond, comma-joined (a string, so
# the state stays ints and strings). Rapid7 promises no order inside one millisecond (§11), so
# "everything up to the last one" is not a resume point: the resume skips exactly these.
CURSOR_EMITTED_KEY = "next_from_sequence_numbers_str"
# At most this many identities are kept per log (about 20 KB of state). A millisecond holding
# more keeps its most recent ones: a resume then re-emits (never loses) the older ones.
MAX_EMITTED_IN_STATE = 1000
# A state written before the list held only a floor (CURSOR_SEQUENCE_KEY: everything at the
# millisecond up to it was emitted, exact for the ascending order that version assumed). A run
# resuming from it keeps that floor here beside the list while it is still in that millisecond,
# so a stop there is exact too whatever order the rest of the millisecond comes in.
CURSOR_FLOOR_KEY = "next_from_sequence_floor_str"
# More events than any log holds in any range: at the budget's best (3 M an hour) about 38,000
# years of pulling. A count above it (or a negative one) is a broken answer, not a number.
MAX_EVENTS = 10**15

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
    """Where a log resumes: at ``millis``, skipping the events of that millisecond already emitted.

    ``emitted`` holds the sequence numbers emitted at ``millis`` (§11: an entry is the log, the
    millisecond and the sequence number; nothing promises that a millisecond is served in
    ascending sequence order, so only the exact set is a safe resume point). ``None`` with no
    ``sequence_number``: nothing emitted at ``millis`` (a window's end). ``None`` with one: a
    state written before the set existed, where ``sequence_number`` is a floor (everything at
    ``millis`` up to it was emitted), exact when the millisecond was served in ascending order,
    as that version assumed. Alongside the set, ``sequence_number`` is the last one emitted,
    and ``floor`` such an old state's floor when the run that wrote the set resumed from one.
    """

    millis: int
    sequence_number: int | None = None
    emitted: frozenset[int] | None = None
    floor: int | None = None

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
        listed = state.get(CURSOR_EMITTED_KEY)
        emitted: frozenset[int] | None = None
        if listed is not None:
            if not isinstance(listed, str):
                msg = f"state {CURSOR_EMITTED_KEY}={listed!r} is not a comma-separated string"
                raise ValueError(msg)
            emitted = frozenset(int(part) for part in listed.split(",") if part)
        floor = state.get(CURSOR_FLOOR_KEY) or None
        return cls(
            int(millis),
            int(sequence) if sequence is not None else None,
            emitted,
            int(floor) if floor is not None and emitted is not None else None,
        )

    def state_fields(self) -> dict[str, int | str]:
        """The state entries for this cursor (ints and strings, never a float)."""
        sequence = "" if self.sequence_number is None else str(self.sequence_number)
        fields: dict[str, int | str] = {
            CURSOR_MILLIS_KEY: self.millis,
            CURSOR_SEQUENCE_KEY: sequence,
        }
        if self.emitted is not None:
            fields[CURSOR_EMITTED_KEY] = ",".join(str(seq) for seq in sorted(self.emitted))
            if self.floor is not None:
                fields[CURSOR_FLOOR_KEY] = str(self.floor)
        return fields

    def already_emitted(self, timestamp: int, sequence_number: int) -> bool:
        """True for events an earlier run emitted: before ``millis``, or listed at ``millis``."""
        if timestamp != self.millis:
            return timestamp < self.millis
        if self.emitted is not None:
            below_floor = self.floor is not None and sequence_number <= self.floor
            return below_floor or sequence_number in self.emitted
        return self.sequence_number is not None and sequence_number <= self.sequence_number


def add_emitted(emitted: str, sequence_number_str: str) -> tuple[str, bool]:
    """``emitted`` (a comma-joined ``CURSOR_EMITTED_KEY`` value) with one more sequence number.

    Returns the new value and whether the oldest entry had to go to stay within
    ``MAX_EMITTED_IN_STATE`` (the resume then repeats that event, never loses one). Runs for
    every record: the count is only taken once the string is long enough to hold the cap.
    """
    if not emitted:
        return sequence_number_str, False
    joined = f"{emitted},{sequence_number_str}"
    if len(joined) < 2 * MAX_EMITTED_IN_STATE or joined.count(",") < MAX_EMITTED_IN_STATE:
        return joined, False
    return joined[joined.index(",") + 1 :], True


@dataclass
class SequenceOrder:
    """Notices a millisecond served out of ascending sequence order, once per millisecond.

    Nothing in Rapid7's spec promises that order (§11), and the cursor no longer needs it; but
    a server that changes its order is worth a line in the log. Events are checked in the order
    one query chain serves them (``restart`` at each new query), skipped and repeated ones too.
    """

    _last: tuple[int, int] | None = None
    _reported: set[int] = field(default_factory=set, repr=False)

    def restart(self) -> None:
        """A new query starts: its first event follows nothing."""
        self._last = None

    def check(self, timestamp: int, sequence_number: int) -> int | None:
        """The previous sequence number when this event breaks ascending order inside its
        millisecond and that millisecond was not reported yet; None otherwise."""
        last, self._last = self._last, (timestamp, sequence_number)
        if last is None or last[0] != timestamp or sequence_number >= last[1]:
            return None
        if timestamp in self._reported:
            return None
        self._reported.add(timestamp)
        return last[1]


@dataclass
class WindowFilter:
    """Decides, event by event, what one window of one log emits, and counts what it drops.

    ``resume`` is the cursor the window starts from (a stored state, or nothing); the events it
    names (earlier milliseconds, and those listed in its millisecond) were emitted by an
    earlier run. An entry's identity is ``(log_id, timestamp,
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
