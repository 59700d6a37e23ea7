"""`tap-rapid7-timeline`: draw a run's log as a PNG timeline of queries, pages and flushes.

Reading hundreds of `logsearch_page_complete` lines does not show where a run spent its time; a
picture does. The top panel has one lane per log (the tap's queries: waiting on the server's
polling, then pages) and one lane per stream (the target's flushes: building the Arrow table, then
writing the parquet part). The bottom panel shows events the tap had received against rows the
target had written: when the tap line is flat the pipeline waited on the API, when the target
steps while the tap is flat the tap waited on the target (the pipe is full during a flush).

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

__all__ = ["LogEvent", "main", "parse_line", "parse_lines", "render_timeline"]

# Events this command knows how to draw (conventions.md "Log events").
EVENT_NAME = re.compile(r"(?<![\w=])((?:logsearch|flush|parquet_part)_[a-z_]+)(?=\s|$)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Meltano console lines: "2026-11-26T07:11:30.563788Z [info     ] <plugin line> cmd_type=...".
_MELTANO_TS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)(Z|[+-]\d{2}:?\d{2})?\s")
# SDK console format: "2026-11-26 07:11:30,563 | INFO     | logger | message".
_SDK_TS = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) \| ")
# Meltano appends its own context as trailing fields; they are not the plugin's.
_MELTANO_CONTEXT = frozenset(
    {"cmd_type", "consumer", "job_name", "name", "producer", "run_id", "stdio", "string_id",
     "plugin_logger", "stream_name", "state_id"}
)
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
# Meltano's key-value log format: timestamp='...' level='info' event='<plugin line>' ...
_KV_TIMESTAMP = re.compile(r"^timestamp='([^']+)'")
_KV_EVENT = re.compile(r"""\bevent=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_DECODER = json.JSONDecoder()
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None, "None": None}


@dataclass
class LogEvent:
    """One structured event from a run's log: when, what, and its fields."""

    ts: float  # seconds since the epoch (from the log line's own clock)
    name: str
    fields: dict[str, Any] = field(default_factory=dict)


def _bare(text: str) -> Any:
    """Turn a bare `k=v` value back into int, float, bool or None where it is one."""
    if text in _LITERALS:
        return _LITERALS[text]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_fields(text: str) -> dict[str, Any]:
    """Parse `k1=v1 k2="quoted" k3=[...]` (the `singer_eventlog` rendering) into a dict."""
    fields: dict[str, Any] = {}
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        match = _KEY.match(text, pos)
        if not match:
            break  # free text after the fields (or a malformed tail): stop, keep what we have
        key, pos = match.group(1), match.end()
        if pos < len(text) and text[pos] in "\"[{":
            try:
                value, pos = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError:
                end = text.find(" ", pos)
                end = len(text) if end < 0 else end
                value, pos = text[pos:end], end
        else:
            end = pos
            while end < len(text) and not text[end].isspace():
                end += 1
            value, pos = _bare(text[pos:end]), end
        fields[key] = value
    return fields


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
    fields = parse_fields(line[match.end():])
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
class Timeline:
    """Everything the picture shows, already reduced to spans, markers and two step lines."""

    origin: float
    spans: list[Span] = field(default_factory=list)
    markers: list[tuple[str, float, str]] = field(default_factory=list)  # lane, t, kind
    tap_events: list[tuple[float, int]] = field(default_factory=list)
    target_rows: list[tuple[float, int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def lanes(self) -> list[str]:
        """Lanes in order of first appearance: the tap's logs first, then the target's streams."""
        seen: dict[str, None] = {}
        for span in sorted(self.spans, key=lambda s: s.start):
            seen.setdefault(span.lane)
        for lane, _, _ in self.markers:
            seen.setdefault(lane)
        tap = [lane for lane in seen if lane.startswith("log ")]
        first = {}
        for lane in tap:
            first.setdefault(lane.split(" #")[0], len(first))
        tap.sort(key=lambda lane: (first[lane.split(" #")[0]], lane))
        return tap + [lane for lane in seen if not lane.startswith("log ")]


class _QueryLanes:
    """The tap's lanes: one per log, plus one more for each query of that log running at once.

    With `max_concurrent_queries` > 1 the next windows of a log run side by side; giving each
    running query (log, window_from) the lowest free slot keeps bars from hiding each other.
    """

    def __init__(self) -> None:
        self.running: dict[str, dict[Any, int]] = defaultdict(dict)

    @staticmethod
    def name(log_id: str, slot: int) -> str:
        return f"log {log_id[:8]}" + (f" #{slot + 1}" if slot else "")

    def start(self, fields: dict[str, Any]) -> str:
        log_id = str(fields.get("log_id", "?"))
        used = set(self.running[log_id].values())
        slot = next(i for i in itertools.count() if i not in used)
        self.running[log_id][fields.get("window_from")] = slot
        return self.name(log_id, slot)

    def lane(self, fields: dict[str, Any], *, finish: bool = False) -> str:
        log_id = str(fields.get("log_id", "?"))
        slots = self.running[log_id]
        key = fields.get("window_from")
        slot = slots.get(key, min(slots.values(), default=0))  # a retry names no window
        if finish:
            slots.pop(key, None)
        return self.name(log_id, slot)


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
            lane = lanes.lane(fields)
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
            timeline.spans.append(Span(lane, t, t + wait, "retry", str(fields.get("reason", ""))))
            timeline.markers.append((lane, t, "retry"))
            last_in_lane[lane] = t + wait
        elif event.name == "logsearch_window_complete":
            timeline.markers.append((lanes.lane(fields, finish=True), t, "window"))
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


def render_timeline(timeline: Timeline, output: Path, title: str = "") -> None:
    """Draw the timeline to a PNG (matplotlib, headless)."""
    import matplotlib  # noqa: PLC0415  (optional dependency: the `plot` extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    lanes = timeline.lanes
    height = 2.5 + 0.45 * len(lanes)
    fig, (gantt, flow) = plt.subplots(
        2, 1, figsize=(13, height + 2.8), sharex=True,
        gridspec_kw={"height_ratios": [max(len(lanes), 1) * 0.45 + 0.8, 2.4]},
    )
    index = {lane: i for i, lane in enumerate(lanes)}
    extent = max((span.end for span in timeline.spans), default=1.0) or 1.0
    for span in timeline.spans:
        y = index[span.lane]
        width = max(span.end - span.start, 0.002)
        gantt.barh(y, width, left=span.start, height=0.6, color=_COLOURS[span.kind],
                   edgecolor="white", linewidth=0.4, hatch="//" if span.kind == "retry" else None)
        if span.label and span.kind != "retry" and width >= 0.06 * extent:  # room for it
            gantt.text(span.start + width / 2, y, span.label, ha="center", va="center",
                       fontsize=6.5, color="white", clip_on=True)
    marker_style = {"poll": ("|", "#444444"), "retry": ("x", "#bc4b51"),
                    "stalled": ("v", "#bc4b51"), "window": ("d", "#222222")}
    for lane, t, kind in timeline.markers:
        symbol, colour = marker_style[kind]
        gantt.plot(t, index[lane] + (0.42 if kind == "window" else 0), marker=symbol,
                   color=colour, markersize=5, linestyle="none")
    gantt.set_yticks(range(len(lanes)), lanes)
    gantt.invert_yaxis()
    gantt.grid(axis="x", alpha=0.3)
    kinds = [kind for kind in _LEGEND if any(span.kind == kind for span in timeline.spans)]
    handles = [Patch(color=_COLOURS[kind], label=_LEGEND[kind]) for kind in kinds]
    if any(kind == "window" for _, _, kind in timeline.markers):
        handles.append(gantt.plot([], [], "d", color="#222222", label="window complete")[0])
    gantt.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3,
                 fontsize=8, frameon=False)
    counts = timeline.counts
    gantt.set_title(title or (
        f"{counts['logsearch_query_start']} queries, {counts['logsearch_page_complete']} pages, "
        f"{counts['flush_complete']} flushes, {counts['logsearch_retry']} retries"
    ))

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


def _read(paths: list[str]) -> Iterator[str]:
    for path in paths:
        if path == "-":
            yield from sys.stdin
        else:
            with open(path, encoding="utf-8", errors="replace") as handle:
                yield from handle


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tap-rapid7-timeline LOG [LOG...] -o timeline.png`."""
    parser = argparse.ArgumentParser(
        prog="tap-rapid7-timeline",
        description="Draw a run's log (tap/target stderr or `meltano run` output, text or JSON "
        "log format) as a PNG timeline of query polling, pages and flushes.",
    )
    parser.add_argument("logs", nargs="+", help="log files ('-' for stdin)")
    parser.add_argument("-o", "--output", default="timeline.png", help="PNG to write")
    parser.add_argument("--title", default="", help="title above the lanes")
    args = parser.parse_args(argv)
    try:
        lines = list(_read(args.logs))
        events = parse_lines(lines)
        if not events and any(EVENT_NAME.search(line) for line in lines):
            raise ValueError("the log has events but no timestamps (Meltano --log-format=plain?): "
                             "use the default, json or key-value log format")
        timeline = build_timeline(events)
    except (OSError, ValueError) as exc:
        print(f"tap-rapid7-timeline: {exc}", file=sys.stderr)
        return 2
    render_timeline(timeline, Path(args.output), args.title)
    counts = timeline.counts
    print(
        f"timeline: {counts['logsearch_query_start']} queries, "
        f"{counts['logsearch_page_complete']} pages, {counts['flush_complete']} flushes, "
        f"{counts['logsearch_retry']} retries over "
        f"{events[-1].ts - events[0].ts:.1f}s -> {args.output}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
