"""`tap-rapid7-timeline`: draw a run's log as a PNG timeline of queries, pages and flushes.

Reading hundreds of `logsearch_page_complete` lines does not show where a run spent its time; a
picture does. The top panel has one lane per log (the tap's queries: waiting on the server's
polling, then pages) and one lane per stream (the target's flushes: building the Arrow table, then
writing the parquet part). The bottom panel shows events the tap had received against rows the
target had written: when the tap line is flat the pipeline waited on the API, when the target
steps while the tap is flat the tap waited on the target (the pipe is full during a flush).
When the tap logged its request budget (`logsearch_budget`, `logsearch_budget_summary`), a middle
panel shows how much of the query and poll budgets was left, the queries sent, and the 429s.

It reads any mix of: the plugins' own stderr (`event k=v ...` lines, with or without the SDK's
console prefix), `meltano run` output (Meltano's timestamp and trailing context fields), and the
SDK's JSON log format (`{"ts": ..., "message": ..., "extra": {...}}`), also wrapped by Meltano's
JSON log format (`{"event": "<plugin line>", "timestamp": ...}`).

The command streams its input: lines are read, parsed and reduced one at a time (a short
reordering buffer puts slightly shuffled lines back in time order, several logs are merged by
time), so memory does not grow with the log. What it keeps is bounded by what the picture can
show: past `MAX_SPANS` bars (`MAX_MARKERS` markers, `MAX_STEPS` points of each cumulative line,
`MAX_BUDGET_POINTS` budget lines), neighbours closer than a shrinking resolution are merged
(a long run is drawn at the picture's resolution, not bar by bar). A line that cannot be read
(a malformed time, a field that is not a number) is skipped and counted on stderr; a fatal
error is one line on stderr (`--log-level DEBUG` adds the traceback).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import heapq
import io
import itertools
import json
import math
import re
import sys
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugin_io.distribution import install_hint
from plugin_io.log_events import add_log_level_argument, parse_fields

__all__ = [
    "LogEvent",
    "LogReadError",
    "ReadStats",
    "build_timeline",
    "default_output",
    "events_in_time_order",
    "main",
    "parse_line",
    "parse_lines",
    "read_events",
    "render_timeline",
]

PROG = "tap-rapid7-timeline"
# What the picture keeps at most (module constants, read at each build): past these, nearby
# items are merged at a resolution that doubles until they fit in half (see `_Builder`).
MAX_SPANS = 20_000
MAX_MARKERS = 20_000
MAX_STEPS = 5000  # points of each cumulative line (events received, rows written)
MAX_BUDGET_POINTS = 2000
MAX_RATE_LIMIT_MARKS = 200  # 429 marks of each family (each is a line and a label)
# Lines written by several processes into one file are not quite in time order: an event is
# held until the log has gone this far past it (or this many events wait), then drawn.
REORDER_SECONDS = 60.0
REORDER_EVENTS = 5000
# A retry names its query by the window's end; the ends of this many recent windows are kept.
_KNOWN_WINDOW_ENDS = 256

# Events this command knows how to draw (docs/log-events.md).
EVENT_NAME = re.compile(r"(?<![\w=])((?:logsearch|flush|parquet_part)_[a-z_]+)(?=\s|$)")
# The budget families of `logsearch_budget` lines, and those the budget panel draws.
BUDGET_FAMILIES = ("query", "poll", "management")
_DRAWN_FAMILIES = ("query", "poll")
# The HTTP layer's `window="[query_from,window_to)"`.
_WINDOW_END = re.compile(r",\s*(\d+)[)\]]$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Meltano console lines: "2026-11-26T07:11:30.563788Z [info     ] <plugin line> cmd_type=...".
_MELTANO_TS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)(Z|[+-]\d{2}:?\d{2})?\s")
# SDK console format: "2026-11-26 07:11:30,563 | INFO     | logger | message".
_SDK_TS = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) \| ")
# Meltano appends its own context as trailing fields; they are not the plugin's.
_MELTANO_CONTEXT = frozenset(
    {
        "cmd_type",
        "consumer",
        "job_name",
        "name",
        "producer",
        "run_id",
        "stdio",
        "string_id",
        "plugin_logger",
        "stream_name",
        "state_id",
    }
)
# Meltano's key-value log format: timestamp='...' level='info' event='<plugin line>' ...
_KV_TIMESTAMP = re.compile(r"^timestamp='([^']+)'")
_KV_EVENT = re.compile(r"""\bevent=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


@dataclass
class LogEvent:
    """One structured event from a run's log: when, what, and its fields."""

    ts: float  # seconds since the epoch (from the log line's own clock)
    name: str
    fields: dict[str, Any] = field(default_factory=dict)


def _parse_iso(text: str, zone: str | None) -> float:
    """Epoch seconds of an ISO time; no zone or `Z` means UTC (Meltano writes UTC)."""
    stamp = datetime.fromisoformat(text + (zone if zone and zone != "Z" else ""))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _from_json(obj: dict[str, Any], outer_ts: float | None) -> LogEvent | None:
    """Read an SDK JSON record, or a Meltano JSON record wrapping a plugin line."""
    ts = outer_ts
    if isinstance(obj.get("ts"), int | float):
        ts = float(obj["ts"])
    elif isinstance(obj.get("timestamp"), str):
        with contextlib.suppress(ValueError):
            ts = _parse_iso(obj["timestamp"].rstrip("Z"), "Z")
    extra = obj.get("extra")
    if isinstance(extra, dict) and isinstance(extra.get("event_name"), str) and ts is not None:
        name = extra["event_name"]
        if EVENT_NAME.fullmatch(name):
            fields = {k: v for k, v in extra.items() if k != "event_name"}
            return LogEvent(ts, name, {k.removeprefix("field_"): v for k, v in fields.items()})
    for inner_key in ("message", "event"):
        inner = obj.get(inner_key)
        if isinstance(inner, str):
            found = parse_line(inner, default_ts=ts)
            if found is not None:
                return found
    return None


def parse_line(line: str, default_ts: float | None = None) -> LogEvent | None:
    """Return the structured event in one log line, or None when it holds none we draw."""
    line = _ANSI.sub("", line).strip()
    if not line:
        return None
    brace = line.find("{")
    if brace >= 0 and line.endswith("}"):
        try:
            obj = json.loads(line[brace:])
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            prefix = _MELTANO_TS.match(line)
            outer = _parse_iso(prefix.group(1), prefix.group(2)) if prefix else default_ts
            return _from_json(obj, outer)
    kv_time = _KV_TIMESTAMP.match(line)
    kv_event = _KV_EVENT.search(line) if kv_time else None
    if kv_time and kv_event:
        with contextlib.suppress(ValueError, SyntaxError):
            inner = ast.literal_eval(kv_event.group(1))
            return parse_line(inner, default_ts=_parse_iso(kv_time.group(1).rstrip("Z"), "Z"))
    match = EVENT_NAME.search(line)
    if match is None:
        return None
    ts = default_ts
    sdk = _SDK_TS.search(line[: match.start()])
    meltano = _MELTANO_TS.match(line)
    if sdk:  # the plugin's own clock (local time, as the SDK writes it) wins: it is per line
        ts = datetime.strptime(sdk.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        ts += int(sdk.group(2)) / 1000
    elif meltano:
        ts = _parse_iso(meltano.group(1), meltano.group(2))
    if ts is None:
        return None
    fields = parse_fields(line[match.end() :])
    if meltano:
        fields = {k: v for k, v in fields.items() if k not in _MELTANO_CONTEXT}
    return LogEvent(ts, match.group(1), fields)


def parse_lines(lines: Iterable[str]) -> list[LogEvent]:
    """Parse every line; lines without a known event (or without a time) are skipped.

    Also skipped: lines that cannot be read (`read_events`). The whole list, sorted by time:
    for tests and small logs; the command streams (`read_events`, `events_in_time_order`).
    """
    events = list(read_events(lines))
    events.sort(key=lambda event: event.ts)
    return events


# Every line holding an event we draw holds one of these (ANSI colour codes are removed first).
_EVENT_HINTS = ("logsearch_", "flush_", "parquet_part_", "\x1b[")
# The numeric fields the timeline reads from each event, and how it reads them.
_NUMBERS: dict[str, tuple[tuple[str, Callable[[Any], float]], ...]] = {
    "logsearch_page_complete": (("elapsed_seconds", float), ("polls", int), ("event_count", int)),
    "logsearch_pagination_stalled": (("elapsed_seconds", float), ("polls", int)),
    "logsearch_retry": (("wait_seconds", float),),
    "flush_complete": (("flush_total_ms", float), ("dataframe_build_ms", float), ("rows", int)),
}
_LANE_KEYS = ("window_from", "window_to")


@dataclass
class ReadStats:
    """What reading saw besides events: unreadable lines, event names without a time."""

    skipped: int = 0
    first_skipped: str = ""
    untimed_event: bool = False
    late: int = 0  # events more than REORDER_SECONDS behind one already drawn

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        if not self.first_skipped:
            self.first_skipped = f"{where}: {reason}"


def _problem(event: LogEvent) -> str | None:
    """Why the timeline cannot use this event (a field it reads is not a number), or None."""
    if not math.isfinite(event.ts):
        return f"time {event.ts} is not finite"
    fields = event.fields
    for key, read in _NUMBERS.get(event.name, ()):
        value = fields.get(key)
        try:
            number = read(value or 0)
        except (TypeError, ValueError, OverflowError):
            return f"{event.name} {key}={value!r} is not a number"
        if not math.isfinite(number):
            return f"{event.name} {key}={value!r} is not a finite number"
    for key in _LANE_KEYS:
        if isinstance(fields.get(key), list | dict):
            return f"{event.name} {key}={fields[key]!r} is not a single value"
    if event.name in {"logsearch_budget", "logsearch_budget_summary"}:
        for key, value in fields.items():
            if isinstance(value, float) and not math.isfinite(value):
                return f"{event.name} {key}={value!r} is not a finite number"
    return None


def read_events(
    lines: Iterable[str], stats: ReadStats | None = None, source: str = "line"
) -> Iterator[LogEvent]:
    """The events of ``lines``, one at a time, in the lines' order (nothing is held).

    A line that cannot be read (a time that is no date, a field the timeline reads that is not
    a number) is skipped and counted in ``stats`` with where it was (``source:N``).
    """
    stats = ReadStats() if stats is None else stats
    for number, line in enumerate(lines, start=1):
        if not any(hint in line for hint in _EVENT_HINTS):
            continue  # nothing we draw: cheaper than parsing
        try:
            event = parse_line(line)
        except (ValueError, OverflowError, TypeError, RecursionError) as exc:
            stats.skip(f"{source}:{number}", f"{type(exc).__name__}: {exc}")
            continue
        if event is None:
            if not stats.untimed_event and EVENT_NAME.search(line):
                stats.untimed_event = True
            continue
        problem = _problem(event)
        if problem is not None:
            stats.skip(f"{source}:{number}", problem)
            continue
        yield event


def events_in_time_order(
    events: Iterable[LogEvent], stats: ReadStats | None = None
) -> Iterator[LogEvent]:
    """``events`` by time, holding only the last ``REORDER_SECONDS`` (at most ``REORDER_EVENTS``).

    Events of equal time keep their order (as a stable sort would). One that comes more than
    that after a later one already went out is passed on where it is, and counted as late.
    """
    waiting: list[tuple[float, int, LogEvent]] = []
    newest = -math.inf
    latest_out = -math.inf
    for order, event in enumerate(events):
        heapq.heappush(waiting, (event.ts, order, event))
        newest = max(newest, event.ts)
        while waiting and (
            waiting[0][0] <= newest - REORDER_SECONDS or len(waiting) > REORDER_EVENTS
        ):
            ts, _, ready = heapq.heappop(waiting)
            if ts < latest_out and stats is not None:
                stats.late += 1
            latest_out = max(latest_out, ts)
            yield ready
    while waiting:
        ts, _, ready = heapq.heappop(waiting)
        if ts < latest_out and stats is not None:
            stats.late += 1
        latest_out = max(latest_out, ts)
        yield ready


# ---------------------------------------------------------------------------------------------
# From events to drawable spans


@dataclass
class Span:
    """A bar on a lane: [start, end) in seconds since the run's first event."""

    lane: str
    start: float
    end: float
    kind: str  # "wait" (query running, polls), "page", "build", "write", "retry"
    label: str = ""


@dataclass
class BudgetPoint:
    """One `logsearch_budget` (or `logsearch_budget_summary`) line: its time and flat fields."""

    t: float  # seconds since the run's first event
    fields: dict[str, Any]
    summary: bool = False


@dataclass
class Timeline:
    """Everything the picture shows, already reduced to spans, markers and two step lines."""

    origin: float
    spans: list[Span] = field(default_factory=list)
    markers: list[tuple[str, float, str]] = field(default_factory=list)  # lane, t, kind
    tap_events: list[tuple[float, int]] = field(default_factory=list)
    target_rows: list[tuple[float, int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    budget: list[BudgetPoint] = field(default_factory=list)
    # every budget line read (``budget`` may keep fewer: MAX_BUDGET_POINTS), summaries apart
    budget_lines: int = 0
    budget_summaries: int = 0
    # `(t, n)` per family: where its `*_rate_limited` counter went up by n (see rate_limited)
    rises: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    resolution: float = 0.0  # seconds within which neighbours were merged (0: none were)

    def budget_series(self, key: str) -> list[tuple[float, float]]:
        """`(t, value)` of one budget field (`query_remaining`, ...), skipping null values."""
        return [
            (point.t, point.fields[key])
            for point in self.budget
            if isinstance(point.fields.get(key), int | float)
            and not isinstance(point.fields.get(key), bool)
        ]

    def budget_fraction(self, family: str) -> list[tuple[float, float]]:
        """`(t, remaining / limit)` of a family where both are known (the limit is not 0)."""
        series = []
        for point in self.budget:
            remaining = point.fields.get(f"{family}_remaining")
            limit = point.fields.get(f"{family}_limit")
            if isinstance(remaining, int | float) and isinstance(limit, int | float) and limit:
                series.append((point.t, remaining / limit))
        return series

    def rate_limited(self, family: str) -> list[tuple[float, int]]:
        """`(t, n)` where `<family>_rate_limited` went up by n since the previous budget line.

        A counter that goes down is a new sync in the same log: it counts from 0 again.
        Counted as the lines are read (``rises``): every line, also those ``budget`` dropped.
        """
        return list(self.rises.get(family, []))

    @property
    def lanes(self) -> list[str]:
        """Lanes in order of first appearance: the tap's logs first, then the target's streams."""
        seen: dict[str, None] = {}
        for span in sorted(self.spans, key=lambda s: s.start):
            seen.setdefault(span.lane)
        for lane, _, _ in self.markers:
            seen.setdefault(lane)
        tap = [lane for lane in seen if lane.startswith("log ")]
        first: dict[str, int] = {}
        for lane in tap:
            first.setdefault(lane.split(" #")[0], len(first))
        tap.sort(key=lambda lane: (first[lane.split(" #")[0]], lane))
        return tap + [lane for lane in seen if not lane.startswith("log ")]


def _log_key(fields: dict[str, Any]) -> str:
    """The lane key of an event's `log_id`: a log, or a group of logs sharing one query.

    The reader names a group `<first id>+<n more>`; the HTTP layer's retries and polls of the
    same query name it `<id>:<id>:...`: both become `<first id>+<n>`.
    """
    log_id = str(fields.get("log_id", "?"))
    if ":" in log_id:
        first, *rest = log_id.split(":")
        return f"{first}+{len(rest)}"
    return log_id


def is_group(fields: dict[str, Any]) -> bool:
    """Whether an event is about one query over several logs."""
    logs = fields.get("logs")
    return "+" in _log_key(fields) or (isinstance(logs, int) and logs > 1)


class _QueryLanes:
    """The tap's lanes: one per log (or group of logs), plus one for each of its queries at once.

    With `max_concurrent_queries` > 1 the next windows of a log run side by side; giving each
    running query (log, window_from) the lowest free slot keeps bars from hiding each other. A
    log that goes on alone after its group's shared first page has no `logsearch_query_start`:
    its first page (or any event naming its window) takes a slot the same way. The HTTP layer's
    retries name the window only as `window="[query_from,window_to)"`: its end finds the query.
    """

    def __init__(self) -> None:
        self.running: dict[str, dict[Any, int]] = defaultdict(dict)
        self.ends: dict[str, dict[Any, Any]] = defaultdict(dict)  # window_to -> window_from

    @staticmethod
    def name(log_key: str, slot: int) -> str:
        first, plus, more = log_key.partition("+")
        return f"log {first[:8]}{plus}{more}" + (f" #{slot + 1}" if slot else "")

    def _take(self, log_key: str, fields: dict[str, Any]) -> int:
        slots = self.running[log_key]
        used = set(slots.values())
        slot = next(i for i in itertools.count() if i not in used)
        slots[fields.get("window_from")] = slot
        if fields.get("window_to") is not None:
            ends = self.ends[log_key]
            ends[fields["window_to"]] = fields.get("window_from")
            if len(ends) > _KNOWN_WINDOW_ENDS:  # bounded: a long run has many windows
                del ends[next(iter(ends))]
        return slot

    def start(self, fields: dict[str, Any]) -> str:
        log_key = _log_key(fields)
        return self.name(log_key, self._take(log_key, fields))

    def lane(self, fields: dict[str, Any], *, finish: bool = False) -> str:
        log_key = _log_key(fields)
        slots = self.running[log_key]
        key = fields.get("window_from")
        if key is None and isinstance(fields.get("window"), str):
            end = _WINDOW_END.search(fields["window"])
            key = self.ends[log_key].get(int(end.group(1))) if end else None
        if key in slots:
            slot = slots.pop(key) if finish else slots[key]
        elif key is not None and not finish:  # a page of a query whose start was not logged
            slot = self._take(log_key, fields)
        else:  # a retry or poll names no window: the log's first running query
            slot = min(slots.values(), default=0)
        return self.name(log_key, slot)


def build_timeline(events: Iterable[LogEvent]) -> Timeline:
    """Reduce the events (in time order) to spans: what each query waited for, each page, each
    flush. Consumed one at a time; what is kept is bounded (``MAX_SPANS``, ...), not the events.
    """
    builder = _Builder()
    for event in events:
        builder.add(event)
    return builder.finish()


def _bucket(t: float, quantum: float) -> int:
    return math.floor(t / quantum)


def _thin(cap: int, quantum: float, extent: float) -> float:
    """The next resolution to try: the extent over ``cap`` at first, then twice the last."""
    return quantum * 2 if quantum > 0 else max(extent, 1e-3) / max(cap, 1)


def _merge_spans(spans: list[Span], quantum: float) -> list[Span]:
    """The spans of a lane starting in one ``quantum`` bucket become one bar: at the first
    start, as long as their time together (so a lane busy 40% of the time still looks it), of
    the kind that took most of it."""
    buckets: dict[tuple[str, int], list[Span]] = {}
    for span in spans:
        buckets.setdefault((span.lane, _bucket(span.start, quantum)), []).append(span)
    merged: list[Span] = []
    for (lane, _), group in buckets.items():
        if len(group) == 1:
            merged.append(group[0])
            continue
        lengths: dict[str, float] = {}
        for item in group:
            lengths[item.kind] = lengths.get(item.kind, 0.0) + max(item.end - item.start, 0.0)
        start = min(item.start for item in group)
        reach = max(item.end for item in group) - start
        kind = max(lengths, key=lambda k: lengths[k])
        merged.append(Span(lane, start, start + min(sum(lengths.values()), reach), kind))
    merged.sort(key=lambda span: span.start)
    return merged


class _Builder:
    """The events, one at a time, into a `Timeline` whose lists stay within their caps."""

    def __init__(self) -> None:
        self.timeline: Timeline | None = None
        self.lanes = _QueryLanes()
        self.last_in_lane: dict[str, float] = {}
        self.flush_started: dict[str, float] = {}
        self.tap_total = 0
        self.rows_total = 0
        self.previous_rate_limited: dict[str, int] = {}
        self.last_ts = -math.inf
        # resolution of each kept list (0 until it first went over its cap)
        self.quantum = {"spans": 0.0, "markers": 0.0, "steps": 0.0, "budget": 0.0}

    def finish(self) -> Timeline:
        if self.timeline is None:
            raise ValueError("no tap or target events found in the log")
        return self.timeline

    @property
    def seconds(self) -> float:
        """From the first event to the last (latest) one."""
        return self.last_ts - self.finish().origin

    def add(self, event: LogEvent) -> None:
        if self.timeline is None:
            self.timeline = Timeline(origin=event.ts)
        timeline = self.timeline
        lanes, last_in_lane = self.lanes, self.last_in_lane
        self.last_ts = max(self.last_ts, event.ts)
        t = event.ts - timeline.origin
        fields = event.fields
        timeline.counts[event.name] += 1
        if event.name == "logsearch_query_start":
            last_in_lane[lanes.start(fields)] = t
        elif event.name in {"logsearch_page_complete", "logsearch_pagination_stalled"}:
            # a group's query has a single page: its lane is free again after it
            lane = lanes.lane(fields, finish=is_group(fields))
            elapsed = float(fields.get("elapsed_seconds") or 0.0)
            # elapsed_seconds covers this page's request and polls; never reach back past the
            # previous bar of the lane (a retry's back-off, the previous page).
            start = max(last_in_lane.get(lane, t - elapsed), t - elapsed)
            polls = int(fields.get("polls") or 0)
            kind = "wait" if polls > 0 else "page"
            label = f"p{fields.get('page', '')}" + (f" ·{polls} polls" if polls else "")
            self._span(Span(lane, start, t, kind, label))
            last_in_lane[lane] = t
            if event.name == "logsearch_pagination_stalled":
                self._marker((lane, t, "stalled"))
            else:
                self.tap_total += int(fields.get("event_count") or 0)
                self._step(timeline.tap_events, (t, self.tap_total))
        elif event.name == "logsearch_poll":
            if "log_id" in fields:
                self._marker((lanes.lane(fields), t, "poll"))
        elif event.name == "logsearch_retry":
            lane = lanes.lane(fields)
            wait = float(fields.get("wait_seconds") or 0.0)
            if wait > 0:
                reason = str(fields.get("reason", ""))
                self._span(Span(lane, t, t + wait, "retry", reason))
            # a query started again (expired or refused link) names where it restarts from
            self._marker((lane, t, "restart" if "restart_from" in fields else "retry"))
            last_in_lane[lane] = max(last_in_lane.get(lane, t), t + wait)
        elif event.name == "logsearch_beyond_retention":
            self._marker((lanes.lane(fields), t, "retention"))
        elif event.name == "logsearch_window_complete":
            self._marker((lanes.lane(fields, finish=True), t, "window"))
        elif event.name in {"logsearch_budget", "logsearch_budget_summary"}:
            self._budget(BudgetPoint(t, dict(fields), event.name == "logsearch_budget_summary"))
        elif event.name == "flush_start":
            self.flush_started[str(fields.get("stream", "?"))] = t
        elif event.name == "flush_complete":
            stream = str(fields.get("stream", "?"))
            total = float(fields.get("flush_total_ms") or 0.0) / 1000
            start = self.flush_started.pop(stream, t - total)
            build = float(fields.get("dataframe_build_ms") or 0.0) / 1000
            lane = f"flush {stream}"
            rows = int(fields.get("rows") or 0)
            split = min(start + build, t)
            self._span(Span(lane, start, split, "build", ""))
            self._span(Span(lane, split, t, "write", f"{rows} rows"))
            self.rows_total += rows
            self._step(timeline.target_rows, (t, self.rows_total))

    def _extent(self) -> float:
        return self.last_ts - self.finish().origin

    def _resolution(self, name: str, quantum: float) -> None:
        self.quantum[name] = quantum
        timeline = self.finish()
        timeline.resolution = max(timeline.resolution, quantum)

    def _span(self, span: Span) -> None:
        spans = self.finish().spans
        spans.append(span)
        if len(spans) <= MAX_SPANS:
            return
        quantum = self.quantum["spans"]
        merged = _merge_spans(spans, quantum) if quantum else spans
        while len(merged) > MAX_SPANS // 2 and quantum <= self._extent():
            quantum = _thin(MAX_SPANS, quantum, self._extent())
            merged = _merge_spans(merged, quantum)
        spans[:] = merged
        self._resolution("spans", quantum)

    def _marker(self, marker: tuple[str, float, str]) -> None:
        markers = self.finish().markers
        markers.append(marker)
        if len(markers) <= MAX_MARKERS:
            return
        quantum, kept = self.quantum["markers"], markers
        while True:
            if quantum:
                seen: set[tuple[str, str, int]] = set()
                kept = []
                for lane, t, kind in markers:  # the first marker of each kind in each bucket
                    key = (lane, kind, _bucket(t, quantum))
                    if key not in seen:
                        seen.add(key)
                        kept.append((lane, t, kind))
            if len(kept) <= MAX_MARKERS // 2 or quantum > self._extent():
                break
            quantum = _thin(MAX_MARKERS, quantum, self._extent())
        markers[:] = kept
        self._resolution("markers", quantum)

    def _step(self, series: list[tuple[float, int]], point: tuple[float, int]) -> None:
        """A cumulative line: past MAX_STEPS, the last point of each bucket (its level)."""
        if series and self.quantum["steps"]:
            quantum = self.quantum["steps"]
            if _bucket(series[-1][0], quantum) == _bucket(point[0], quantum):
                series[-1] = point
                return
        series.append(point)
        if len(series) <= MAX_STEPS:
            return
        quantum, kept = self.quantum["steps"], series
        while len(kept) > MAX_STEPS // 2 and quantum <= self._extent():
            quantum = _thin(MAX_STEPS, quantum, self._extent())
            last: dict[int, tuple[float, int]] = {}
            for item in kept:
                last[_bucket(item[0], quantum)] = item
            kept = list(last.values())
        series[:] = kept
        self._resolution("steps", quantum)

    def _budget(self, point: BudgetPoint) -> None:
        timeline = self.finish()
        timeline.budget_lines += 1
        timeline.budget_summaries += point.summary
        for family in BUDGET_FAMILIES:  # a counter that goes down is a new sync: from 0
            value = point.fields.get(f"{family}_rate_limited")
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            count, previous = int(value), self.previous_rate_limited.get(family, 0)
            rise = count - previous if count >= previous else count
            if rise > 0:
                rises = timeline.rises.setdefault(family, [])
                quantum = self.quantum["budget"]
                if (
                    quantum
                    and rises
                    and _bucket(rises[-1][0], quantum) == _bucket(point.t, quantum)
                ):
                    rises[-1] = (rises[-1][0], rises[-1][1] + rise)  # one mark per bucket
                else:
                    rises.append((point.t, rise))
            self.previous_rate_limited[family] = count
        budget = timeline.budget
        budget.append(point)
        if len(budget) <= MAX_BUDGET_POINTS and all(
            len(rises) <= MAX_RATE_LIMIT_MARKS for rises in timeline.rises.values()
        ):
            return
        quantum = self.quantum["budget"]
        kept, rises_kept = budget, timeline.rises
        while True:
            if quantum:
                last: dict[int, BudgetPoint] = {}
                for item in budget:  # a bucket's last line, or its last summary
                    key = _bucket(item.t, quantum)
                    if item.summary or not (key in last and last[key].summary):
                        last[key] = item
                kept = list(last.values())
                rises_kept = {
                    family: _sum_by_bucket(found, quantum)
                    for family, found in timeline.rises.items()
                }
            small = len(kept) <= MAX_BUDGET_POINTS // 2 and all(
                len(found) <= MAX_RATE_LIMIT_MARKS // 2 for found in rises_kept.values()
            )
            if small or quantum > self._extent():
                break
            quantum = _thin(MAX_BUDGET_POINTS, quantum, self._extent())
        budget[:] = kept
        timeline.rises = rises_kept
        self._resolution("budget", quantum)


def _sum_by_bucket(found: list[tuple[float, int]], quantum: float) -> list[tuple[float, int]]:
    """429 rises within one bucket as one: at the first one's time, their sum."""
    summed: dict[int, tuple[float, int]] = {}
    for t, rise in found:
        key = _bucket(t, quantum)
        first = summed.get(key)
        summed[key] = (first[0], first[1] + rise) if first else (t, rise)
    return list(summed.values())


# ---------------------------------------------------------------------------------------------
# Drawing

_COLOURS = {
    "wait": "#f4a259",  # the query is running on the server: we poll and wait
    "page": "#5b8e7d",  # a page came back (no polling needed)
    "build": "#8cb3d9",  # target: records -> Arrow table
    "write": "#1f5f99",  # target: parquet write + fsync + rename
    "retry": "#bc4b51",
}
_LEGEND = {
    "wait": "query running: polling (tap waits on the API)",
    "page": "page returned at once",
    "build": "flush: build Arrow table",
    "write": "flush: write parquet part",
    "retry": "retry back-off",
}
_MARKERS = {  # kind: (symbol, colour, legend)
    "poll": ("|", "#444444", ""),
    "retry": ("x", "#bc4b51", "retry"),
    "restart": ("o", "#bc4b51", "query restarted"),
    "stalled": ("v", "#bc4b51", "pagination stalled"),
    "retention": ("<", "#7a5195", "beyond retention"),
    "window": ("d", "#222222", "window complete"),
}
_BUDGET_COLOURS = {"query": "#6a4c93", "poll": "#f4a259"}
_RATE_LIMITED = "#d62828"


def render_timeline(timeline: Timeline, output: Path, title: str = "") -> None:
    """Draw the timeline to a PNG (matplotlib, headless)."""
    import matplotlib  # noqa: PLC0415  (optional dependency: the `plot` extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    lanes = timeline.lanes
    height = 2.5 + 0.45 * len(lanes)
    ratios = [max(len(lanes), 1) * 0.45 + 0.8, 2.4]
    if timeline.budget:
        ratios.insert(1, 2.4)
    fig, axes = plt.subplots(
        len(ratios), 1, figsize=(13, height + 2.8 * (len(ratios) - 1)), sharex=True,
        gridspec_kw={"height_ratios": ratios},
    )  # fmt: skip
    gantt, flow = axes[0], axes[-1]
    index = {lane: i for i, lane in enumerate(lanes)}
    extent = max((span.end for span in timeline.spans), default=1.0) or 1.0
    if timeline.resolution:  # a long log, merged to the picture's resolution: few artists
        _draw_merged(gantt, timeline, index, extent)
    else:  # one artist per bar and marker, as drawn ever since
        for span in timeline.spans:
            y = index[span.lane]
            width = max(span.end - span.start, 0.002)
            gantt.barh(
                y,
                width,
                left=span.start,
                height=0.6,
                color=_COLOURS[span.kind],
                edgecolor="white",
                linewidth=0.4,
                hatch="//" if span.kind == "retry" else None,
            )
            if span.label and span.kind != "retry" and width >= 0.06 * extent:  # room for it
                gantt.text(
                    span.start + width / 2,
                    y,
                    span.label,
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white",
                    clip_on=True,
                )
        for lane, t, kind in timeline.markers:
            symbol, colour, _ = _MARKERS[kind]
            offset = 0.42 if kind == "window" else 0
            gantt.plot(
                t,
                index[lane] + offset,
                marker=symbol,
                color=colour,
                markersize=5,
                linestyle="none",
                markerfacecolor="none" if kind == "restart" else colour,
            )
    gantt.set_yticks(range(len(lanes)), lanes)
    gantt.invert_yaxis()
    gantt.grid(axis="x", alpha=0.3)
    kinds = [kind for kind in _LEGEND if any(span.kind == kind for span in timeline.spans)]
    handles = [Patch(color=_COLOURS[kind], label=_LEGEND[kind]) for kind in kinds]
    marked = {kind for _, _, kind in timeline.markers}
    for kind, (symbol, colour, label) in _MARKERS.items():
        if label and kind in marked:
            face = "none" if kind == "restart" else colour
            handles.append(
                gantt.plot([], [], symbol, color=colour, markerfacecolor=face, label=label)[0]
            )
    gantt.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    counts = timeline.counts
    queries, pages = counts["logsearch_query_start"], counts["logsearch_page_complete"]
    gantt.set_title(
        title
        or (
            f"{queries} queries, {pages} pages, "
            f"{counts['flush_complete']} flushes, {counts['logsearch_retry']} retries"
        )
    )

    if timeline.budget:
        _draw_budget(timeline, axes[1])

    for series, label, colour in (
        (timeline.tap_events, "events received by the tap", "#5b8e7d"),
        (timeline.target_rows, "rows written by the target", "#1f5f99"),
    ):
        if series:
            xs = [0.0] + [t for t, _ in series]
            ys = [0] + [n for _, n in series]
            flow.step(xs, ys, where="post", label=label, color=colour)
    flow.set_ylabel("cumulative")
    started = datetime.fromtimestamp(timeline.origin, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    flow.set_xlabel(f"seconds since the first event in the log ({started})")
    flow.grid(alpha=0.3)
    if timeline.tap_events or timeline.target_rows:
        flow.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def _draw_merged(gantt: Any, timeline: Timeline, index: dict[str, int], extent: float) -> None:
    """The bars of each lane and kind as one collection, its markers as one line each."""
    bars: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for span in timeline.spans:
        width = max(span.end - span.start, 0.002)
        bars.setdefault((span.lane, span.kind), []).append((span.start, width))
        if span.label and span.kind != "retry" and width >= 0.06 * extent:  # room for it
            gantt.text(
                span.start + width / 2,
                index[span.lane],
                span.label,
                ha="center",
                va="center",
                fontsize=6.5,
                color="white",
                clip_on=True,
            )
    for (lane, kind), ranges in bars.items():
        bar = gantt.broken_barh(
            ranges,
            (index[lane] - 0.3, 0.6),
            facecolors=_COLOURS[kind],
            edgecolor="white",
            linewidth=0.4,
            hatch="//" if kind == "retry" else None,
        )
        bar.sticky_edges.x.append(min(start for start, _ in ranges))  # as barh: no left margin
    marks: dict[tuple[str, str], list[float]] = {}
    for lane, t, kind in timeline.markers:
        marks.setdefault((lane, kind), []).append(t)
    for (lane, kind), times in marks.items():
        symbol, colour, _ = _MARKERS[kind]
        offset = 0.42 if kind == "window" else 0
        gantt.plot(
            times,
            [index[lane] + offset] * len(times),
            marker=symbol,
            color=colour,
            markersize=5,
            linestyle="none",
            markerfacecolor="none" if kind == "restart" else colour,
        )


def _draw_budget(timeline: Timeline, panel: Any) -> None:
    """Budget left (share of each family's limit), queries sent (right axis) and 429s."""
    handles = []
    rate_limited = False
    for family in _DRAWN_FAMILIES:
        colour = _BUDGET_COLOURS[family]
        points = [
            (t, min(max(share, 0.0), 1.0) * 100) for t, share in timeline.budget_fraction(family)
        ]
        if points:
            limit = timeline.budget_series(f"{family}_limit")[-1][1]
            label = f"{family} budget left (limit {limit:g})"
            handles += panel.plot(
                *zip(*points, strict=True), "o-", color=colour, markersize=3.5, label=label
            )
        for t, rises in timeline.rate_limited(family):
            rate_limited = True
            # on the family's line where it has one (the nearest sample), else at the top
            y = min(points, key=lambda point: abs(point[0] - t), default=(t, 100.0))[1]
            panel.axvline(t, color=_RATE_LIMITED, linestyle=":", linewidth=1)
            text = f"{rises} 429s ({family})" if rises > 1 else f"429 ({family})"
            panel.annotate(
                text,
                (t, y),
                fontsize=7,
                color=_RATE_LIMITED,
                xytext=(3, 4),
                textcoords="offset points",
            )
    if rate_limited:
        handles += panel.plot(
            [],
            [],
            ":",
            color=_RATE_LIMITED,
            label="429: rate limited since the previous budget line",
        )
    panel.set_ylim(-3, 108)
    panel.set_ylabel("budget left, % of limit")
    panel.grid(alpha=0.3)
    queries = timeline.budget_series("query_requests")
    if queries:
        sent = panel.twinx()
        handles += sent.plot(
            *zip(*queries, strict=True),
            "s--",
            color="#555555",
            markersize=3,
            linewidth=1,
            label="query requests sent (cumulative, right)",
        )
        sent.set_ylabel("query requests")
        sent.set_ylim(0, max(n for _, n in queries) * 1.1 or 1)
    panel.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    summaries = timeline.budget_summaries
    panel.set_title(
        f"request budget: {timeline.budget_lines - summaries} logsearch_budget lines"
        + {0: "", 1: " + the sync's summary"}.get(summaries, f" + {summaries} summaries"),
        fontsize=9,
    )


class LogReadError(Exception):
    """A log that cannot be read (missing, unreadable, a directory): one line, exit status 2."""


def _lines(path: str) -> Iterator[str]:
    """The lines of one log (``-``: stdin), as UTF-8 (undecodable bytes replaced)."""
    name = "stdin" if path == "-" else path
    try:
        if path != "-":
            with open(path, encoding="utf-8", errors="replace") as handle:
                yield from handle
        elif getattr(sys.stdin, "buffer", None) is None:  # already text (an embedding caller)
            yield from sys.stdin
        else:
            stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
            try:
                yield from stdin
            finally:
                stdin.detach()  # stdin stays open
    except OSError as exc:
        raise LogReadError(f"cannot read {name}: {exc.strerror or exc}") from exc


def _events_of(paths: list[str], stats: ReadStats) -> Iterator[LogEvent]:
    """The events of every log, merged by time (each log in time order first)."""
    streams = [
        events_in_time_order(
            read_events(_lines(path), stats, "stdin" if path == "-" else path), stats
        )
        for path in paths
    ]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda event: event.ts)


def default_output(first_log: str) -> Path:
    """Where the PNG goes without ``-o``: beside the first log, not in the current directory."""
    if first_log == "-":
        return Path("timeline.png")
    log = Path(first_log)
    return log.with_name(f"{log.name}.timeline.png")


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr)


def _brief(exc: BaseException) -> str:
    """The exception's type and first line, and where the rest is."""
    text = str(exc).strip().splitlines()
    error = f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
    return f"{error} (--log-level DEBUG shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tap-rapid7-timeline LOG [LOG...] -o timeline.png`.

    Exit status: 0 drawn; 2 nothing to draw (a log that cannot be read, no events, no times);
    1 the picture could not be drawn or written. Each failure is one line on stderr.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Draw a run's log (tap/target stderr or `meltano run` output, text or JSON "
        "log format) as a PNG timeline of query polling, pages and flushes.",
    )
    parser.add_argument("logs", nargs="+", help="log files ('-' for stdin)")
    parser.add_argument(
        "-o",
        "--output",
        help="PNG to write (default: next to the first log, <log>.timeline.png; "
        "timeline.png when reading stdin)",
    )
    parser.add_argument("--title", default="", help="title above the lanes")
    add_log_level_argument(parser, more="; ERROR hides the notes on skipped lines")
    args = parser.parse_args(argv)
    debug = args.log_level == "DEBUG"
    try:
        return _run(args)
    except Exception as exc:  # a bug: still one line, the traceback at DEBUG
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        _say(f"failed: {_brief(exc)}")
        return 1


def _run(args: argparse.Namespace) -> int:
    stats = ReadStats()
    builder = _Builder()
    try:
        for event in _events_of(args.logs, stats):
            builder.add(event)
    except LogReadError as exc:
        _say(str(exc))
        return 2
    if builder.timeline is None:  # one line: what was missing, and what was skipped
        if stats.untimed_event:
            reason = (
                "the log has events but no timestamps (Meltano --log-format=plain?): "
                "use the default, json or key-value log format"
            )
        else:
            reason = "no tap or target events found in the log"
        if stats.skipped:
            reason += f"; {_skipped(stats)}"
        _say(reason)
        return 2
    if args.log_level != "ERROR":
        _notes(stats)
    timeline = builder.finish()
    output = Path(args.output) if args.output else default_output(args.logs[0])
    try:
        render_timeline(timeline, output, args.title)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "matplotlib":
            raise
        _say(f"drawing needs matplotlib: {install_hint('plot')}")
        return 1
    except OSError as exc:
        detail = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) != str(output):
            detail += f": {exc.filename}"  # a directory on the way
        _say(f"cannot write {output}: {detail}")
        return 1
    counts = timeline.counts
    print(
        f"timeline: {counts['logsearch_query_start']} queries, "
        f"{counts['logsearch_page_complete']} pages, {counts['flush_complete']} flushes, "
        f"{counts['logsearch_retry']} retries over "
        f"{builder.seconds:.1f}s -> {output}"
    )
    return 0


def _skipped(stats: ReadStats) -> str:
    lines = "line" if stats.skipped == 1 else "lines"
    return f"skipped {stats.skipped} {lines} that could not be read (first: {stats.first_skipped})"


def _notes(stats: ReadStats) -> None:
    """Lines skipped and events out of time order: one note each on stderr."""
    if stats.skipped:
        _say(_skipped(stats))
    if stats.late:
        events = "event" if stats.late == 1 else "events"
        _say(
            f"{stats.late} {events} came more than {REORDER_SECONDS:g}s after later ones: "
            "drawn where they fall"
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
