"""Running queries, continuations, pages and statistics.

Every Self and Next link points at `/query/{id}` where `id` is an opaque, colon-separated key
into a server-side registry (like the real ids `<uuid>:<n>:<sha1>::<sha1>:`). An entry holds the
query and the position (sort key of the first entry of its page), so links can expire (TTL) and a
Next link can start a new asynchronous cycle. Positions are keys, not offsets, so entries that
arrive late do not shift later pages.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from tap_rapid7.emulator.data import FRAGMENT_MID, Event, SyntheticData
from tap_rapid7.emulator.leql import Statement

REGISTRY_MAX_ENTRIES = 100_000
STATS_SLICES = 10

Position = tuple[int, int, int]  # (timestamp, sequence_number, log_index)


@dataclass(frozen=True)
class QuerySpec:
    """What a client asked for, validated."""

    log_indexes: tuple[int, ...]
    log_ids: tuple[str, ...]
    statement: Statement
    from_ms: int
    to_ms: int  # as sent, echoed in `during`
    upper_exclusive: int  # to_ms or to_ms + 1 when `to` is inclusive
    per_page: int
    most_recent_first: bool

    def leql(self) -> dict:
        return {"statement": self.statement.text,
                "during": {"from": self.from_ms, "to": self.to_ms}}


@dataclass
class Continuation:
    """One registry entry: a query positioned at a page, in some stage of its async cycle."""

    id: str
    spec: QuerySpec
    position: Position | None  # None: the beginning of the window
    issued_ms: int
    started: bool = False  # the 202/poll cycle has begun (always true for a new query)
    started_ms: int = 0
    polls: int = 0
    ready: bool = False
    next_id: str | None = None
    duplicate_pending: bool = False  # answer with a Next that repeats this entry's href once
    followed_from_next: bool = False  # this entry was reached through a Next link


class Registry:
    """Thread-safe store of continuations with TTL and a size bound."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Continuation] = OrderedDict()
        self._counter = itertools.count(1)

    def new_id(self) -> str:
        token = uuid.uuid4()
        n = next(self._counter)
        a = hashlib.sha1(f"{token}a".encode(), usedforsecurity=False).hexdigest()
        b = hashlib.sha1(f"{token}b".encode(), usedforsecurity=False).hexdigest()
        return f"{token}:{n}:{a}::{b}:"

    def add(self, entry: Continuation, ttl_seconds: float | None = None) -> None:
        """Store an entry; drop expired ones from the old end (entries are in issue order)."""
        with self._lock:
            self._entries[entry.id] = entry
            while len(self._entries) > REGISTRY_MAX_ENTRIES:
                self._entries.popitem(last=False)
            if ttl_seconds is not None:
                horizon = entry.issued_ms - ttl_seconds * 1000
                while self._entries:
                    oldest = next(iter(self._entries.values()))
                    if oldest.issued_ms >= horizon:
                        break
                    self._entries.popitem(last=False)

    def get(self, entry_id: str, now_ms: int, ttl_seconds: float | None
            ) -> tuple[Continuation | None, bool]:
        """Return (entry, expired). An expired entry is removed."""
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None:
                return None, False
            if ttl_seconds is not None and now_ms - entry.issued_ms > ttl_seconds * 1000:
                del self._entries[entry_id]
                return None, True
            return entry, False

    def __len__(self) -> int:
        return len(self._entries)


def _visible(event: Event, now_ms: int, late_ms: float) -> bool:
    return event.ts <= now_ms and event.ts + int(event.late_fraction * late_ms) <= now_ms


def iter_matching(data: SyntheticData, spec: QuerySpec, position: Position | None,
                  now_ms: int, late_arrival_seconds: float) -> Iterator[Event]:
    """Visible, matching entries of the window from `position` on, in the query's order."""
    late_ms = late_arrival_seconds * 1000
    lo, hi = spec.from_ms, min(spec.upper_exclusive, now_ms + 1)
    reverse = spec.most_recent_first
    if position is not None:
        if reverse:
            hi = min(hi, position[0] + 1)
        else:
            lo = max(lo, position[0])
    matches = spec.statement.matches
    for event in data.iter_logs(spec.log_indexes, lo, hi, reverse):
        if position is not None:
            key = (event.ts, event.seq, event.log_index)
            if (key > position) if reverse else (key < position):
                continue
        if not _visible(event, now_ms, late_ms):
            continue
        if matches is not None and not matches(event.message):
            continue
        yield event


def page_events(data: SyntheticData, spec: QuerySpec, position: Position | None, now_ms: int,
                late_arrival_seconds: float) -> tuple[list[Event], Position | None]:
    """One page of entries and the position of the next page (None: this is the last)."""
    events = list(itertools.islice(
        iter_matching(data, spec, position, now_ms, late_arrival_seconds), spec.per_page + 1))
    if len(events) > spec.per_page:
        nxt = events[spec.per_page]
        return events[:spec.per_page], (nxt.ts, nxt.seq, nxt.log_index)
    return events, None


def render_page(spec: QuerySpec, events: list[Event], next_href: str | None, base: str,
                rels: dict[str, str]) -> bytes:
    """The finished page body; event JSON comes pre-rendered from the data cache."""
    head = json.dumps({"logs": list(spec.log_ids), "leql": spec.leql()},
                      separators=(",", ":"))[:-1].encode()
    rel, base_bytes = rels["Context"].encode(), base.encode()
    parts = [head, b',"events":[']
    for i, event in enumerate(events):
        if i:
            parts.append(b",")
        parts += (event.head, rel, FRAGMENT_MID, base_bytes, event.tail)
    parts.append(b"]")
    if next_href is not None:
        parts.append(b',"links":' + json.dumps([{"rel": rels["Next"], "href": next_href}]).encode())
    parts.append(b"}")
    return b"".join(parts)


def running_body(spec: QuerySpec, entry_id: str, progress: int, self_href: str,
                 rels: dict[str, str]) -> dict:
    body: dict = {"logs": list(spec.log_ids), "leql": spec.leql(), "progress": progress,
                  "id": entry_id, "events": [],
                  "links": [{"rel": rels["Self"], "href": self_href}]}
    if spec.statement.is_count:
        body["partial"] = {"type": "count", "count": 0, "status": 200}
    return body


@dataclass
class CountResult:
    matched: int = 0
    checked: int = 0
    slices: list[int] = field(default_factory=list)


def statistics_body(data: SyntheticData, spec: QuerySpec, now_ms: int,
                    late_arrival_seconds: float) -> dict:
    """The §3.4 `statistics` + `search_stats` answer of `calculate(count)`: exact counts."""
    span = max(1, spec.upper_exclusive - spec.from_ms)
    granularity = math.ceil(span / STATS_SLICES)
    slices = [0] * STATS_SLICES
    unfiltered = QuerySpec(spec.log_indexes, spec.log_ids, Statement("", None, True),
                           spec.from_ms, spec.to_ms, spec.upper_exclusive, 1, False)
    matches = spec.statement.matches
    checked = matched = 0
    for event in iter_matching(data, unfiltered, None, now_ms, late_arrival_seconds):
        checked += 1
        if matches is None or matches(event.message):
            matched += 1
            slices[min(STATS_SLICES - 1, (event.ts - spec.from_ms) // granularity)] += 1
    return {
        "logs": list(spec.log_ids),
        "leql": spec.leql(),
        "statistics": {
            "type": "count", "from": spec.from_ms, "to": spec.to_ms,
            "granularity": granularity, "count": matched, "cardinality": 0,
            "stats": {"global_timeseries": {"count": matched}},
            "timeseries": {"global_timeseries": [{"count": c} for c in slices]},
            "groups": [], "groups_timeseries": [], "others": {},
            "status": 200, "all_exact_result": None,
        },
        "search_stats": {
            "events_matched": matched, "events_checked": checked, "events_all": checked,
            "bytes_checked": 0, "bytes_all": 0, "duration_ms": 1, "index_factor": 1.0,
        },
    }
