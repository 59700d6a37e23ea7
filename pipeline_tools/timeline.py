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
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import itertools
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugin_io.distribution import install_hint
from plugin_io.log_events import parse_fields

__all__ = ["LogEvent", "default_output", "main", "parse_line", "parse_lines", "render_timeline"]

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
    """Parse every line; lines without a known event (or without a time) are skipped."""
    events = [event for line in lines if (event := parse_line(line)) is not None]
    events.sort(key=lambda event: event.ts)
    return events


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
        """
        found: list[tuple[float, int]] = []
        previous = 0
        for t, value in self.budget_series(f"{family}_rate_limited"):
            count = int(value)
            rise = count - previous if count >= previous else count
            if rise > 0:
                found.append((t, rise))
            previous = count
        return found

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
            self.ends[log_key][fields["window_to"]] = fields.get("window_from")
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


def build_timeline(events: list[LogEvent]) -> Timeline:
    """Reduce the events to spans: what each query waited for, each page, each flush."""
    if not events:
        raise ValueError("no tap or target events found in the log")
    origin = events[0].ts
    timeline = Timeline(origin=origin)
    lanes = _QueryLanes()
    last_in_lane: dict[str, float] = {}
    flush_started: dict[str, float] = {}
    tap_total = 0
    rows_total = 0
    for event in events:
        t = event.ts - origin
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
            timeline.spans.append(Span(lane, start, t, kind, label))
            last_in_lane[lane] = t
            if event.name == "logsearch_pagination_stalled":
                timeline.markers.append((lane, t, "stalled"))
            else:
                tap_total += int(fields.get("event_count") or 0)
                timeline.tap_events.append((t, tap_total))
        elif event.name == "logsearch_poll":
            if "log_id" in fields:
                timeline.markers.append((lanes.lane(fields), t, "poll"))
        elif event.name == "logsearch_retry":
            lane = lanes.lane(fields)
            wait = float(fields.get("wait_seconds") or 0.0)
            if wait > 0:
                reason = str(fields.get("reason", ""))
                timeline.spans.append(Span(lane, t, t + wait, "retry", reason))
            # a query started again (expired or refused link) names where it restarts from
            timeline.markers.append((lane, t, "restart" if "restart_from" in fields else "retry"))
            last_in_lane[lane] = max(last_in_lane.get(lane, t), t + wait)
        elif event.name == "logsearch_beyond_retention":
            timeline.markers.append((lanes.lane(fields), t, "retention"))
        elif event.name == "logsearch_window_complete":
            timeline.markers.append((lanes.lane(fields, finish=True), t, "window"))
        elif event.name in {"logsearch_budget", "logsearch_budget_summary"}:
            summary = event.name == "logsearch_budget_summary"
            timeline.budget.append(BudgetPoint(t, dict(fields), summary))
        elif event.name == "flush_start":
            flush_started[str(fields.get("stream", "?"))] = t
        elif event.name == "flush_complete":
            stream = str(fields.get("stream", "?"))
            total = float(fields.get("flush_total_ms") or 0.0) / 1000
            start = flush_started.pop(stream, t - total)
            build = float(fields.get("dataframe_build_ms") or 0.0) / 1000
            lane = f"flush {stream}"
            rows = int(fields.get("rows") or 0)
            split = min(start + build, t)
            timeline.spans.append(Span(lane, start, split, "build", ""))
            timeline.spans.append(Span(lane, split, t, "write", f"{rows} rows"))
            rows_total += rows
            timeline.target_rows.append((t, rows_total))
    return timeline


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
    summaries = sum(point.summary for point in timeline.budget)
    panel.set_title(
        f"request budget: {len(timeline.budget) - summaries} logsearch_budget lines"
        + {0: "", 1: " + the sync's summary"}.get(summaries, f" + {summaries} summaries"),
        fontsize=9,
    )


def _read(paths: list[str]) -> Iterator[str]:
    for path in paths:
        if path == "-":
            yield from sys.stdin
        else:
            with open(path, encoding="utf-8", errors="replace") as handle:
                yield from handle


def default_output(first_log: str) -> Path:
    """Where the PNG goes without ``-o``: beside the first log, not in the current directory."""
    if first_log == "-":
        return Path("timeline.png")
    log = Path(first_log)
    return log.with_name(f"{log.name}.timeline.png")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tap-rapid7-timeline LOG [LOG...] -o timeline.png`."""
    parser = argparse.ArgumentParser(
        prog="tap-rapid7-timeline",
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
    args = parser.parse_args(argv)
    try:
        lines = list(_read(args.logs))
        events = parse_lines(lines)
        if not events and any(EVENT_NAME.search(line) for line in lines):
            raise ValueError(
                "the log has events but no timestamps (Meltano --log-format=plain?): "
                "use the default, json or key-value log format"
            )
        timeline = build_timeline(events)
    except (OSError, ValueError) as exc:
        print(f"tap-rapid7-timeline: {exc}", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else default_output(args.logs[0])
    try:
        render_timeline(timeline, output, args.title)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "matplotlib":
            raise
        print(
            f"tap-rapid7-timeline: drawing needs matplotlib: {install_hint('plot')}",
            file=sys.stderr,
        )
        return 1
    counts = timeline.counts
    print(
        f"timeline: {counts['logsearch_query_start']} queries, "
        f"{counts['logsearch_page_complete']} pages, {counts['flush_complete']} flushes, "
        f"{counts['logsearch_retry']} retries over "
        f"{events[-1].ts - events[0].ts:.1f}s -> {output}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
