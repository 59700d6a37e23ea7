"""Running queries, Self polling links, pages and statistics.

A running query lives in a server-side registry under an opaque, colon-separated id (like the
real ids `<uuid>:<n>:<sha1>::<sha1>:`); its Self link `/query/{id}` is polled until the page is
ready, and expires when it has not been polled successfully for a TTL (sliding, like Rapid7's
"must be polled at least every 20 seconds"). A Next link is no registry entry: as Rapid7
documents, it is a new query, `/query/logs/{keys}?from=<ts of the last entry>&to=..&per_page=..
&sequence_number=<its seq>&next_page=true`. So a query's bounds are sort keys
(timestamp, sequence_number, log_index): `lower` inclusive, `upper` exclusive, and entries
that arrive late do not shift later pages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from logsearch_emulator import kvp
from logsearch_emulator.data import FRAGMENT_MID, LABELLED_TAILS, Event, SyntheticData
from logsearch_emulator.leql import Statement

REGISTRY_MAX_ENTRIES = 100_000
_CONTINUATION_ID = re.compile(
    r"^(?P<token>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r":(?P<n>[0-9]+):(?P<a>[0-9a-f]{40})::(?P<b>[0-9a-f]{40}):$"
)
STATS_SLICES = 10
# The end of every event's Context href; with `kvp_info=true` the href carries it too, as in
# Rapid7's examples.
CONTEXT_HREF_END = b'&context_type=SURROUND"}]'
CONTEXT_HREF_END_KVP = b'&context_type=SURROUND&kvp_info=true"}]'

Position = tuple[int, int, int]  # (timestamp, sequence_number, log_index)
_EDGE = (-1, -1)  # (seq, log_index) below every entry: (ts, -1, -1) is the start of ms `ts`


def query_bounds(
    from_ms: int,
    to_ms: int,
    *,
    from_inclusive: bool,
    to_inclusive: bool,
    sequence_number: int | None,
    most_recent_first: bool,
) -> tuple[Position, Position]:
    """(lower inclusive, upper exclusive) sort keys of a query's entries.

    Ascending, `sequence_number=S` makes the `from` millisecond contribute exactly its entries
    with sequence number > S (Rapid7's wording), whatever `from_inclusive` says. With
    `most_recent_first` the mirror: it applies to the `to` millisecond, which contributes its
    entries with sequence number < S (that is how a reversed Next link continues).
    """
    if sequence_number is not None and not most_recent_first:
        lower = (from_ms, sequence_number + 1, -1)
    else:
        lower = (from_ms if from_inclusive else from_ms + 1, *_EDGE)
    if sequence_number is not None and most_recent_first:
        upper = (to_ms, sequence_number, -1)
    else:
        upper = (to_ms + 1 if to_inclusive else to_ms, *_EDGE)
    return lower, upper


@dataclass(frozen=True)
class QuerySpec:
    """What a client asked for, validated."""

    log_indexes: tuple[int, ...]
    log_ids: tuple[str, ...]
    statement: Statement
    from_ms: int  # as sent, echoed in `during`
    to_ms: int  # as sent, echoed in `during`
    per_page: int
    most_recent_first: bool
    lower: Position  # inclusive sort key: no entry before it
    upper: Position  # exclusive sort key: no entry at or after it
    time_range: str | None = None  # echoed in `during` next to the bounds it resolved to
    label_ids: frozenset[str] | None = None  # `label`/`labels` filter (event searches only)
    kvp_info: bool = False  # `kvp_info=true`: events carry `kvp_info`, Next links keep it

    def leql(self) -> dict:
        during: dict = {"from": self.from_ms, "to": self.to_ms}
        if self.time_range is not None:
            during["time_range"] = self.time_range
        return {"statement": self.statement.text, "during": during}


@dataclass
class Continuation:
    """One registry entry: a started query in some stage of its async cycle."""

    id: str
    spec: QuerySpec
    touched_ms: int  # the start, then every successful poll: the TTL runs from here
    started_ms: int = 0
    polls: int = 0
    ready: bool = False
    followed_href: str | None = None  # the Next href (next_page=true) that started it
    beyond_retention: bool = False  # its `from` was older than the retention horizon
    non_page_served: bool = False  # a non-page body was answered once: the next is the page
    context: ContextSpec | None = None  # a Context query (`/query/context/{seq}`), not a search


@dataclass(frozen=True)
class ContextSpec:
    """A Context query: entries around one entry (`seq` at `ts`) of one log."""

    log_index: int
    log_id: str
    seq: int
    ts: int
    context_type: str  # BEFORE, AFTER or SURROUND
    per_page: int
    most_recent_first: bool
    kvp_info: bool


class Registry:
    """Thread-safe store of continuations with a sliding TTL and a size bound.

    Entries are kept in order of their last touch, so expired ones are pruned from the old end;
    the ids of pruned ones are remembered (bounded) so that polling one still counts as an
    expired link, once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Continuation] = OrderedDict()
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._counter = itertools.count(1)
        self._secret = secrets.token_hex(16)  # ids of this registry only verify here

    def _signatures(self, token: str, n: str) -> tuple[str, str]:
        a = hashlib.sha1(f"{self._secret}:{token}:{n}:a".encode(), usedforsecurity=False)
        b = hashlib.sha1(f"{self._secret}:{token}:{n}:b".encode(), usedforsecurity=False)
        return a.hexdigest(), b.hexdigest()

    def new_id(self) -> str:
        token = str(uuid.uuid4())
        n = str(next(self._counter))
        a, b = self._signatures(token, n)
        return f"{token}:{n}:{a}::{b}:"

    def is_valid_id(self, entry_id: str) -> bool:
        """Whether `entry_id` is an id this registry issued (well-formed, signatures match),
        whether or not it is still live: Rapid7 answers 400 "Invalid Continuation ID" for one
        that is not, and 404 for a valid one it no longer knows (expired)."""
        match = _CONTINUATION_ID.match(entry_id)
        if match is None:
            return False
        return (match["a"], match["b"]) == self._signatures(match["token"], match["n"])

    def add(self, entry: Continuation, ttl_seconds: float | None = None) -> None:
        """Store an entry; prune expired ones from the old end (least recently touched)."""
        with self._lock:
            self._entries[entry.id] = entry
            while len(self._entries) > REGISTRY_MAX_ENTRIES:
                self._entries.popitem(last=False)
            if ttl_seconds is not None:
                horizon = entry.touched_ms - ttl_seconds * 1000
                while self._entries:
                    oldest = next(iter(self._entries.values()))
                    if oldest.touched_ms >= horizon:
                        break
                    self._entries.popitem(last=False)
                    self._remember_expired(oldest.id)

    def _remember_expired(self, entry_id: str) -> None:
        self._expired[entry_id] = None
        while len(self._expired) > REGISTRY_MAX_ENTRIES:
            self._expired.popitem(last=False)

    def get(
        self, entry_id: str, now_ms: int, ttl_seconds: float | None
    ) -> tuple[Continuation | None, bool]:
        """Return (entry, expired): an entry not touched for more than the TTL has expired and
        is removed (`expired` is True once per link; later polls find an unknown id)."""
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None:
                expired = entry_id in self._expired
                self._expired.pop(entry_id, None)
                return None, expired
            if ttl_seconds is not None and now_ms - entry.touched_ms > ttl_seconds * 1000:
                del self._entries[entry_id]
                return None, True
            return entry, False

    def touch(self, entry: Continuation, now_ms: int) -> None:
        """A successful poll: the TTL starts again from `now_ms`."""
        with self._lock:
            entry.touched_ms = now_ms
            if entry.id in self._entries:
                self._entries.move_to_end(entry.id)

    def __len__(self) -> int:
        return len(self._entries)


def _visible(event: Event, now_ms: int, late_ms: float) -> bool:
    return event.ts <= now_ms and event.ts + int(event.late_fraction * late_ms) <= now_ms


def iter_matching(
    data: SyntheticData,
    spec: QuerySpec,
    now_ms: int,
    late_arrival_seconds: float,
    horizon_ms: int | None = None,
) -> Iterator[Event]:
    """Visible, matching entries with lower <= key < upper received at or after the retention
    horizon, in the query's order."""
    late_ms = late_arrival_seconds * 1000
    lo_ts, lo_rest = spec.lower[0], spec.lower[1:]
    hi_ts, hi_rest = spec.upper[0], spec.upper[1:]
    check_lo, check_hi = lo_rest != _EDGE, hi_rest != _EDGE
    lo = lo_ts if horizon_ms is None else max(lo_ts, horizon_ms)
    hi = min(hi_ts + 1 if check_hi else hi_ts, now_ms + 1)
    matches = spec.statement.matches
    label_ids = spec.label_ids if not spec.statement.is_count else None
    if label_ids is not None and label_ids.isdisjoint(LABELLED_TAILS):
        return  # no event carries any of the labels asked for
    for event in data.iter_logs(spec.log_indexes, lo, hi, spec.most_recent_first):
        ts = event.ts
        if check_lo and ts == lo_ts and (event.seq, event.log_index) < lo_rest:
            continue
        if check_hi and ts == hi_ts and (event.seq, event.log_index) >= hi_rest:
            continue
        if not _visible(event, now_ms, late_ms):
            continue
        if matches is not None and not matches(event.message):
            continue
        if label_ids is not None and event.label_id not in label_ids:
            continue
        yield event


def page_events(
    data: SyntheticData,
    spec: QuerySpec,
    now_ms: int,
    late_arrival_seconds: float,
    horizon_ms: int | None = None,
) -> tuple[list[Event], bool]:
    """The query's page of entries and whether more entries follow it."""
    events = list(
        itertools.islice(
            iter_matching(data, spec, now_ms, late_arrival_seconds, horizon_ms), spec.per_page + 1
        )
    )
    if len(events) > spec.per_page:
        return events[: spec.per_page], True
    return events, False


def render_page(
    spec: QuerySpec,
    events: list[Event],
    links: list[tuple[str, str]],
    base: str,
    rels: dict[str, str],
    *,
    kvp_shape: str = "flat",
    leql: dict | None = None,
) -> bytes:
    """The finished page body; event JSON comes pre-rendered from the data cache.

    `links` are (rel, href) pairs (a search's Next; a Context page's Prev/Next). Only with
    `spec.kvp_info` does an event gain `kvp_info` (computed here, per served event: the cached
    JSON and the fast path stay as they are without it)."""
    head = json.dumps(
        {"logs": list(spec.log_ids), "leql": spec.leql() if leql is None else leql},
        separators=(",", ":"),
    )[:-1].encode()
    rel, self_rel, base_bytes = rels["Context"].encode(), rels["Self"].encode(), base.encode()
    parts = [head, b',"events":[']
    if not spec.kvp_info:
        for i, event in enumerate(events):
            if i:
                parts.append(b",")
            parts += (event.head, rel, FRAGMENT_MID, base_bytes, event.tail)
            if event.label_tail:
                parts += (self_rel, FRAGMENT_MID, base_bytes, event.label_tail)
    else:
        for i, event in enumerate(events):
            if i:
                parts.append(b",")
            tail = event.tail.replace(CONTEXT_HREF_END, CONTEXT_HREF_END_KVP, 1)
            kvp_tail = b',"kvp_info":' + kvp.render(event.message, kvp_shape) + b"}"
            if event.label_tail:
                parts += (event.head, rel, FRAGMENT_MID, base_bytes, tail)
                parts += (self_rel, FRAGMENT_MID, base_bytes, event.label_tail[:-1], kvp_tail)
            else:
                parts += (event.head, rel, FRAGMENT_MID, base_bytes, tail[:-1], kvp_tail)
    parts.append(b"]")
    if links:
        parts.append(
            b',"links":'
            + json.dumps([{"rel": rels.get(r, r), "href": href} for r, href in links]).encode()
        )
    parts.append(b"}")
    return b"".join(parts)


def running_body(
    spec: QuerySpec,
    entry_id: str,
    progress: int,
    self_href: str,
    rels: dict[str, str],
    *,
    partial: dict | None = None,
) -> dict:
    """A running query's body (202 at the start, 200 on polls). A statistical one carries
    `partial`: the full `statistics` shape with the counts so far (see `statistics_body`)."""
    body: dict = {
        "logs": list(spec.log_ids),
        "leql": spec.leql(),
        "progress": progress,
        "id": entry_id,
        "events": [],
        "links": [{"rel": rels["Self"], "href": self_href}],
    }
    if spec.statement.is_count:
        body["partial"] = partial if partial is not None else empty_partial(spec)
    return body


def empty_partial(spec: QuerySpec) -> dict:
    """A running statistical query before anything matched: Rapid7's fixture answers inner
    `status` 204 with empty `stats` and `timeseries`."""
    span = _stats_span(spec)[1]
    return {
        "cardinality": 0,
        "granularity": math.ceil(span / STATS_SLICES),
        "from": spec.from_ms,
        "to": spec.to_ms,
        "type": "count",
        "stats": {},
        "groups": [],
        "others": {},
        "status": 204,
        "timeseries": {},
        "groups_timeseries": [],
        "all_exact_result": None,
        "count": 0,
    }


def _stats_span(spec: QuerySpec) -> tuple[int, int]:
    first_ts = spec.lower[0]
    return first_ts, max(1, spec.upper[0] + (1 if spec.upper[1:] != _EDGE else 0) - first_ts)


def statistics_body(
    data: SyntheticData,
    spec: QuerySpec,
    now_ms: int,
    late_arrival_seconds: float,
    horizon_ms: int | None = None,
    *,
    progress: int | None = None,
) -> dict:
    """The §3.4 `statistics` + `search_stats` answer of `calculate(count)`: exact counts of the
    entries the same query would page through (same bounds, same retention).

    With `progress` (0-99) it is a running query's `partial` instead: the statistics block
    alone, counting only the first `progress` percent of the window (the part scanned so far),
    inner `status` 200, or Rapid7's 204 with empty stats while nothing matched yet."""
    first_ts, span = _stats_span(spec)
    granularity = math.ceil(span / STATS_SLICES)
    slices = [0] * STATS_SLICES
    unfiltered = dataclasses.replace(
        spec, statement=Statement("", None, True), most_recent_first=False
    )
    if progress is not None:
        cut = first_ts + span * progress // 100
        if cut < unfiltered.upper[0]:
            unfiltered = dataclasses.replace(unfiltered, upper=(cut, *_EDGE))
    matches = spec.statement.matches
    checked = matched = 0
    for event in iter_matching(data, unfiltered, now_ms, late_arrival_seconds, horizon_ms):
        checked += 1
        if matches is None or matches(event.message):
            matched += 1
            slices[max(0, min(STATS_SLICES - 1, (event.ts - first_ts) // granularity))] += 1
    statistics = {
        "type": "count",
        "from": spec.from_ms,
        "to": spec.to_ms,
        "granularity": granularity,
        "count": matched,
        "cardinality": 0,
        "stats": {"global_timeseries": {"count": matched}},
        "timeseries": {"global_timeseries": [{"count": c} for c in slices]},
        "groups": [],
        "groups_timeseries": [],
        "others": {},
        "status": 200,
        "all_exact_result": None,
    }
    if progress is not None:
        return statistics if matched else empty_partial(spec)
    return {
        "logs": list(spec.log_ids),
        "leql": spec.leql(),
        "statistics": statistics,
        "search_stats": {
            "events_matched": matched,
            "events_checked": checked,
            "events_all": checked,
            "bytes_checked": 0,
            "bytes_all": 0,
            "duration_ms": 1,
            "index_factor": 1.0,
        },
    }
