"""tap-rapid7-capacity refuses what is not a count, a time or a setting it can plan with.

Each refusal is one line on stderr naming the value and where it came from, exit status 2, and
no traceback unless --log-level DEBUG.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline_tools.capacity import MAX_EVENTS, checked_count, main
from pipeline_tools.reconcile.cli import UsageError

PROG = "tap-rapid7-capacity: "


class _CountServer(ThreadingHTTPServer):
    body = b"{}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def count_server() -> Iterator[_CountServer]:
    """A Log Search stand-in whose every answer is a finished count (``server.body``)."""
    server = _CountServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _config(tmp_path, server: _CountServer | None = None, **settings) -> str:
    port = server.server_address[1] if server else 9
    config = {
        "api_key": "capacity-test-key",
        "base_url": f"http://127.0.0.1:{port}",
        "max_retries": 0,
        "log_ids": ["log-a"],
        **settings,
    }
    path = tmp_path / "tap.json"
    path.write_text(json.dumps(config))
    return str(path)


def _run(config: str, *extra: str) -> int:
    return main(["--config", config, "--from", "2026-01-01", "--to", "2026-01-02", *extra])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(PROG)
    return lines[0]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"-5", "is -5: not a number of events (expected 0 to 1e+15)"),
        (b"1e300", "is 1e+300: not a number of events (expected 0 to 1e+15)"),
        (b"1" + b"0" * 400, "is about 10^400: not a number of events"),
    ],
)
def test_an_absurd_count_from_the_api_is_refused_with_its_log(
    raw, shown, count_server, tmp_path, capsys
):
    count_server.body = b'{"statistics": {"count": ' + raw + b"}}"
    assert _run(_config(tmp_path, count_server)) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert "the API's calculate(count) for log 'log-a' over the range" in line
    assert shown in line
    assert captured.out == ""  # no plan printed from it


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity"])
def test_a_count_that_is_no_json_number_is_an_api_failure_in_one_line(
    raw, count_server, tmp_path, capsys
):
    count_server.body = b'{"statistics": {"count": ' + raw + b"}}"
    assert _run(_config(tmp_path, count_server)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "could not estimate: FatalAPIError: Log Search count start failed" in line
    assert "invalid JSON" in line


def test_an_answer_int_refuses_is_named_with_its_log(monkeypatch, tmp_path, capsys):
    from tap_rapid7.logsearch.query import QueryProtocol

    def count_range(self, log_id, from_ms, to_ms, statement=None):
        return int(float("nan"))  # what the protocol's int() does with a NaN count

    monkeypatch.setattr(QueryProtocol, "count_range", count_range)
    assert _run(_config(tmp_path)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "calculate(count) for log 'log-a' over the range is not a number of events" in line
    assert "cannot convert float NaN to integer" in line


def test_a_real_count_from_the_same_server_is_planned(count_server, tmp_path, capsys):
    count_server.body = b'{"statistics": {"count": 1000}}'
    assert _run(_config(tmp_path, count_server)) == 0
    out = capsys.readouterr().out
    assert re.search(r"^log-a\s+1000\s+2$", out, re.MULTILINE), out


def test_counts_are_checked_whatever_their_type():
    assert checked_count("a", 0) == 0
    assert checked_count("a", MAX_EVENTS) == MAX_EVENTS
    assert checked_count("a", 12.0) == 12
    for bad, text in [
        (-1, "is -1:"),
        (MAX_EVENTS + 1, "is 1000000000000001:"),
        (1.5, "is 1.5: not a whole, finite number"),
        (float("nan"), "is nan:"),
        (float("inf"), "is inf:"),
        (True, "is True: not a number"),
        ("12", "is '12': not a number"),
        (None, "is None: not a number"),
    ]:
        with pytest.raises(UsageError, match=r"calculate\(count\) for log 'a'") as info:
            checked_count("a", bad)
        assert text in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "-5", "--to", "2026-01-02"], "--from -5: out of range"),
        (["--from", "2026-01-01", "--to", "1" + "0" * 30], "--to 1000"),
        (["--from", "1e300", "--to", "2026-01-02"], "--from: not an ISO 8601 time"),
        (["--from", "2026-01-01", "--to", "2026-01-02", "--log-id", " "], "--log-id must not"),
    ],
)
def test_absurd_arguments_are_one_line(args, message, tmp_path, capsys):
    assert main(["--config", _config(tmp_path), *args]) == 2
    assert message in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("window", [0, -60, "NaN"])
def test_a_window_that_is_no_length_is_refused_before_any_request(window, tmp_path, capsys):
    config = tmp_path / "tap.json"
    # json.dumps writes NaN as the bare token NaN, which json.loads reads back as a float
    value = float(window) if window == "NaN" else window
    config.write_text(json.dumps({"api_key": "k", "base_url": "http://127.0.0.1:9",
                                  "window_seconds": value}))  # fmt: skip
    assert _run(str(config)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "setting window_seconds: expected a positive number, got" in line


@pytest.mark.parametrize("problem", ["missing", "unreadable", "malformed", "not an object"])
def test_a_config_that_cannot_be_read_is_one_line(problem, tmp_path, capsys):
    path = tmp_path / "tap.json"
    if problem == "unreadable":
        path.mkdir()  # reading a directory fails for root too
    elif problem == "malformed":
        path.write_text('{"api_key": ')
    elif problem == "not an object":
        path.write_text("[1, 2]")
    assert _run(str(path)) == 2
    assert f"--config {path}" in _one_line(capsys.readouterr().err)


def test_debug_adds_the_traceback_and_still_never_the_key(count_server, tmp_path, capsys):
    count_server.body = b'{"statistics": {"count": -5}}'
    assert _run(_config(tmp_path, count_server), "--log-level", "DEBUG") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith(PROG)
    # an API failure's traceback at DEBUG is redacted like its line
    key = "capacity-secret-key-456\n"
    config = _config(tmp_path, None, api_key=key)
    assert _run(config, "--log-level", "debug") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "could not estimate" in err
    assert "capacity-secret-key-456" not in err
