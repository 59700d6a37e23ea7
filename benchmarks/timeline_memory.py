"""Timeline memory: peak RSS of tap-rapid7-timeline for a ~10 MB and a ~100 MB run log.

The logs are generated here: ``meltano run`` output (Meltano's console format, as in
``demo-output/run-1.log``) of a long sync: queries over a group of four logs, their pages (with
polls, a retry now and then), completed windows, ``logsearch_budget`` lines, the target's
flushes and the SDK's ``METRIC`` lines, with Meltano's own lines in between. The event lines are
written by ``plugin_io.log_events.format_event``, as the plugins write them. Each log is drawn by
one ``tap-rapid7-timeline`` process (its own peak RSS from ``VmHWM``, see ``benchlib``); its
summary line must count the queries, pages, flushes and retries the generator wrote. A command
that streams its input holds what it draws, not the lines it read, so the peak must not grow
with the log: the goal is peak(100 MB) / peak(10 MB) <= 1.5.

Run: ``.venv/bin/python benchmarks/timeline_memory.py [--quick] [--megabytes M]
[--timeline-command "..."]`` (``--megabytes M`` measures M and 10 M; default 10, quick 0.5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import benchlib

from plugin_io.log_events import format_event

GOAL = 1.5
LOGS = benchlib.LOG_IDS[:4]
GROUP = f"{LOGS[0]}+{len(LOGS) - 1}"
WINDOW_MS = 900_000
START = 1_796_576_517.505  # 2026-12-06T17:01:57.505Z
_SUMMARY = re.compile(r"^timeline: (\d+) queries, (\d+) pages, (\d+) flushes, (\d+) retries ")


@dataclass
class Written:
    """What a generated log holds: its size and the events the timeline must count."""

    size: int = 0
    queries: int = 0
    pages: int = 0
    flushes: int = 0
    retries: int = 0


class _Log:
    """Writes Meltano console lines with a clock that only moves forward."""

    def __init__(self, handle: TextIO, written: Written) -> None:
        self.handle = handle
        self.written = written
        self.clock = START
        self.buffer: list[str] = []

    def line(self, plugin: str, text: str, level: str = "info") -> None:
        stamp = dt.datetime.fromtimestamp(self.clock, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.buffer.append(f"{stamp} [{level:<9}] {plugin:<12} {text}\n")
        if len(self.buffer) >= 2048:
            self.flush()

    def event(self, plugin: str, name: str, **fields: object) -> None:
        self.line(plugin, format_event(name, fields), "warning" if "retry" in name else "info")

    def flush(self) -> None:
        text = "".join(self.buffer)
        self.written.size += len(text.encode())
        self.handle.write(text)
        self.buffer.clear()


def _budget_fields(queries: int, polls: int, events: int, elapsed: float) -> dict[str, object]:
    fields: dict[str, object] = {}
    for family, requests, limit in (
        ("query", queries, 1500),
        ("poll", polls, 10000),
        ("management", 1, 1500),
    ):
        left = max(limit - requests % limit, 0)
        fields.update(
            {
                f"{family}_requests": requests,
                f"{family}_rate_limited": 0,
                f"{family}_remaining": left,
                f"{family}_limit": limit,
                f"{family}_lowest_remaining": left,
                f"{family}_reset_seconds": round(900 - elapsed % 900, 3),
                f"{family}_waited_seconds": 0.0,
            }
        )
    fields.update(
        restarts=0,
        events=events,
        events_per_query=round(events / max(queries, 1), 1),
        elapsed_seconds=round(elapsed, 3),
    )
    return fields


def write_log(path: Path, size_bytes: int) -> Written:
    """Write a ``meltano run`` log of at least ``size_bytes``; return what it holds."""
    written = Written()
    tap, meltano = "tap-rapid7", "meltano"
    with path.open("w", encoding="utf-8") as handle:
        log = _Log(handle, written)
        log.line(meltano, "Meltano 4.4.1, Python 3.11.7, Linux (x86_64)")
        log.line(meltano, "Running job with name 'dev:tap-rapid7-to-target-parquet-parts'")
        log.line(tap, "Beginning sync of 'events' in incremental mode")
        window = 0
        pages = polls_sent = events = pending_rows = 0
        while written.size + sum(len(line) for line in log.buffer) < size_bytes:
            window_from = int(START * 1000) + window * WINDOW_MS
            window_to = window_from + WINDOW_MS
            log.event(
                tap, "logsearch_query_start", log_id=GROUP, window_from=window_from,
                window_to=window_to, per_page=500, query_from=window_from - 1, logs=len(LOGS),
            )  # fmt: skip
            written.queries += 1
            for page in range(1, 2 + len(LOGS) * 6):
                alone = page > 1
                log_id = LOGS[(page - 2) % len(LOGS)] if alone else GROUP
                polls = 0 if alone else 2
                log.clock += 0.05 + 0.01 * (page % 7) + 0.1 * polls
                if pages % 211 == 97:
                    log.event(
                        tap, "logsearch_retry", status_code=429, source="Retry-After",
                        log_id=log_id, attempt=1, wait_seconds=0.5,
                        reason="rate limited", what="next page",
                    )  # fmt: skip
                    written.retries += 1
                    log.clock += 0.5
                count = 500 if page % 6 else 137
                log.event(
                    tap, "logsearch_page_complete", log_id=log_id,
                    **({"logs": len(LOGS)} if not alone else {}), page=page, status_code=200,
                    event_count=count, events_total=count,
                    page_min_event_timestamp=window_from + page * 731,
                    page_max_event_timestamp=window_from + page * 731 + 20_203,
                    window_from=window_from, window_to=window_to,
                    link_rels=["Next"] if page % 6 else [], keys="events,leql,links,logs",
                    accepted=count, polls=polls, elapsed_seconds=round(0.05 + 0.1 * polls, 3),
                )  # fmt: skip
                written.pages += 1
                pages += 1
                polls_sent += polls
                events += count
                pending_rows += count
                if pages % 12 == 0:
                    log.event(
                        tap, "logsearch_budget",
                        **_budget_fields(pages, polls_sent, events, log.clock - START),
                    )  # fmt: skip
                if pending_rows >= 10_000:
                    _flush(log, pending_rows)
                    written.flushes += 1
                    pending_rows = 0
            for log_id in LOGS:
                log.event(
                    tap, "logsearch_window_complete", log_id=log_id, window_from=window_from,
                    window_to=window_to, events=3000, duplicates_dropped=0,
                    out_of_window_dropped=0, resume_skipped=0, pages=7, restarts=0,
                    beyond_retention=False, elapsed_seconds=2.5,
                )  # fmt: skip
            log.line(meltano, f"Incremental state has been updated at {log.clock:.6f}.")
            window += 1
        log.line(tap, "METRIC                         metric_name=record_count "
                 f"metric_value={events}")  # fmt: skip
        log.line(meltano, "Run completed")
        log.flush()
    return written


def _flush(log: _Log, rows: int) -> None:
    """The target's lines for one flush of the events stream."""
    target = "target-parquet-parts"
    path = f"/data/lake/events/part-{int(log.clock * 1e6)}-9513f32b962e50625278b08887e4c419.parquet"
    log.event(target, "flush_start", stream="events", rows=rows)
    log.clock += 0.08
    log.event(
        target, "parquet_part_write_success", stream="events", path=path, rows=rows,
        bytes=rows * 45, mode="part",
    )  # fmt: skip
    log.event(
        target, "flush_complete", stream="events", rows=rows, bytes=rows * 45, path=path,
        dataframe_build_ms=31.5, parquet_write_ms=48.25, flush_total_ms=79.75,
    )  # fmt: skip
    log.line(target, "METRIC                         metric_name=batch_processing_time "
             "metric_value=0.0797")  # fmt: skip


def measure(command: list[str], workdir: Path, megabytes: float) -> float:
    """Draw one generated log of ``megabytes``; check its summary; return the peak RSS in MiB."""
    name = f"run-{megabytes:g}mb"
    log = workdir / f"{name}.log"
    written = write_log(log, int(megabytes * 1_000_000))
    stdout_path = workdir / f"{name}.stdout"
    stderr_path = workdir / f"{name}.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        result = benchlib.run_child(
            [*command, str(log), "-o", str(workdir / f"{name}.png")], stdout=out, stderr=err
        )
    benchlib.fail_unless_ok("tap-rapid7-timeline", result, stderr_path)
    summary = _SUMMARY.match(stdout_path.read_text())
    expected = (written.queries, written.pages, written.flushes, written.retries)
    if summary is None or tuple(int(n) for n in summary.groups()) != expected:
        msg = f"tap-rapid7-timeline printed {stdout_path.read_text()!r}, expected counts {expected}"
        raise SystemExit(msg)
    benchlib.print_run(
        "timeline",
        written.pages,
        result,
        unit="pages",
        log_mb=f"{written.size / 1e6:.1f}",
        mb_per_s=f"{benchlib.rate(written.size / 1e6, result.wall_seconds):.2f}",
    )
    return result.max_rss_mib


def main() -> None:
    """Draw the small and the large log, print both peaks and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument(
        "--megabytes", type=float, help="the small log; the large one is 10x (10; quick: 0.5)"
    )
    parser.add_argument("--timeline-command", help="default: the venv's tap-rapid7-timeline")
    benchlib.add_env_argument(parser)
    args = parser.parse_args()
    benchlib.configure_env(args)
    small = args.megabytes or (0.5 if args.quick else 10.0)
    if small <= 0:
        parser.error("--megabytes must be positive")
    command = (
        shlex.split(args.timeline_command)
        if args.timeline_command
        else [benchlib.venv_bin("tap-rapid7-timeline")]
    )
    benchlib.print_header(
        "timeline_memory", {"small_mb": small, "large_mb": 10 * small, "format": "meltano"}
    )
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as tmp:
        workdir = Path(tmp)
        small_peak = measure(command, workdir, small)
        large_peak = measure(command, workdir, 10 * small)
    print(
        f"peak_rss: small_mib={small_peak:.1f} large_mib={large_peak:.1f}",
        flush=True,
    )
    ratio = large_peak / small_peak
    benchlib.print_ratio("timeline_rss_100mb_over_10mb", ratio, f"<={GOAL}", ratio <= GOAL)


if __name__ == "__main__":
    main()
