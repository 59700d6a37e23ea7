"""`tap-rapid7-timeline`: every log format it promises to read, and the PNG it draws."""

from __future__ import annotations

import json

import pytest

from singer_eventlog import format_event
from tap_rapid7.timeline import build_timeline, main, parse_fields, parse_line, parse_lines

pytest_plugins = ["tap_rapid7.emulator.testing"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAGE = {"log_id": "aaaa1111-2222", "page": 2, "status_code": 200, "event_count": 500,
        "events_total": 1000, "link_rels": ["Next"], "polls": 3, "elapsed_seconds": 1.25,
        "window": "2026-11-26 00:00"}


def test_fields_round_trip_the_shared_renderer():
    line = format_event("logsearch_page_complete", PAGE)
    event = parse_line(line, default_ts=10.0)
    assert event is not None
    assert event.name == "logsearch_page_complete"
    assert event.fields == {**PAGE, "link_rels": "Next"}  # a one-item list renders bare
    assert parse_fields('a="x y" b=[1,2] c={"k":1} d=null e=1.5 f=true') == {
        "a": "x y", "b": [1, 2], "c": {"k": 1}, "d": None, "e": 1.5, "f": True}


def test_reads_sdk_console_meltano_console_and_both_json_formats():
    body = format_event("flush_complete", {"stream": "events", "rows": 7, "flush_total_ms": 12.5})
    sdk = f"2026-11-26 07:00:01,250 | INFO     | target-parquet-parts | {body}"
    meltano = (f"2026-11-26T07:00:02.500000Z [info     ] {body} cmd_type=elb consumer=True "
               "job_name=dev:tap-rapid7-to-target-parquet-parts name=target-parquet-parts "
               "producer=False run_id=1 stdio=stderr string_id=target-parquet-parts")
    sdk_json = json.dumps({"level": "info", "pid": 1, "logger_name": "t", "ts": 1_800_000_000.5,
                           "thread_name": "M", "app_name": "target-parquet-parts",
                           "message": body, "extra": {"event_name": "flush_complete",
                                                      "stream": "events", "rows": 7}})
    meltano_json = json.dumps({"event": body, "timestamp": "2026-11-26T07:00:03.000000Z",
                               "level": "info", "cmd_type": "elb"})
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
        lines.append(json.dumps({"level": "info", "pid": 1, "logger_name": "x", "ts": clock,
                                 "thread_name": "M", "app_name": "x", "message": name,
                                 "extra": {"event_name": name, **fields}}))

    emit("logsearch_query_start", log_id="log-a", window_from=0, window_to=1, per_page=500)
    clock += 2.0
    emit("logsearch_page_complete", log_id="log-a", page=1, event_count=500, polls=2,
         elapsed_seconds=2.0)
    emit("flush_start", stream="events", rows=500)
    clock += 0.5
    emit("flush_complete", stream="events", rows=500, dataframe_build_ms=200.0,
         parquet_write_ms=300.0, flush_total_ms=500.0)
    emit("logsearch_retry", log_id="log-a", status_code=429, attempt=1, wait_seconds=1.0,
         reason="rate limit")
    clock += 1.0
    emit("logsearch_page_complete", log_id="log-a", page=2, event_count=20, polls=0,
         elapsed_seconds=0.1)
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


def test_png_from_a_real_tap_and_target_run(tmp_path, emulator_factory):
    """The plugins' own stderr (SDK console format) from a real run against the emulator."""
    import subprocess
    import sys
    from datetime import UTC, datetime
    from pathlib import Path

    emu = emulator_factory(events_per_second=2.0, polls_before_ready=2, log_count=2,
                           force_429_on_request=5)
    end = (emu.now_ms() // 60_000 - 2) * 60_000
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()  # noqa: E731
    tap_config = tmp_path / "tap.json"
    tap_config.write_text(json.dumps({
        "api_key": emu.api_key, "base_url": emu.base_url, "start_date": iso(end - 600_000),
        "end_date": iso(end), "per_page": 200, "poll_interval_seconds": 0.01,
        "window_seconds": 300, "backoff_base_seconds": 0.01,
    }))
    target_config = tmp_path / "target.json"
    target_config.write_text(json.dumps({"output_dir": str(tmp_path / "lake"),
                                         "batch_size_rows": 1000}))
    bin_dir = Path(sys.executable).parent
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        tap = subprocess.Popen([str(bin_dir / "tap-rapid7"), "--config", str(tap_config)],
                               stdout=subprocess.PIPE, stderr=stderr)
        target = subprocess.run(
            [str(bin_dir / "target-parquet-parts"), "--config", str(target_config)],
            stdin=tap.stdout, stdout=subprocess.DEVNULL, stderr=stderr, timeout=120, check=False)
        tap.stdout.close()
        assert tap.wait(timeout=60) == 0
    assert target.returncode == 0, log.read_text()[-3000:]
    timeline = build_timeline(parse_lines(log.read_text().splitlines()))
    assert timeline.counts["logsearch_query_start"] == 2 * 2  # two logs, two 5-minute windows
    assert timeline.counts["logsearch_retry"] >= 1  # the forced 429
    assert timeline.counts["flush_complete"] >= 2
    events = len(emu.truth(end - 600_000, end))
    assert timeline.target_rows[-1][1] == events + len(emu.log_ids) + len(emu.logsets)
    out = tmp_path / "real.png"
    assert main([str(log), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_concurrent_queries_of_one_log_get_their_own_lanes():
    base = 1_800_000_000.0
    rows = [
        (0.0, "logsearch_query_start", {"log_id": "log-a", "window_from": 0}),
        (0.0, "logsearch_query_start", {"log_id": "log-a", "window_from": 10}),
        (1.0, "logsearch_page_complete", {"log_id": "log-a", "window_from": 10, "page": 1,
                                          "event_count": 5, "polls": 1, "elapsed_seconds": 1.0}),
        (1.5, "logsearch_page_complete", {"log_id": "log-a", "window_from": 0, "page": 1,
                                          "event_count": 5, "polls": 0, "elapsed_seconds": 1.5}),
        (1.6, "logsearch_window_complete", {"log_id": "log-a", "window_from": 0}),
        (1.7, "logsearch_query_start", {"log_id": "log-a", "window_from": 20}),
        (2.0, "logsearch_page_complete", {"log_id": "log-a", "window_from": 20, "page": 1,
                                          "event_count": 5, "polls": 0, "elapsed_seconds": 0.3}),
    ]
    lines = [json.dumps({"ts": base + t, "message": name, "extra": {"event_name": name, **fields}})
             for t, name, fields in rows]
    timeline = build_timeline(parse_lines(lines))
    spans = [(s.lane, round(s.start, 2), round(s.end, 2)) for s in timeline.spans]
    assert spans == [("log log-a #2", 0.0, 1.0), ("log log-a", 0.0, 1.5),
                     ("log log-a", 1.7, 2.0)]  # the freed first lane is reused
    assert timeline.lanes == ["log log-a", "log log-a #2"]


def test_reads_meltano_key_value_format_and_explains_plain(tmp_path, capsys):
    kv = ("timestamp='2026-11-26T07:38:32.784187Z' level='info' event='flush_complete "
          "stream=logs rows=4 bytes=7542 path=/x/logs/part-1.parquet dataframe_build_ms=5.28 "
          "parquet_write_ms=31.961 flush_total_ms=37.241' logger=None stdio='stderr' "
          "consumer=True producer=False string_id='target-parquet-parts' cmd_type='elb'")
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
