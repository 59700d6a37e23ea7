"""`tap-rapid7-timeline`: every log format it promises to read, and the PNG it draws."""

from __future__ import annotations

import itertools
import json
import struct
from datetime import UTC, datetime

import pytest

from logsearch_emulator.data import LABELS
from pipeline_tools.timeline import build_timeline, main, parse_line, parse_lines
from plugin_io.log_events import format_event, parse_fields

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAGE = {
    "log_id": "aaaa1111-2222",
    "page": 2,
    "status_code": 200,
    "event_count": 500,
    "events_total": 1000,
    "link_rels": ["Next"],
    "polls": 3,
    "elapsed_seconds": 1.25,
    "window": "2026-11-26 00:00",
}


def test_fields_round_trip_the_shared_renderer():
    line = format_event("logsearch_page_complete", PAGE)
    event = parse_line(line, default_ts=10.0)
    assert event is not None
    assert event.name == "logsearch_page_complete"
    assert event.fields == PAGE  # lists keep their type, one item or many
    assert parse_fields('a="x y" b=[1,2] c={"k":1} d=null e=1.5 f=true') == {
        "a": "x y",
        "b": [1, 2],
        "c": {"k": 1},
        "d": None,
        "e": 1.5,
        "f": True,
    }


def test_reads_sdk_console_meltano_console_and_both_json_formats():
    body = format_event("flush_complete", {"stream": "events", "rows": 7, "flush_total_ms": 12.5})
    sdk = f"2026-11-26 07:00:01,250 | INFO     | target-parquet-parts | {body}"
    meltano = (
        f"2026-11-26T07:00:02.500000Z [info     ] {body} cmd_type=elb consumer=True "
        "job_name=dev:tap-rapid7-to-target-parquet-parts name=target-parquet-parts "
        "producer=False run_id=1 stdio=stderr string_id=target-parquet-parts"
    )
    sdk_json = json.dumps(
        {
            "level": "info",
            "pid": 1,
            "logger_name": "t",
            "ts": 1_800_000_000.5,
            "thread_name": "M",
            "app_name": "target-parquet-parts",
            "message": body,
            "extra": {"event_name": "flush_complete", "stream": "events", "rows": 7},
        }
    )
    meltano_json = json.dumps(
        {
            "event": body,
            "timestamp": "2026-11-26T07:00:03.000000Z",
            "level": "info",
            "cmd_type": "elb",
        }
    )
    events = [parse_line(line) for line in (sdk, meltano, sdk_json, meltano_json)]
    assert all(event is not None and event.name == "flush_complete" for event in events)
    assert [event.fields["rows"] for event in events] == [7, 7, 7, 7]
    assert "cmd_type" not in events[1].fields  # Meltano's context is not the plugin's
    assert events[1].ts - events[3].ts == pytest.approx(-0.5)
    assert events[2].ts == 1_800_000_000.5
    assert parse_line("2026-11-26T07:00:02Z [info ] Beginning incremental sync") is None


def _run_log() -> list[str]:
    lines = []
    clock = 1_800_000_000.0

    def emit(name: str, **fields) -> None:
        lines.append(
            json.dumps(
                {
                    "level": "info",
                    "pid": 1,
                    "logger_name": "x",
                    "ts": clock,
                    "thread_name": "M",
                    "app_name": "x",
                    "message": name,
                    "extra": {"event_name": name, **fields},
                }
            )
        )

    emit("logsearch_query_start", log_id="log-a", window_from=0, window_to=1, per_page=500)
    clock += 2.0
    emit(
        "logsearch_page_complete",
        log_id="log-a",
        page=1,
        event_count=500,
        polls=2,
        elapsed_seconds=2.0,
    )
    emit("flush_start", stream="events", rows=500)
    clock += 0.5
    emit(
        "flush_complete",
        stream="events",
        rows=500,
        dataframe_build_ms=200.0,
        parquet_write_ms=300.0,
        flush_total_ms=500.0,
    )
    emit(
        "logsearch_retry",
        log_id="log-a",
        status_code=429,
        attempt=1,
        wait_seconds=1.0,
        reason="rate limit",
    )
    clock += 1.0
    emit(
        "logsearch_page_complete",
        log_id="log-a",
        page=2,
        event_count=20,
        polls=0,
        elapsed_seconds=0.1,
    )
    emit("logsearch_window_complete", log_id="log-a", events=520, pages=2)
    return lines


def test_spans_show_what_waited_on_what():
    timeline = build_timeline(parse_lines(_run_log()))
    spans = [(s.lane, s.kind, round(s.start, 2), round(s.end, 2)) for s in timeline.spans]
    assert ("log log-a", "wait", 0.0, 2.0) in spans  # polled twice: waiting on the API
    assert ("flush events", "build", 2.0, 2.2) in spans
    assert ("flush events", "write", 2.2, 2.5) in spans
    assert ("log log-a", "retry", 2.5, 3.5) in spans
    assert ("log log-a", "page", 3.5, 3.5) in spans  # lanes never overlap: after the back-off
    assert timeline.tap_events[-1] == (pytest.approx(3.5), 520)
    assert timeline.target_rows == [(pytest.approx(2.5), 500)]
    assert timeline.lanes == ["log log-a", "flush events"]
    with pytest.raises(ValueError, match="no tap or target events"):
        build_timeline([])


def test_command_writes_a_png(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text("\n".join(["unrelated line", *_run_log()]) + "\n")
    out = tmp_path / "t.png"
    assert main([str(log), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert "1 queries, 2 pages, 1 flushes, 1 retries" in capsys.readouterr().out
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    assert main([str(empty), "-o", str(tmp_path / "no.png")]) == 2
    assert not (tmp_path / "no.png").exists()


@pytest.mark.e2e
def test_png_from_a_real_tap_and_target_run(tmp_path, emulator_factory):
    """The plugins' own stderr (SDK console format) from a real run against the emulator."""
    import subprocess
    import sys
    from datetime import UTC, datetime
    from pathlib import Path

    # the forced 429 answers like a spent budget (Retry-After: until the budget window resets):
    # a 2-second budget window keeps the back-off short
    emu = emulator_factory(
        events_per_second=2.0,
        polls_before_ready=2,
        log_count=2,
        force_429_on_request=5,
        budget_window_seconds=2.0,
    )
    end = (emu.now_ms() // 60_000 - 2) * 60_000
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()  # noqa: E731
    tap_config = tmp_path / "tap.json"
    tap_config.write_text(
        json.dumps(
            {
                "api_key": emu.api_key,
                "base_url": emu.base_url,
                "start_date": iso(end - 600_000),
                "end_date": iso(end),
                "per_page": 200,
                "poll_interval_seconds": 0.01,
                "window_seconds": 300,
                "backoff_base_seconds": 0.01,
                "budget_log_interval_seconds": 0.2,
            }
        )
    )
    target_config = tmp_path / "target.json"
    target_config.write_text(
        json.dumps({"output_dir": str(tmp_path / "lake"), "batch_size_rows": 1000})
    )
    bin_dir = Path(sys.executable).parent
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        tap = subprocess.Popen(
            [str(bin_dir / "tap-rapid7"), "--config", str(tap_config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        target = subprocess.run(
            [str(bin_dir / "target-parquet-parts"), "--config", str(target_config)],
            stdin=tap.stdout,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=120,
            check=False,
        )
        tap.stdout.close()
        assert tap.wait(timeout=60) == 0
    assert target.returncode == 0, log.read_text()[-3000:]
    timeline = build_timeline(parse_lines(log.read_text().splitlines()))
    # two 5-minute windows, each one query over both logs (its full first page: both go on alone)
    assert timeline.counts["logsearch_query_start"] == 2
    group = {f"log {log_id[:8]}+1" for log_id in emu.log_ids}  # either may come first
    assert sum(lane.split(" #")[0] in group for lane in timeline.lanes) >= 1
    alone = {lane.split(" #")[0] for lane in timeline.lanes if lane.startswith("log ")} - group
    assert alone == {f"log {log_id[:8]}" for log_id in emu.log_ids}  # pages without a start
    assert timeline.budget
    assert timeline.budget[-1].summary  # the sync's summary comes last
    assert timeline.budget_series("query_limit")[-1][1] == 1500
    assert timeline.counts["logsearch_retry"] >= 1  # the forced 429
    assert timeline.counts["flush_complete"] >= 2
    events = len(emu.truth(end - 600_000, end))
    dimensions = len(emu.log_ids) + len(emu.logsets) + len(LABELS)  # logs, logsets, labels
    assert timeline.target_rows[-1][1] == events + dimensions
    out = tmp_path / "real.png"
    assert main([str(log), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_concurrent_queries_of_one_log_get_their_own_lanes():
    base = 1_800_000_000.0
    rows = [
        (0.0, "logsearch_query_start", {"log_id": "log-a", "window_from": 0}),
        (0.0, "logsearch_query_start", {"log_id": "log-a", "window_from": 10}),
        (
            1.0,
            "logsearch_page_complete",
            {
                "log_id": "log-a",
                "window_from": 10,
                "page": 1,
                "event_count": 5,
                "polls": 1,
                "elapsed_seconds": 1.0,
            },
        ),
        (
            1.5,
            "logsearch_page_complete",
            {
                "log_id": "log-a",
                "window_from": 0,
                "page": 1,
                "event_count": 5,
                "polls": 0,
                "elapsed_seconds": 1.5,
            },
        ),
        (1.6, "logsearch_window_complete", {"log_id": "log-a", "window_from": 0}),
        (1.7, "logsearch_query_start", {"log_id": "log-a", "window_from": 20}),
        (
            2.0,
            "logsearch_page_complete",
            {
                "log_id": "log-a",
                "window_from": 20,
                "page": 1,
                "event_count": 5,
                "polls": 0,
                "elapsed_seconds": 0.3,
            },
        ),
    ]
    lines = [
        json.dumps({"ts": base + t, "message": name, "extra": {"event_name": name, **fields}})
        for t, name, fields in rows
    ]
    timeline = build_timeline(parse_lines(lines))
    spans = [(s.lane, round(s.start, 2), round(s.end, 2)) for s in timeline.spans]
    assert spans == [
        ("log log-a #2", 0.0, 1.0),
        ("log log-a", 0.0, 1.5),
        ("log log-a", 1.7, 2.0),
    ]  # the freed first lane is reused
    assert timeline.lanes == ["log log-a", "log log-a #2"]


def test_reads_meltano_key_value_format_and_explains_plain(tmp_path, capsys):
    kv = (
        "timestamp='2026-11-26T07:38:32.784187Z' level='info' event='flush_complete "
        "stream=logs rows=4 bytes=7542 path=/x/logs/part-1.parquet dataframe_build_ms=5.28 "
        "parquet_write_ms=31.961 flush_total_ms=37.241' logger=None stdio='stderr' "
        "consumer=True producer=False string_id='target-parquet-parts' cmd_type='elb'"
    )
    event = parse_line(kv)
    assert event is not None
    assert event.name == "flush_complete"
    assert event.fields["flush_total_ms"] == 37.241
    assert "stdio" not in event.fields
    assert event.ts == pytest.approx(1_795_678_712.784187)
    plain = tmp_path / "plain.log"
    plain.write_text("logsearch_page_complete log_id=a page=1 event_count=5 polls=0\n")
    assert main([str(plain), "-o", str(tmp_path / "p.png")]) == 2
    assert "no timestamps" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Budget lines and queries over several logs

LOG_A = "5ec48a12-53b2-411f-95d1-48f47e60246c"
LOG_B = "050da87c-5562-4109-aa2b-bffcf44075b8"
LOG_C = "9f1c2d3e-0000-4000-8000-000000000003"
LOG_D = "77aa0b1c-0000-4000-8000-000000000004"
BASE = 1_800_000_000.0


def _budget(family_values: dict[str, tuple], **rest) -> dict:
    """Flat budget fields: family -> (requests, rate_limited, remaining, limit, lowest, reset,
    waited)."""
    names = (
        "requests",
        "rate_limited",
        "remaining",
        "limit",
        "lowest_remaining",
        "reset_seconds",
        "waited_seconds",
    )
    fields = {}
    for family in ("query", "poll", "management"):
        values = family_values.get(family, (1, 0, 1499, 1500, 1499, None, 0.0))
        fields.update(
            {f"{family}_{name}": value for name, value in zip(names, values, strict=True)}
        )
    return {**fields, **rest}


# (seconds since BASE, event, fields): a short sync that spends its query budget
BUDGET_RUN = [
    (0.0, "logsearch_query_start", {"log_id": LOG_A, "window_from": 0, "window_to": 10}),
    (
        0.5,
        "logsearch_page_complete",
        {
            "log_id": LOG_A,
            "window_from": 0,
            "window_to": 10,
            "page": 1,
            "event_count": 500,
            "polls": 1,
            "elapsed_seconds": 0.5,
        },
    ),
    (
        1.0,
        "logsearch_budget",
        _budget(
            {
                "query": (120, 0, 1380, 1500, 1380, 512.0, 3.2),
                "poll": (300, 0, 9700, 10000, 9700, 512.0, 0.0),
            },
            restarts=0,
            events=60000,
            events_per_query=500.0,
            elapsed_seconds=61.2,
        ),
    ),
    (
        61.0,
        "logsearch_budget",
        _budget(
            {
                "query": (720, 0, 780, 1500, 780, 452.0, 10.5),
                "poll": (1500, 1, 8500, 10000, 8500, 452.0, 2.0),
            },
            restarts=1,
            events=300000,
            events_per_query=416.7,
            elapsed_seconds=121.2,
        ),
    ),
    (
        121.0,
        "logsearch_budget",
        _budget(
            {
                "query": (1500, 2, 0, 1500, 0, 392.0, 60.0),
                "poll": (2600, 1, 7400, 10000, 7400, 392.0, 2.0),
            },
            restarts=1,
            events=600000,
            events_per_query=400.0,
            elapsed_seconds=181.2,
        ),
    ),
    (
        150.0,
        "logsearch_page_complete",
        {
            "log_id": LOG_A,
            "window_from": 0,
            "window_to": 10,
            "page": 2,
            "event_count": 20,
            "polls": 0,
            "elapsed_seconds": 0.2,
        },
    ),
    (
        150.5,
        "logsearch_budget_summary",
        _budget(
            {
                "query": (1510, 2, None, 1500, 0, None, 61.0),
                "poll": (2700, 1, 7300, 10000, 7300, 363.0, 2.0),
            },
            restarts=1,
            events=600020,
            events_per_query=397.4,
            elapsed_seconds=210.7,
        ),
    ),
]


def _sdk_console(t: float, name: str, fields: dict) -> str:
    """The plugin's own stderr: the SDK console format, in local time."""
    stamp = datetime.fromtimestamp(BASE + t)
    level = "WARNING " if name in {"logsearch_retry", "logsearch_beyond_retention"} else "INFO    "
    return (
        f"{stamp:%Y-%m-%d %H:%M:%S},{stamp.microsecond // 1000:03d} | {level} | "
        f"tap_rapid7.logsearch           | {format_event(name, fields)}"
    )


def _meltano_console(t: float, name: str, fields: dict) -> str:
    """`meltano run` output: Meltano's UTC timestamp in front, its context fields after."""
    stamp = datetime.fromtimestamp(BASE + t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f"{stamp} [info     ] {format_event(name, fields)} cmd_type=elb consumer=False "
        "job_name=dev:tap-rapid7-to-target-parquet-parts name=tap-rapid7 producer=True "
        "run_id=0b5f2a4c-0000-4000-8000-000000000000 stdio=stderr string_id=tap-rapid7"
    )


FORMATS = {"sdk": _sdk_console, "meltano": _meltano_console}


def test_parses_a_budget_line_as_the_tap_writes_it():
    line = (
        "2026-11-26 07:01:02,500 | INFO     | tap_rapid7.logsearch           | "
        "logsearch_budget query_requests=120 query_rate_limited=0 query_remaining=1380 "
        "query_limit=1500 query_lowest_remaining=1380 query_reset_seconds=512.0 "
        "query_waited_seconds=3.2 poll_requests=300 poll_rate_limited=0 poll_remaining=null "
        "poll_limit=null restarts=0 events=60000 events_per_query=500.0 "
        "elapsed_seconds=61.2"
    )
    event = parse_line(line)
    assert event is not None
    assert event.name == "logsearch_budget"
    assert event.fields["query_remaining"] == 1380
    assert event.fields["query_reset_seconds"] == 512.0
    assert event.fields["poll_remaining"] is None
    assert event.fields["events_per_query"] == 500.0
    body = line.rsplit(" | ", maxsplit=1)[-1].replace(
        "logsearch_budget", "logsearch_budget_summary"
    )
    meltano = parse_line(
        f"2026-11-26T07:01:02.500000Z [info     ] {body} "
        "cmd_type=elb name=tap-rapid7 stdio=stderr string_id=tap-rapid7"
    )
    assert meltano is not None
    assert meltano.name == "logsearch_budget_summary"
    assert meltano.fields == event.fields  # Meltano's context is dropped, nothing else


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_budget_series_from_plain_and_meltano_logs(fmt):
    lines = [FORMATS[fmt](t, name, fields) for t, name, fields in BUDGET_RUN]
    timeline = build_timeline(parse_lines(["Beginning incremental sync of 'events'", *lines]))
    assert [(point.t, point.summary) for point in timeline.budget] == [
        (1.0, False),
        (61.0, False),
        (121.0, False),
        (150.5, True),
    ]
    # the summary's null query_remaining is left out, not drawn as 0
    assert timeline.budget_series("query_remaining") == [(1.0, 1380), (61.0, 780), (121.0, 0)]
    assert timeline.budget_series("query_requests") == [
        (1.0, 120),
        (61.0, 720),
        (121.0, 1500),
        (150.5, 1510),
    ]
    assert timeline.budget_fraction("query") == [(1.0, 0.92), (61.0, 0.52), (121.0, 0.0)]
    assert timeline.budget_fraction("poll") == [
        (1.0, 0.97),
        (61.0, 0.85),
        (121.0, 0.74),
        (150.5, 0.73),
    ]
    assert timeline.budget_series("management_reset_seconds") == []  # all null
    assert timeline.rate_limited("query") == [(121.0, 2)]
    assert timeline.rate_limited("poll") == [(61.0, 1)]
    assert timeline.tap_events == [(0.5, 500), (150.0, 520)]  # the other panels are unchanged


def test_a_rate_limited_counter_that_restarts_is_a_new_sync():
    rows = [
        (0.0, "logsearch_budget", _budget({"query": (5, 3, 1, 10, 1, 1.0, 0.0)})),
        (1.0, "logsearch_budget_summary", _budget({"query": (6, 3, 0, 10, 0, 0.5, 0.0)})),
        (2.0, "logsearch_budget", _budget({"query": (1, 1, 9, 10, 9, 5.0, 0.0)})),
    ]
    timeline = build_timeline(parse_lines(_meltano_console(*row) for row in rows))
    assert timeline.rate_limited("query") == [(0.0, 3), (2.0, 1)]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    return struct.unpack(">II", data[16:24])


def test_budget_panel_only_when_the_log_has_budget_lines(tmp_path):
    with_budget = tmp_path / "with.log"
    with_budget.write_text("\n".join(_sdk_console(*row) for row in BUDGET_RUN) + "\n")
    without = tmp_path / "without.log"
    without.write_text(
        "\n".join(
            _sdk_console(*row) for row in BUDGET_RUN if not row[1].startswith("logsearch_budget")
        )
        + "\n"
    )
    assert main([str(with_budget), "-o", str(tmp_path / "with.png")]) == 0
    assert main([str(without), "-o", str(tmp_path / "without.png")]) == 0
    width, height = _png_size(tmp_path / "with.png")
    assert _png_size(tmp_path / "without.png") == (width, height - 2.8 * 110)  # no empty panel
    # budget lines only (no query, page or flush): still a picture, not an error
    only = tmp_path / "only.log"
    only.write_text(
        "\n".join(
            _meltano_console(*row) for row in BUDGET_RUN if row[1].startswith("logsearch_budget")
        )
        + "\n"
    )
    assert main([str(only), "-o", str(tmp_path / "only.png")]) == 0
    assert _png_size(tmp_path / "only.png")[1] > 0


# A query over four logs; its first page is full, so each log goes on alone (no query_start).
GROUP_RUN = [
    (
        0.0,
        "logsearch_query_start",
        {
            "log_id": f"{LOG_A}+3",
            "window_from": 0,
            "window_to": 10,
            "per_page": 500,
            "query_from": 0,
            "logs": 4,
        },
    ),
    (
        0.0,
        "logsearch_query_start",
        {
            "log_id": f"{LOG_A}+3",
            "window_from": 10,
            "window_to": 20,
            "per_page": 500,
            "query_from": 9,
            "logs": 4,
        },
    ),
    # the HTTP layer names the group by its ids and the window by query_from and window_to
    (
        0.2,
        "logsearch_retry",
        {
            "status_code": 429,
            "source": "Retry-After",
            "log_id": f"{LOG_A}:{LOG_B}:{LOG_C}:{LOG_D}",
            "window": "[9,20)",
            "attempt": 1,
            "wait_seconds": 1.0,
            "reason": "rate limited while polling",
            "what": "poll",
        },
    ),
    (
        0.3,
        "logsearch_beyond_retention",
        {
            "log_id": LOG_B,
            "window_from": 0,
            "window_to": 10,
            "message": "beyond the retention period",
        },
    ),
    (
        1.0,
        "logsearch_page_complete",
        {
            "log_id": f"{LOG_A}+3",
            "logs": 4,
            "page": 1,
            "event_count": 500,
            "window_from": 0,
            "window_to": 10,
            "polls": 2,
            "elapsed_seconds": 1.0,
        },
    ),
    (
        1.5,
        "logsearch_page_complete",
        {
            "log_id": f"{LOG_A}+3",
            "logs": 4,
            "page": 1,
            "event_count": 40,
            "window_from": 10,
            "window_to": 20,
            "polls": 0,
            "elapsed_seconds": 0.3,
        },
    ),
    (
        2.0,
        "logsearch_page_complete",
        {
            "log_id": LOG_A,
            "page": 2,
            "event_count": 100,
            "window_from": 0,
            "window_to": 10,
            "polls": 1,
            "elapsed_seconds": 0.5,
        },
    ),
    (
        2.1,
        "logsearch_retry",
        {
            "log_id": LOG_B,
            "status_code": 404,
            "attempt": 1,
            "wait_seconds": 0,
            "reason": "invalid continuation",
            "restart_from": 4,
        },
    ),
    (
        2.4,
        "logsearch_page_complete",
        {
            "log_id": LOG_B,
            "page": 2,
            "event_count": 7,
            "window_from": 0,
            "window_to": 10,
            "polls": 0,
            "elapsed_seconds": 0.2,
        },
    ),
    (2.5, "logsearch_window_complete", {"log_id": LOG_A, "window_from": 0, "window_to": 10}),
    (2.5, "logsearch_window_complete", {"log_id": LOG_B, "window_from": 0, "window_to": 10}),
    (
        3.0,
        "logsearch_query_start",
        {"log_id": f"{LOG_A}+3", "window_from": 20, "window_to": 30, "logs": 4},
    ),
    (
        3.5,
        "logsearch_page_complete",
        {
            "log_id": f"{LOG_A}+3",
            "logs": 4,
            "page": 1,
            "event_count": 3,
            "window_from": 20,
            "window_to": 30,
            "polls": 0,
            "elapsed_seconds": 0.5,
        },
    ),
]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_group_of_logs_is_one_lane_and_its_logs_go_on_alone(fmt, tmp_path):
    lines = [FORMATS[fmt](t, name, fields) for t, name, fields in GROUP_RUN]
    timeline = build_timeline(parse_lines(lines))
    spans = [(s.lane, s.kind, round(s.start, 2), round(s.end, 2), s.label) for s in timeline.spans]
    assert spans == [
        # the 429's back-off is on the query of the second window, found by its window's end
        ("log 5ec48a12+3 #2", "retry", 0.2, 1.2, "rate limited while polling"),
        ("log 5ec48a12+3", "wait", 0.0, 1.0, "p1 ·2 polls"),
        ("log 5ec48a12+3 #2", "page", 1.2, 1.5, "p1"),
        ("log 5ec48a12", "wait", 1.5, 2.0, "p2 ·1 polls"),  # no query_start of its own
        ("log 050da87c", "page", 2.2, 2.4, "p2"),  # never reaches back before its restart
        ("log 5ec48a12+3", "page", 3.0, 3.5, "p1"),  # the group's lanes were freed
    ]
    markers = [(lane, round(t, 2), kind) for lane, t, kind in timeline.markers]
    assert ("log 5ec48a12+3 #2", 0.2, "retry") in markers
    assert ("log 050da87c", 0.3, "retention") in markers
    assert ("log 050da87c", 2.1, "restart") in markers
    assert ("log 5ec48a12", 2.5, "window") in markers
    assert timeline.lanes == ["log 5ec48a12+3", "log 5ec48a12+3 #2", "log 5ec48a12", "log 050da87c"]
    assert timeline.tap_events[-1] == (pytest.approx(3.5), 650)
    log = tmp_path / "group.log"
    log.write_text("\n".join(lines) + "\n")
    assert main([str(log), "-o", str(tmp_path / "group.png")]) == 0
    assert _png_size(tmp_path / "group.png")[0] > 0


def test_logs_going_on_alone_in_two_windows_at_once_get_two_lanes():
    """After two windows' shared first pages were full, a log pages both windows side by side."""
    page = {"log_id": LOG_A, "event_count": 200, "polls": 0, "elapsed_seconds": 0.4}
    rows = [
        (1.0, "logsearch_page_complete", {**page, "page": 2, "window_from": 0, "window_to": 10}),
        (1.1, "logsearch_page_complete", {**page, "page": 2, "window_from": 10, "window_to": 20}),
        (1.5, "logsearch_page_complete", {**page, "page": 3, "window_from": 0, "window_to": 10}),
        (1.6, "logsearch_window_complete", {"log_id": LOG_A, "window_from": 0, "window_to": 10}),
        (1.7, "logsearch_page_complete", {**page, "page": 3, "window_from": 10, "window_to": 20}),
        (2.0, "logsearch_page_complete", {**page, "page": 2, "window_from": 20, "window_to": 30}),
    ]
    timeline = build_timeline(parse_lines(_meltano_console(*row) for row in rows))
    assert [(s.lane, s.label) for s in timeline.spans] == [
        ("log 5ec48a12", "p2"),
        ("log 5ec48a12 #2", "p2"),
        ("log 5ec48a12", "p3"),
        ("log 5ec48a12 #2", "p3"),
        ("log 5ec48a12", "p2"),  # the window's lane was freed by its window_complete
    ]
    for lane in timeline.lanes:  # bars of one lane never cover each other
        bars = [(s.start, s.end) for s in timeline.spans if s.lane == lane]
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(bars))
