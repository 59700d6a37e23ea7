"""A hostile or broken server: every wait it names is bounded, every body and message is too.

Issue 19: ``Retry-After: 1000000000`` slept 31 years, ``inf`` crashed, ``nan``/negative/text gave
four attempts back to back; a 2 MB gzip bomb took 6 GB of memory, a 300 MB page 822 MB. Waits
are asserted on the fake clock's sleeps (no real sleep); memory with ``tracemalloc`` (no speed
thresholds). Bodies come from a real socket on 127.0.0.1 where compression and framing matter.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import socket
import subprocess
import sys
import tracemalloc
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import requests
from singer_sdk.exceptions import FatalAPIError

from plugin_io.log_events import parse_fields
from tap_rapid7.logsearch.budget import server_wait
from tap_rapid7.logsearch.http import LogSearchHttp, ResponseTooLargeError
from tap_rapid7.logsearch.records import (
    OversizedMessageError,
    OversizedTally,
    RecordBuilder,
)
from tap_rapid7.settings import TapSettings
from tap_rapid7.windows import Window
from tests.tap.conftest import API_KEY, BASE, LOG, START_URL, event, page
from tests.tap.loopback import LoopbackServer, read_request

LOGS_URL = f"{BASE}/management/logs"
LOGS = {"logs": [{"id": LOG, "name": LOG}]}
MiB = 1024 * 1024


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [
        parse_fields(record.getMessage()[len(name) :])
        for record in caplog.records
        if record.getMessage().startswith(name + " ")
    ]


# ----------------------------------------------------------------------------- server waits
def _rate_limited_then_ok(requests_mock: Any, headers: dict[str, str], times: int = 1) -> None:
    answers: list[dict[str, Any]] = [
        {"status_code": 429, "headers": headers, "text": "API rate limit exceeded"}
    ] * times
    requests_mock.get(LOGS_URL, [*answers, {"json": LOGS}])


@pytest.mark.parametrize(
    ("headers", "wait", "source"),
    [
        ({"Retry-After": "1000000000"}, 900.0, "Retry-After"),
        ({"X-RateLimit-Reset": "1000000000"}, 900.0, "X-RateLimit-Reset"),
        ({"X-RateLimit-Reset": "99999999999"}, 900.0, "X-RateLimit-Reset"),  # an epoch, far
        ({"Retry-After": "1e308"}, 900.0, "Retry-After"),
        ({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, 900.0, "Retry-After"),
    ],
)
def test_a_wait_longer_than_the_budget_window_is_cut_to_it(
    requests_mock, make_client, fake_time, *, caplog, headers, wait, source
):
    _rate_limited_then_ok(requests_mock, headers)
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        assert client.http.get_json("/management/logs") == LOGS
    assert fake_time.sleeps == [wait]
    (retry,) = _events(caplog, "logsearch_retry")
    assert retry["source"] == source
    assert retry["wait_seconds"] == wait
    assert retry["capped_by"] == "budget_window_seconds"
    assert retry["asked_seconds"] > 900


def test_the_cap_is_the_configured_budget_window(requests_mock, make_client, fake_time):
    _rate_limited_then_ok(requests_mock, {"Retry-After": "1000000000"})
    make_client(budget_window_seconds=60).http.get_json("/management/logs")
    assert fake_time.sleeps == [60.0]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-5", "soon", "", "1e999"])
def test_a_wait_that_is_no_usable_number_falls_back_to_backoff(
    requests_mock, make_client, fake_time, caplog, value
):
    # Three 429s in a row: the tap's own backoff (0.5, 1, 2 s), never back to back, no crash.
    _rate_limited_then_ok(requests_mock, {"Retry-After": value}, times=3)
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        assert client.http.get_json("/management/logs") == LOGS
    assert fake_time.sleeps == [0.5, 1.0, 2.0]
    retries = _events(caplog, "logsearch_retry")
    assert [r["source"] for r in retries] == ["backoff"] * 3
    assert retries[0]["ignored_headers"] == [f"Retry-After={value!r}"]


@pytest.mark.parametrize("value", ["inf", "nan", "-30", "later"])
def test_an_unusable_reset_falls_back_to_backoff(requests_mock, make_client, fake_time, value):
    _rate_limited_then_ok(requests_mock, {"X-RateLimit-Reset": value})
    make_client().http.get_json("/management/logs")
    assert fake_time.sleeps == [0.5]


def test_an_unusable_retry_after_defers_to_a_usable_reset(
    requests_mock, make_client, fake_time, caplog
):
    _rate_limited_then_ok(requests_mock, {"Retry-After": "-1", "X-RateLimit-Reset": "7"})
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        make_client().http.get_json("/management/logs")
    assert fake_time.sleeps == [7.0]
    (retry,) = _events(caplog, "logsearch_retry")
    assert retry["source"] == "X-RateLimit-Reset"
    assert retry["ignored_headers"] == ["Retry-After='-1'"]


def test_an_http_date_retry_after_is_understood(requests_mock, make_client, fake_time):
    _rate_limited_then_ok(
        requests_mock, {"Retry-After": formatdate(fake_time.wall + 30, usegmt=True)}
    )
    make_client().http.get_json("/management/logs")
    assert fake_time.sleeps == [30.0]


def test_an_http_date_in_the_past_falls_back_to_backoff(requests_mock, make_client, fake_time):
    _rate_limited_then_ok(
        requests_mock, {"Retry-After": formatdate(fake_time.wall - 3600, usegmt=True)}
    )
    make_client().http.get_json("/management/logs")
    assert fake_time.sleeps == [0.5]


def test_a_server_that_always_asks_for_years_fails_within_bounded_waits(
    requests_mock, make_client, fake_time
):
    requests_mock.get(LOGS_URL, status_code=429, headers={"Retry-After": "1000000000"})
    with pytest.raises(FatalAPIError, match="failed after 4 attempts"):
        make_client(max_retries=3).http.get_json("/management/logs")
    assert fake_time.sleeps == [900.0] * 3


def test_a_long_announced_reset_holds_the_family_at_most_a_window(
    requests_mock, make_client, fake_time
):
    spent = {"X-RateLimit-Limit": "1500", "X-RateLimit-Remaining": "0"}
    requests_mock.get(
        LOGS_URL,
        [{"json": LOGS, "headers": {**spent, "X-RateLimit-Reset": "1000000000"}}, {"json": LOGS}],
    )
    client = make_client()
    client.http.get_json("/management/logs")
    client.http.get_json("/management/logs")  # the budget is spent: waits for the refill
    assert len(fake_time.sleeps) == 1
    assert 0 < fake_time.sleeps[0] <= 900.0


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "lots"])
def test_absurd_budget_headers_are_ignored_not_a_crash(requests_mock, make_client, value):
    headers = {"X-RateLimit-Limit": value, "X-RateLimit-Remaining": value}
    requests_mock.get(LOGS_URL, json=LOGS, headers={**headers, "X-RateLimit-Reset": "10"})
    client = make_client()
    assert client.http.get_json("/management/logs") == LOGS
    assert client.pacer.snapshot()["management_limit"] is None


def test_server_wait_reports_what_it_ignored_and_cut():
    wall = lambda: 1_700_000_000.0  # noqa: E731
    told = server_wait({"Retry-After": "nan", "X-RateLimit-Reset": "5000"}, wall, max_seconds=900)
    assert (told.seconds, told.source, told.asked_seconds) == (900, "X-RateLimit-Reset", 5000)
    assert told.ignored == ("Retry-After='nan'",)
    long_value = "x" * 500
    told = server_wait({"Retry-After": long_value}, wall)
    assert told.seconds is None
    assert told.source == "backoff"
    assert len(told.ignored[0]) < 60  # a server-chosen value is shown cut


# ----------------------------------------------------------------------------- body sizes
def _serve(head: list[str], body_chunks: Any, status: str = "200 OK") -> Any:
    """A handler answering every request with ``status``, ``head`` and the chunks
    ``body_chunks()`` yields."""

    def handler(conn: socket.socket, server: LoopbackServer) -> None:
        while not server.stopped.is_set():
            raw = read_request(conn)
            if not raw:
                return
            server.record(raw)
            conn.sendall(
                (f"HTTP/1.1 {status}\r\n" + "".join(h + "\r\n" for h in head) + "\r\n").encode()
            )
            for chunk in body_chunks():
                conn.sendall(chunk)

    return handler


def _gzip_bomb(inflated: int, member: int = 16 * MiB) -> bytes:
    """Concatenated gzip members of zeros (a valid gzip stream): about 1000:1."""
    one = gzip.compress(b"\0" * member, compresslevel=9)
    return one * (inflated // member)


def _query(http: LogSearchHttp, url: str) -> Any:
    return http.request(
        f"{url}/query/logs/{LOG}", params={"query": "where(secret-statement)"}, what="query start"
    )


def _peak_while(call: Any) -> tuple[BaseException | None, int]:
    """Run ``call``; return what it raised and the peak of memory traced meanwhile."""
    tracemalloc.start()
    error: BaseException | None = None
    try:
        call()
    except BaseException as exc:  # returned to the test
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


def _assert_one_clear_line(error: BaseException | None, limit: int) -> str:
    assert isinstance(error, ResponseTooLargeError)
    text = str(error)
    assert "\n" not in text
    assert f"/query/logs/{LOG}" in text
    assert f"max_response_bytes ({limit} bytes" in text
    assert "raise max_response_bytes" in text
    assert "secret-statement" not in text  # no query string
    assert "query=" not in text
    assert API_KEY not in text
    return text


def test_a_gzip_bomb_fails_at_the_limit_with_bounded_memory(make_client):
    bomb = _gzip_bomb(2 * 1024 * MiB)  # ~2 MB on the wire, 2 GiB inflated
    assert len(bomb) < 4 * MiB
    head = ["Content-Type: application/json", "Content-Encoding: gzip",
            f"Content-Length: {len(bomb)}"]  # fmt: skip
    limit = 8 * MiB
    with LoopbackServer(_serve(head, lambda: [bomb])) as server:
        client = make_client(base_url=server.url, max_response_bytes=limit)
        error, peak = _peak_while(lambda: _query(client.http, server.url))
        assert len(server.requests) == 1  # not retried
    text = _assert_one_clear_line(error, limit)
    assert "decoded" in text
    assert peak < 4 * limit, f"peak {peak / MiB:.1f} MiB"  # was: everything inflated (GiBs)


def test_a_huge_plain_body_without_length_fails_at_the_limit(make_client):
    chunk = b"[" + b"0," * (MiB // 2)

    def endless() -> Any:
        for _ in range(300):  # 300 MB, streamed until the client hangs up
            yield chunk

    head = ["Content-Type: application/json", "Connection: close"]
    limit = 4 * MiB
    with LoopbackServer(_serve(head, endless)) as server:
        client = make_client(base_url=server.url, max_response_bytes=limit)
        error, peak = _peak_while(lambda: _query(client.http, server.url))
        assert len(server.requests) == 1
    _assert_one_clear_line(error, limit)
    assert peak < 4 * limit, f"peak {peak / MiB:.1f} MiB"


def test_an_announced_length_above_the_limit_fails_before_reading(make_client):
    head = ["Content-Type: application/json", f"Content-Length: {300 * 1000 * 1000}"]
    with LoopbackServer(_serve(head, lambda: [b"[" * 1024])) as server:
        client = make_client(base_url=server.url, max_response_bytes=MiB)
        error, _ = _peak_while(lambda: _query(client.http, server.url))
    text = _assert_one_clear_line(error, MiB)
    assert "Content-Length 300000000" in text


def test_a_body_within_the_limit_is_read_whole(make_client):
    body = gzip.compress(b'{"logs": [' + b'{"id": "x"},' * 10000 + b'{"id": "y"}]}')
    head = ["Content-Type: application/json", "Content-Encoding: gzip",
            f"Content-Length: {len(body)}"]  # fmt: skip
    with LoopbackServer(_serve(head, lambda: [body])) as server:
        client = make_client(base_url=server.url, max_response_bytes=MiB)
        assert len(client.list_logs()) == 10001
        assert client.list_logs()[-1] == {"id": "y"}
        assert server.connections == 1  # the connection went back to the pool


def test_a_page_with_a_300_mb_like_message_fails_naming_the_setting(requests_mock, make_client):
    requests_mock.get(START_URL, json=page([event(1500, 1, message="x" * (3 * MiB))]))
    client = make_client(max_response_bytes=2 * MiB)
    with pytest.raises(ResponseTooLargeError, match="raise max_response_bytes") as caught:
        list(client.read_window(LOG, Window(1000, 2000)))
    assert requests_mock.call_count == 1
    assert f"/query/logs/{LOG}" in str(caught.value)


def test_a_memory_error_while_decoding_is_one_line_naming_the_path(
    requests_mock, make_client, monkeypatch
):
    def no_memory(content: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr("tap_rapid7.logsearch.http.decode_json", no_memory)
    requests_mock.get(LOGS_URL, json=LOGS)
    with pytest.raises(ResponseTooLargeError) as caught:
        make_client().http.get_json("/management/logs")
    text = str(caught.value)
    assert "ran out of memory decoding" in text
    assert "/management/logs" in text
    assert "max_response_bytes" in text
    assert API_KEY not in text


def test_a_memory_error_while_reading_is_one_line_naming_the_path(
    requests_mock, make_client, monkeypatch
):
    def no_memory(self: requests.Response, chunk_size: int = 1) -> Any:
        raise MemoryError
        yield b""  # a generator, as requests' is

    monkeypatch.setattr(requests.Response, "iter_content", no_memory)
    requests_mock.get(LOGS_URL, json=LOGS)
    with pytest.raises(ResponseTooLargeError, match="ran out of memory reading") as caught:
        make_client().http.get_json("/management/logs")
    assert "/management/logs" in str(caught.value)


def test_max_response_bytes_must_be_positive():
    with pytest.raises(FatalAPIError, match="max_response_bytes must be above 0"):
        LogSearchHttp(api_key=API_KEY, base_url=BASE, max_response_bytes=0)


# ----------------------------------------------------------------------------- message sizes
def _build(builder: RecordBuilder, message: str, seq: int = 7) -> dict[str, Any]:
    return builder(event(1500, seq, message=message), LOG, 1500, seq, str(seq))


def test_defaults_match_the_settings():
    settings = TapSettings(api_key="k")
    builder = RecordBuilder()
    assert builder.max_message_bytes == settings.max_message_bytes == 1024 * 1024
    assert builder.oversized_messages == settings.oversized_messages == "truncate"


def test_an_oversized_message_is_truncated_visibly_keeping_its_identity(caplog):
    builder = RecordBuilder(max_message_bytes=1024, tally=OversizedTally())
    message = "é" * 5000  # 10,000 UTF-8 bytes: a cut must not split a character
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        record = _build(builder, message)
    kept = record["message"]
    assert len(kept.encode()) <= 1024
    assert kept.endswith(" [tap-rapid7: message truncated, 10000 bytes > max_message_bytes 1024]")
    assert kept.startswith("é" * 400)
    assert "\ufffd" not in kept
    assert (record["log_id"], record["timestamp"], record["sequence_number_str"]) == (
        LOG, 1500, "7",
    )  # fmt: skip
    (warning,) = _events(caplog, "logsearch_message_truncated")
    assert warning == {
        "log_id": LOG, "timestamp": 1500, "sequence_number": "7", "bytes": 10000,
        "max_message_bytes": 1024, "truncated_in_log": 1,
    }  # fmt: skip


def test_truncation_warnings_are_few_with_a_running_count_per_log(caplog):
    tally = OversizedTally()
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        for window in range(3):  # builders are per window; the count is per log and run
            builder = RecordBuilder(max_message_bytes=1024, tally=tally)
            for seq in range(40):
                _build(builder, "x" * 2000, seq=window * 100 + seq)
            assert builder.truncated == 40
        _build(RecordBuilder(max_message_bytes=1024, tally=tally), "x" * 2000)
    counts = [w["truncated_in_log"] for w in _events(caplog, "logsearch_message_truncated")]
    assert counts == [1, 10, 100]
    assert tally.count(LOG) == 121


def test_messages_within_the_limit_are_untouched(caplog):
    builder = RecordBuilder(max_message_bytes=1024, tally=OversizedTally())
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        assert _build(builder, "x" * 1024)["message"] == "x" * 1024
        assert _build(builder, "é" * 512)["message"] == "é" * 512  # 1024 bytes exactly
    assert caplog.records == []


def test_event_time_comes_from_the_whole_message():
    builder = RecordBuilder(("ts",), max_message_bytes=1024, tally=OversizedTally())
    record = _build(builder, '{"ts": "2024-01-02T03:04:05Z", "pad": "' + "x" * 5000 + '"}')
    assert record["event_time"] == "2024-01-02T03:04:05.000+00:00"
    assert "truncated" in record["message"]


def test_an_oversized_message_fails_the_run_when_so_configured():
    builder = RecordBuilder(max_message_bytes=1024, oversized_messages="fail")
    with pytest.raises(OversizedMessageError) as caught:
        _build(builder, "x" * 300_000, seq=3237201778429120512)
    text = str(caught.value)
    assert "\n" not in text
    for part in (f"log {LOG!r}", "timestamp 1500", "sequence number 3237201778429120512",
                 "300000 bytes", "max_message_bytes (1024)", "oversized_messages"):  # fmt: skip
        assert part in text, part


def test_the_default_limit_applies_to_records_read_through_the_client(
    requests_mock, make_client, caplog
):
    big = "y" * (3 * MiB)  # a 300 MB-like message, at a scale a test can hold
    requests_mock.get(START_URL, json=page([event(1500, 1, message=big), event(1501, 2)]))
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        records = [r for batch in make_client().read_window(LOG, Window(1000, 2000)) for r in batch]
    assert [len(r["message"].encode()) <= 1024 * 1024 for r in records] == [True, True]
    assert records[0]["message"].endswith(f"{3 * MiB} bytes > max_message_bytes 1048576]")
    assert records[1]["message"] == "line"
    assert _events(caplog, "logsearch_message_truncated")[0]["bytes"] == 3 * MiB


def test_the_message_settings_reach_records_read_through_the_client(
    requests_mock, make_client, caplog
):
    requests_mock.get(START_URL, json=page([event(1500, 1, message="z" * 5000)]))
    client = make_client(max_message_bytes=2048, oversized_messages="fail")
    with pytest.raises(FatalAPIError, match=r"above max_message_bytes \(2048\)"):
        list(client.read_window(LOG, Window(1000, 2000)))
    truncating = make_client(max_message_bytes=2048)
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        (record,) = [r for batch in truncating.read_window(LOG, Window(1000, 2000)) for r in batch]
    assert len(record["message"].encode()) <= 2048
    assert record["message"].endswith("5000 bytes > max_message_bytes 2048]")
    (window,) = _events(caplog, "logsearch_window_complete")
    assert window["messages_truncated"] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"oversized_messages": "drop"}, "oversized_messages must be one of truncate, fail"),
        ({"max_message_bytes": 100}, "max_message_bytes must be at least 1024"),
    ],
)
def test_bad_message_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecordBuilder(**kwargs)


# ----------------------------------------------------------------------------- the CLI
TAP = str(Path(sys.executable).parent / "tap-rapid7")


def _run_tap(tmp_path: Path, base_url: str, **more: Any) -> subprocess.CompletedProcess[str]:
    config = {
        "api_key": API_KEY, "base_url": base_url, "log_ids": [LOG],
        "start_date": "2026-11-01T00:00:00Z", "end_date": "2026-11-01T01:00:00Z",
        "max_retries": 2, "backoff_base_seconds": 0.01, "backoff_max_seconds": 0.02,
        "max_concurrent_queries": 1, **more,
    }  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    environ = {k: v for k, v in os.environ.items() if "LOGLEVEL" not in k and "RAPID7" not in k}
    return subprocess.run(
        [TAP, "--config", str(path)], capture_output=True, text=True, env=environ,
        timeout=120, check=False,
    )  # fmt: skip


def _fatal_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "| ERROR " in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert API_KEY not in result.stderr + result.stdout
    return lines[0]


def test_cli_a_gzip_bomb_ends_the_run_with_one_line(tmp_path):
    bomb = _gzip_bomb(256 * MiB)
    head = ["Content-Type: application/json", "Content-Encoding: gzip",
            f"Content-Length: {len(bomb)}"]  # fmt: skip
    with LoopbackServer(_serve(head, lambda: [bomb])) as server:
        result = _run_tap(tmp_path, server.url, max_response_bytes=4 * MiB)
        assert len(server.requests) == 1
    line = _fatal_line(result)
    assert f"/query/logs/{LOG}" in line
    assert "max_response_bytes (4194304 bytes" in line


def test_cli_retry_after_inf_backs_off_then_fails_with_one_line(tmp_path):
    head = ["Retry-After: inf", "Content-Type: text/plain", "Content-Length: 23"]
    handler = _serve(head, lambda: [b"API rate limit exceeded"], "429 Too Many Requests")
    with LoopbackServer(handler) as server:
        result = _run_tap(tmp_path, server.url)
        assert len(server.requests) == 3  # max_retries 2: waited between, never forever
    assert "OverflowError" not in result.stderr
    retries = [line for line in result.stderr.splitlines() if "logsearch_retry" in line]
    assert len(retries) == 2
    assert all("ignored_headers=" in line and "source=backoff" in line for line in retries)
    assert "failed after 3 attempts (rate limit" in _fatal_line(result)
