"""The result of a reconciliation and how it is shown: a table for people, JSON for machines.

Part of `tap-rapid7-reconcile`. Every mismatch becomes a finding that names the log, the window,
the parts or the rows at fault, and the text ends with the classic causes of count differences,
so that "the console says 402 and the lake 18,957" turns into an answer. With the two clocks
(`EventClocks`) it also shows the same windows counted by the event's own time, which is usually
what the console was counting.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline_tools.reconcile.dataset import (
    ClockCounts,
    DuplicateGroup,
    EventClocks,
    StrayRow,
    window_start,
)

__all__ = [
    "CAUSES",
    "CLOCKS_LEGEND",
    "CLOCK_NOTE",
    "Report",
    "WindowResult",
    "iso",
    "render_json",
    "render_table",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CLOCK_NOTE = (
    "Counts use each entry's `timestamp` (when Rapid7 received it; `received_at` in the "
    "dataset), the clock that `from`/`to` and the tap's windows filter on. The event's own time "
    "inside `message` (`event_time`, when the tap's event_time_fields is set) is earlier (seconds "
    "to hours), so counting by event time gives different numbers for the same window: "
    "`--clocks` shows both."
)

CLOCKS_LEGEND = (
    "The API and this tap window by the time Rapid7 received an entry; consoles and SIEM "
    "searches usually filter by the event's own time; the difference is entries that arrived "
    "late (or early) relative to their own time."
)

CAUSES = {
    "duplicates": (
        "Duplicates (same log_id + timestamp + sequence_number_str more than once; a sequence "
        "number alone repeats across milliseconds and is not a duplicate): a window counted twice "
        "(overlapping windows, or a server that treats `to` as inclusive so the boundary "
        "millisecond comes back in the next window), a page delivered twice (a retried or "
        "repeated Next link), or a part copied/re-run without the tap's state. The tap drops "
        "these itself, so parts named above were written twice or by another pipeline."
    ),
    "missing": (
        "Missing (API count above the dataset's distinct keys): a part deleted or never "
        "written, a sync that has not reached the window yet (see `next_from_millis` in "
        "`meltano state get`), entries the API made visible later than `lag_seconds` after "
        "their `timestamp` (receipt), or a different `query` filter between the tap and this check."
    ),
    "extra": (
        "Extra (dataset holds more distinct keys than the API counts): rows written by another "
        "filter/query or another account, or events the API no longer returns (retention)."
    ),
    "outside": (
        "Rows outside the checked range: the dataset holds more than [from, to) (pass the range "
        "the pipeline loaded, or `--subset` to check only inside it), or a window edge "
        "included twice (an inclusive `to`: rows at exactly `to` belong to the next window)."
    ),
}


def iso(millis: int) -> str:
    """Epoch ms as a compact UTC ISO time (ms shown only when not zero)."""
    stamp = _EPOCH + timedelta(milliseconds=millis)  # integers: never a millisecond off
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if millis % 1000:
        text += f".{millis % 1000:03d}"
    return text + "Z"


@dataclass
class WindowResult:
    """One row of the table: the API's count against the dataset for one (log, window)."""

    log_id: str
    window_from: int
    window_to: int
    api_count: int
    rows: int
    distinct: int
    # Filled by --list-keys for windows that do not match: samples of (timestamp, key).
    missing_keys: list[tuple[int, str]] | None = None
    extra_keys: list[tuple[int, str]] | None = None

    @property
    def duplicates(self) -> int:
        """Rows beyond the first per key."""
        return self.rows - self.distinct

    @property
    def missing(self) -> int:
        """Events the API counts that the dataset lacks (a deficit of distinct keys)."""
        return max(self.api_count - self.distinct, 0)

    @property
    def extra(self) -> int:
        """Distinct keys the dataset has beyond the API's count."""
        return max(self.distinct - self.api_count, 0)

    @property
    def ok(self) -> bool:
        """True when rows, distinct keys and the API count all agree."""
        return self.rows == self.distinct == self.api_count

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form including the derived columns."""
        return {
            "log_id": self.log_id,
            "window_from": self.window_from,
            "window_to": self.window_to,
            "window_from_iso": iso(self.window_from),
            "window_to_iso": iso(self.window_to),
            "api_count": self.api_count,
            "rows": self.rows,
            "distinct_keys": self.distinct,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "extra": self.extra,
            "ok": self.ok,
            **(
                {"missing_keys": [list(k) for k in self.missing_keys]}
                if self.missing_keys is not None
                else {}
            ),
            **(
                {"extra_keys": [list(k) for k in self.extra_keys]}
                if self.extra_keys is not None
                else {}
            ),
        }


def _keys_note(keys: list[tuple[int, str]] | None) -> str:
    """`; e.g. key K at T, ...` for a finding, when --list-keys listed them."""
    if not keys:
        return ""
    shown = ", ".join(f"{seq} at {iso(ts)}" for ts, seq in keys[:5])
    return f"; e.g. {shown}"


@dataclass
class Report:
    """The whole reconciliation."""

    dataset: str
    stream: str
    api: str
    from_ms: int
    to_ms: int
    window_ms: int
    parts: int
    subset: bool
    windows: list[WindowResult] = field(default_factory=list)
    strays: dict[str, int] = field(default_factory=dict)
    stray_samples: list[StrayRow] = field(default_factory=list)
    duplicate_groups: list[DuplicateGroup] = field(default_factory=list)
    clocks: EventClocks | None = None  # the windows by event time too (--clocks, --json)
    source: str = ""  # what was read when not plain parts (an Iceberg table and snapshot)

    def clock_counts(self, window: WindowResult) -> ClockCounts:
        """The event-time figures of one row of the table (zeros when nothing was seen)."""
        if self.clocks is None:
            return ClockCounts()
        key = (window.log_id, window_start(window.window_from, self.window_ms))
        return self.clocks.windows.get(key, ClockCounts())

    def part_name(self, path: str) -> str:
        prefix = self.dataset.rstrip("/") + "/"
        return path.removeprefix(prefix)

    @property
    def findings(self) -> list[tuple[str, str]]:
        """(kind, sentence) for every problem, most specific first; empty when all is well."""
        found: list[tuple[str, str]] = []
        for group in self.duplicate_groups:
            names = ", ".join(self.part_name(path) for path in group.parts)
            count = len(group.parts)
            where = "inside one part" if count == 1 else f"across {count} parts"
            sample = ", ".join(f"{log}/{iso(ts)}/{seq}" for log, ts, seq in group.sample)
            found.append(
                (
                    "duplicates",
                    f"duplicate part: {group.keys} keys written {group.rows} "
                    f"times {where}: {names} (e.g. {sample})",
                )
            )
        for window in self.windows:
            span = f"log {window.log_id} [{iso(window.window_from)}, {iso(window.window_to)})"
            if window.missing:
                found.append(
                    (
                        "missing",
                        f"missing: {span}: the API counts {window.api_count}, "
                        f"the dataset has {window.distinct} distinct keys "
                        f"({window.missing} missing)" + _keys_note(window.missing_keys),
                    )
                )
            if window.extra:
                found.append(
                    (
                        "extra",
                        f"extra: {span}: the dataset has {window.distinct} distinct "
                        f"keys, the API counts {window.api_count} ({window.extra} extra)"
                        + _keys_note(window.extra_keys),
                    )
                )
        if not self.subset:
            for log_id, count in sorted(self.strays.items()):
                samples = [row for row in self.stray_samples if row.log_id == log_id][:3]
                shown = "; ".join(
                    f"timestamp {iso(row.timestamp)} key {row.sequence_number_str} in "
                    f"{self.part_name(row.part)}"
                    for row in samples
                )
                found.append(
                    (
                        "outside",
                        f"outside the window: {count} rows of log {log_id} lie "
                        f"outside [{iso(self.from_ms)}, {iso(self.to_ms)}): {shown}",
                    )
                )
        return found

    @property
    def ok(self) -> bool:
        """True when nothing is missing, duplicated, extra or out of range."""
        return not self.findings


def render_table(report: Report) -> str:
    """The human-readable report: header, one row per (log, window), findings, causes."""
    read = (
        f"{report.source}, {report.parts} data files" if report.source else f"{report.parts} parts"
    )
    lines = [
        f"dataset {report.dataset} (stream {report.stream}, {read}) vs {report.api}",
        f"range [{iso(report.from_ms)}, {iso(report.to_ms)}), windows of "
        f"{report.window_ms // 1000}s",
        "",
    ]
    header = (
        "log",
        "window from (UTC)",
        "window to (UTC)",
        "api",
        "rows",
        "distinct",
        "dup",
        "missing",
        "extra",
        "status",
    )
    rows = [header]
    for window in report.windows:
        rows.append((
            window.log_id[:8], iso(window.window_from), iso(window.window_to),
            str(window.api_count), str(window.rows), str(window.distinct),
            str(window.duplicates), str(window.missing), str(window.extra),
            "ok" if window.ok else "MISMATCH",
        ))  # fmt: skip
    total_api = sum(window.api_count for window in report.windows)
    total_rows = sum(window.rows for window in report.windows)
    total_distinct = sum(window.distinct for window in report.windows)
    rows.append(
        (
            "total",
            "",
            "",
            str(total_api),
            str(total_rows),
            str(total_distinct),
            str(total_rows - total_distinct),
            str(sum(w.missing for w in report.windows)),
            str(sum(w.extra for w in report.windows)),
            "ok" if all(w.ok for w in report.windows) else "MISMATCH",
        )
    )
    lines.extend(_aligned_table(rows, {3, 4, 5, 6, 7, 8}))
    outside = sum(report.strays.values())
    logs = dict.fromkeys(window.log_id for window in report.windows)
    lines.append("logs: " + ", ".join(f"{log_id[:8]} = {log_id}" for log_id in logs))
    lines.append("")
    lines.append(
        "rows outside the range: not checked (--subset)"
        if report.subset
        else f"rows outside the range: {outside}"
    )
    findings = report.findings
    if findings:
        lines.append("")
        lines.append(f"MISMATCH: {len(findings)} finding(s)")
        lines.extend(f"  - {sentence}" for _, sentence in findings)
        lines.append("")
        lines.append("Likely causes:")
        for kind in dict.fromkeys(kind for kind, _ in findings):
            lines.append(f"  * {CAUSES[kind]}")
    else:
        lines.append("OK: every window matches (API count = rows = distinct keys)")
    if report.clocks is not None:
        lines.append("")
        lines.extend(_clock_lines(report, report.clocks))
    lines.append("")
    lines.append(f"Note: {CLOCK_NOTE}")
    return "\n".join(lines)


def _aligned_table(rows: Sequence[tuple[str, ...]], numeric: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def _seconds(millis: int) -> str:
    """A duration as the options take it: `60s`, `15m`, `1h`, `1d`."""
    if millis % 1000:
        return f"{millis / 1000:g}s"
    seconds = millis // 1000
    if seconds and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds > 60 and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _clock_lines(report: Report, clocks: EventClocks) -> list[str]:
    """The second table: each window by receipt time (what the API counts) and by event time."""
    if not clocks.available:
        return [f"Two clocks: not available: {clocks.reason}."]
    late = _seconds(clocks.late_after_ms)
    header = (
        "log",
        "window from (UTC)",
        "window to (UTC)",
        "api",
        "received",
        "event time",
        "both",
        "no time",
        f"late>{late}",
        f"early>{late}",
    )
    rows = [header]
    totals = ClockCounts()
    for window in report.windows:
        counts = report.clock_counts(window)
        _add(totals, counts)
        rows.append(
            (
                window.log_id[:8],
                iso(window.window_from),
                iso(window.window_to),
                str(window.api_count),
                str(window.rows),
                str(counts.by_event_time),
                str(counts.both),
                str(counts.no_event_time),
                str(counts.late),
                str(counts.early),
            )
        )
    rows.append(
        (
            "total",
            "",
            "",
            str(sum(w.api_count for w in report.windows)),
            str(sum(w.rows for w in report.windows)),
            str(totals.by_event_time),
            str(totals.both),
            str(totals.no_event_time),
            str(totals.late),
            str(totals.early),
        )
    )
    lines = ["Two clocks (dataset rows; the API counts by receipt time):"]
    lines.extend(_aligned_table(rows, {3, 4, 5, 6, 7, 8, 9}))
    lines.extend(textwrap.wrap(CLOCKS_LEGEND, 100, initial_indent="  ", subsequent_indent="  "))
    lines.extend(
        [
            "  received   rows Rapid7 received in the window (timestamp / received_at): what the "
            "API counts",
            "  event time rows whose own event_time is in the window, whenever they were received",
            "  both       rows with both clocks in the window",
            "  no time    rows received in the window without an event_time (none found in the "
            "message, or the tap's event_time_fields not set)",
            f"  late/early rows received in the window more than {late} after/before their "
            "event_time (--late-after)",
        ]
    )
    read = f"[{iso(clocks.read_from)}, {iso(clocks.read_to)})"
    margin = _seconds(clocks.margin_ms)
    lines.extend(
        textwrap.wrap(
            f"Rows were read by receipt time over {read}, the range plus {margin} on each side "
            "(--late-margin): events whose receipt is beyond the margin are not seen, so "
            "`event time` may be short near the range's edges.",
            100,
            initial_indent="  ",
            subsequent_indent="  ",
        )
    )
    if clocks.rows_with_event_time == 0:
        lines.append(
            "  No row read has an event_time: set the tap's event_time_fields (where the "
            "event's own time is in the message) and load again to compare the clocks."
        )
    if clocks.parts_without_event_time:
        lines.append(
            f"  {clocks.parts_without_event_time} part(s) were written by an older tap "
            "(no received_at; their event_time is the receipt time): their rows count "
            "as having no event time."
        )
    return lines


def _add(total: ClockCounts, counts: ClockCounts) -> None:
    total.by_event_time += counts.by_event_time
    total.both += counts.both
    total.no_event_time += counts.no_event_time
    total.late += counts.late
    total.early += counts.early


def _clocks_json(report: Report, clocks: EventClocks) -> dict[str, Any]:
    """The `clocks` section of the JSON report (only `available` and `reason` when not)."""
    if not clocks.available:
        return {"available": False, "reason": clocks.reason}
    windows = []
    totals = ClockCounts()
    for window in report.windows:
        counts = report.clock_counts(window)
        _add(totals, counts)
        windows.append({
            "log_id": window.log_id, "window_from": window.window_from,
            "window_to": window.window_to, "window_from_iso": iso(window.window_from),
            "window_to_iso": iso(window.window_to), "api_count": window.api_count,
            "rows_by_received_at": window.rows, **_counts_json(counts),
        })  # fmt: skip
    return {
        "available": True,
        "late_after_seconds": clocks.late_after_ms / 1000,
        "late_margin_seconds": clocks.margin_ms / 1000,
        "read_from": clocks.read_from,
        "read_to": clocks.read_to,
        "read_from_iso": iso(clocks.read_from),
        "read_to_iso": iso(clocks.read_to),
        "not_seen": "events received outside [read_from, read_to) (the range plus the margin) "
        "are not read, so rows_by_event_time may be short near the range's edges",
        "rows_read": clocks.rows_read,
        "rows_with_event_time": clocks.rows_with_event_time,
        "parts_without_event_time": clocks.parts_without_event_time,
        "windows": windows,
        "totals": {
            "api_count": sum(w.api_count for w in report.windows),
            "rows_by_received_at": sum(w.rows for w in report.windows),
            **_counts_json(totals),
        },
        "legend": CLOCKS_LEGEND,
    }


def _counts_json(counts: ClockCounts) -> dict[str, int]:
    return {
        "rows_by_event_time": counts.by_event_time,
        "rows_in_both": counts.both,
        "no_event_time": counts.no_event_time,
        "late": counts.late,
        "early": counts.early,
    }


def render_json(report: Report) -> str:
    """The report as one JSON document (stable keys; times as epoch ms and ISO)."""
    findings = report.findings
    document = {
        "ok": report.ok,
        "dataset": report.dataset,
        "stream": report.stream,
        "api": report.api,
        "from": report.from_ms,
        "to": report.to_ms,
        "from_iso": iso(report.from_ms),
        "to_iso": iso(report.to_ms),
        "window_seconds": report.window_ms // 1000,
        "parts": report.parts,
        "source": report.source or "parquet parts",
        "windows": [window.as_dict() for window in report.windows],
        "totals": {
            "api_count": sum(w.api_count for w in report.windows),
            "rows": sum(w.rows for w in report.windows),
            "distinct_keys": sum(w.distinct for w in report.windows),
            "duplicates": sum(w.duplicates for w in report.windows),
            "missing": sum(w.missing for w in report.windows),
            "extra": sum(w.extra for w in report.windows),
            "outside": sum(report.strays.values()),
        },
        "outside": {
            "per_log": report.strays,
            "samples": [asdict(row) for row in report.stray_samples],
        },
        "duplicate_parts": [
            {
                "parts": [report.part_name(p) for p in group.parts],
                "keys": group.keys,
                "rows": group.rows,
                "sample": [list(key) for key in group.sample],
            }
            for group in report.duplicate_groups
        ],
        "findings": [{"kind": kind, "message": sentence} for kind, sentence in findings],
        "causes": {kind: CAUSES[kind] for kind in dict.fromkeys(k for k, _ in findings)},
        "note": CLOCK_NOTE,
    }
    if report.clocks is not None:
        document["clocks"] = _clocks_json(report, report.clocks)
    return json.dumps(document, indent=2)
