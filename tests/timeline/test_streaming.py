"""tap-rapid7-timeline streams: lines are read lazily, what it keeps does not grow with them."""

from __future__ import annotations

import io
import itertools
import json
import random
import tracemalloc
from collections.abc import Iterator

import pytest

from pipeline_tools import timeline as tl
from pipeline_tools.timeline import (
    ReadStats,
    build_timeline,
    events_in_time_order,
    main,
    parse_lines,
    read_events,
)
from tests.timeline.test_timeline import PNG_MAGIC, _run_log

BASE = 1_800_000_000.0


def _line(t: float, name: str, **fields) -> str:
    """An SDK JSON log line (the plugins' own stderr with the JSON log format)."""
    return json.dumps({"ts": BASE + t, "message": name, "extra": {"event_name": name, **fields}})


def _long_run(pages: int, spacing: float = 0.5) -> Iterator[str]:
    """A run of ``pages`` pages of one log, a flush every 10 pages, a budget line every 20."""
    yield "Beginning incremental sync of 'events'"
    for n in range(pages):
        t = n * spacing
        if n % 5 == 0:
            yield _line(t, "logsearch_query_start", log_id="log-a", window_from=n, window_to=n + 5)
        yield _line(
            t + 0.2, "logsearch_page_complete", log_id="log-a", window_from=n - n % 5,
            page=n % 5 + 1, event_count=500, polls=n % 2, elapsed_seconds=0.2,
        )  # fmt: skip
        if n % 5 == 4:
            yield _line(t + 0.3, "logsearch_window_complete", log_id="log-a", window_from=n - 4)
        if n % 10 == 9:
            yield _line(t + 0.3, "flush_start", stream="events", rows=5000)
            yield _line(
                t + 0.4, "flush_complete", stream="events", rows=5000,
                dataframe_build_ms=40.0, flush_total_ms=100.0,
            )  # fmt: skip
        if n % 20 == 19:
            yield _line(
                t + 0.45, "logsearch_budget", query_requests=n + 1, query_rate_limited=n // 100,
                query_remaining=1500 - (n + 1) % 1500, query_limit=1500,
            )  # fmt: skip


class _Counted:
    """Lines handed out one at a time, counting how many were taken."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.taken = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.taken += 1
            yield line


def test_events_are_read_lazily_and_held_only_for_the_reordering_window():
    lines = _Counted(_long_run(100_000, spacing=1.0))  # about 28 hours of log
    events = events_in_time_order(read_events(lines))
    first = next(events)
    assert first.name == "logsearch_query_start"
    # the first event goes out once the log is REORDER_SECONDS past it: a minute of lines
    assert lines.taken < 4 * (tl.REORDER_SECONDS + 5)
    for _ in itertools.islice(events, 1000):
        pass
    assert lines.taken < 4 * (1000 / 4 + tl.REORDER_SECONDS + 5)


def test_the_reordering_buffer_is_also_bounded_in_events(monkeypatch):
    monkeypatch.setattr(tl, "REORDER_EVENTS", 50)
    lines = _Counted(_line(0.0, "flush_start", stream=f"s{n}") for n in range(10_000))
    events = events_in_time_order(read_events(lines))
    next(events)  # all at the same time: the time window alone would hold every one
    assert lines.taken == 51


def test_slightly_shuffled_lines_draw_as_the_sorted_ones():
    lines = list(_long_run(400))
    jitter = random.Random(7)
    # each line up to 5 s early or late, as when two processes write to one file
    keyed = [(json.loads(line)["ts"] + jitter.uniform(-5, 5), line) for line in lines[1:]]
    shuffled = lines[:1] + [line for _, line in sorted(keyed)]
    assert shuffled != lines
    stats = ReadStats()
    streamed = build_timeline(events_in_time_order(read_events(shuffled), stats))
    exact = build_timeline(parse_lines(lines))
    assert stats.late == 0
    assert streamed.spans == exact.spans
    assert streamed.markers == exact.markers
    assert streamed.tap_events == exact.tap_events
    assert [point.t for point in streamed.budget] == [point.t for point in exact.budget]


@pytest.fixture
def small_caps(monkeypatch):
    """Caps small enough that a test log goes over them."""
    for name, cap in (
        ("MAX_SPANS", 200),
        ("MAX_MARKERS", 200),
        ("MAX_STEPS", 100),
        ("MAX_BUDGET_POINTS", 40),
        ("MAX_RATE_LIMIT_MARKS", 20),
    ):
        monkeypatch.setattr(tl, name, cap)


def test_what_the_timeline_keeps_stays_within_its_caps(small_caps):
    pages = 20_000
    timeline = build_timeline(events_in_time_order(read_events(_long_run(pages))))
    assert timeline.resolution > 0
    assert len(timeline.spans) <= tl.MAX_SPANS
    assert len(timeline.markers) <= tl.MAX_MARKERS
    assert len(timeline.tap_events) <= tl.MAX_STEPS
    assert len(timeline.target_rows) <= tl.MAX_STEPS
    assert len(timeline.budget) <= tl.MAX_BUDGET_POINTS
    assert len(timeline.rate_limited("query")) <= tl.MAX_RATE_LIMIT_MARKS
    # what is counted is still exact: every line, every event, every row, every 429
    assert timeline.counts["logsearch_page_complete"] == pages
    assert timeline.counts["flush_complete"] == pages // 10
    assert timeline.tap_events[-1][1] == pages * 500
    assert timeline.target_rows[-1][1] == pages // 10 * 5000
    assert timeline.budget_lines == pages // 20
    assert sum(n for _, n in timeline.rate_limited("query")) == (pages - 1) // 100
    # merged bars keep the lane's busy time: 0.2 s of each page's 0.5 s
    busy = sum(s.end - s.start for s in timeline.spans if s.lane == "log log-a")
    assert busy == pytest.approx(pages * 0.2, rel=0.01)
    assert all(s.end <= (pages + 1) * 0.5 for s in timeline.spans)


def _peak_bytes(pages: int) -> int:
    tracemalloc.start()
    try:
        build_timeline(events_in_time_order(read_events(_long_run(pages))))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_lines(small_caps):
    small, large = _peak_bytes(4000), _peak_bytes(16_000)  # 4x the lines
    assert large < 1.5 * small, (small, large)


def test_the_command_draws_a_long_log_within_the_caps(small_caps, tmp_path, capsys):
    log = tmp_path / "long.log"
    log.write_text("\n".join(_long_run(5000)) + "\n")
    out = tmp_path / "long.png"
    assert main([str(log), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    captured = capsys.readouterr()
    assert "1000 queries, 5000 pages, 500 flushes, 0 retries over 2500.0s" in captured.out
    assert captured.err == ""


def test_stdin_is_streamed_too(monkeypatch, tmp_path, capsys):
    data = ("\n".join(_run_log()) + "\n").encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    monkeypatch.chdir(tmp_path)
    assert main(["-"]) == 0
    assert (tmp_path / "timeline.png").read_bytes().startswith(PNG_MAGIC)
    assert "1 queries, 2 pages, 1 flushes, 1 retries" in capsys.readouterr().out
