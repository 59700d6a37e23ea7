"""The real ``tap-rapid7`` CLI against loopback servers that misbehave: each run ends bounded.

One scenario per way a broken or hostile server can try to keep the tap forever or exhaust it:
an endless ``Next`` chain, a query that never finishes, a gzip bomb, a value outside int64 and a
server-named wait of 31 years. Each run must end with exit 1, one ERROR line naming the cause
and no traceback, and never show the key. Bounds are checked by what the tap did (requests
made, the wait it took, its peak memory), not by how fast the machine ran it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from socket import socket

import pytest

from tests.tap.loopback import LoopbackServer, read_request

pytestmark = pytest.mark.e2e

TAP = str(Path(sys.executable).with_name("tap-rapid7"))
KEY = "hostile-test-key-0123456789"
# Runs the command and prints its own peak RSS (KiB) last on stderr: a child's, not the test's.
PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(f'peak_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', "
    "file=sys.stderr); sys.exit(code)"
)
LOG = "log-a"
T0 = 1793491200000  # 2026-11-01T00:00:00Z, the sync's start


def _send(conn: socket, status: str, body: bytes, *headers: tuple[str, str]) -> None:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    conn.sendall(head.encode() + b"\r\n" + body)


def _json(conn: socket, document: object, status: str = "200 OK") -> None:
    _send(conn, status, json.dumps(document).encode(), ("Content-Type", "application/json"))


def _event(timestamp: int, sequence: int) -> dict:
    return {
        "timestamp": timestamp, "sequence_number": sequence,
        "sequence_number_str": str(sequence), "message": "m", "labels": [], "links": [],
    }  # fmt: skip


def _run(handler: Callable[[socket, LoopbackServer], None], tmp_path: Path, **settings: object):
    with LoopbackServer(handler) as server:
        config = {
            "api_key": KEY, "base_url": server.url, "log_ids": [LOG],
            "start_date": "2026-11-01T00:00:00Z", "end_date": "2026-11-01T00:10:00Z",
            "max_concurrent_queries": 1, **settings,
        }  # fmt: skip
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        environ = {k: v for k, v in os.environ.items() if "LOGLEVEL" not in k}
        result = subprocess.run(
            [sys.executable, "-c", PEAK_WRAPPER, TAP, "--config", str(path)],
            capture_output=True, text=True, env=environ,
            timeout=300, check=False,
        )  # fmt: skip
        requests = list(server.requests)
    lines = result.stderr.splitlines()
    errors = [line.split("| ERROR ", 1)[1] for line in lines if "| ERROR " in line]
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert KEY not in result.stderr + result.stdout
    peak_mib = int(lines[-1].removeprefix("peak_kib=")) / 1024
    return errors[0], requests, result, peak_mib


def test_an_endless_next_chain_repeating_one_event_ends_the_run(tmp_path: Path) -> None:
    hrefs = itertools.count()

    def serve(conn: socket, server: LoopbackServer) -> None:
        server.record(read_request(conn))
        link = {"rel": "Next", "href": f"{server.url}/query/next{next(hrefs)}"}
        _json(conn, {"events": [_event(T0 + 1000, 7)], "links": [link]})

    error, requests, _, _ = _run(serve, tmp_path, max_restarts=2)
    assert "restarted 2 times without progress (page without new entries" in error
    assert "giving up (setting max_restarts)" in error
    assert len(requests) <= 2 * (2 + 1)  # two pages per query, 3 queries: no endless chain


def test_a_query_that_never_finishes_is_restarted_once_then_ends_the_run(tmp_path: Path) -> None:
    def serve(conn: socket, server: LoopbackServer) -> None:
        server.record(read_request(conn))
        running = {"progress": 10, "links": [{"rel": "Self", "href": f"{server.url}/q/forever"}]}
        _json(conn, running, "202 Accepted")

    error, requests, _, _ = _run(
        serve, tmp_path, poll_timeout_seconds=1, poll_interval_seconds=0.2,
        poll_interval_max_seconds=0.2,
    )  # fmt: skip
    assert "was still running after poll_timeout_seconds (1 s), 2 times in a row" in error
    starts = [raw for raw in requests if f"/query/logs/{LOG}".encode() in raw.split(b"\r\n")[0]]
    assert len(starts) == 2


def test_a_sequence_number_outside_int64_is_an_invalid_page_never_a_record(
    tmp_path: Path,
) -> None:
    def serve(conn: socket, server: LoopbackServer) -> None:
        server.record(read_request(conn))
        _json(conn, {"events": [_event(T0 + 1000, 2**64 + 5)], "links": []})

    error, _, result, _ = _run(serve, tmp_path, max_retries=1)
    assert "has a sequence_number outside int64 (18446744073709551621)" in error
    assert '"type":"RECORD"' not in result.stdout.replace(" ", "")


def test_a_gzip_bomb_ends_the_run_within_the_response_limit(tmp_path: Path) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    mebibyte = b" " * (1 << 20)
    bomb = b"".join(packer.compress(mebibyte) for _ in range(1024)) + packer.flush()  # 1 GiB

    def serve(conn: socket, server: LoopbackServer) -> None:
        server.record(read_request(conn))
        _send(conn, "200 OK", bomb, ("Content-Type", "application/json"),
              ("Content-Encoding", "gzip"))  # fmt: skip

    error, requests, _, peak_mib = _run(serve, tmp_path, max_response_bytes=16 * 1024 * 1024)
    assert "is larger than max_response_bytes (16777216 bytes, 16 MiB" in error
    assert "not retried" in error
    assert len(requests) == 1
    assert peak_mib < 512, peak_mib  # 1 GiB inflated; the tap stopped near its 16 MiB limit


def test_a_retry_after_of_31_years_waits_the_budget_window_at_most(tmp_path: Path) -> None:
    def serve(conn: socket, server: LoopbackServer) -> None:
        server.record(read_request(conn))
        _send(conn, "429 Too Many Requests", b"{}", ("Retry-After", "1000000000"),
              ("Content-Type", "application/json"))  # fmt: skip

    error, requests, result, _ = _run(serve, tmp_path, max_retries=1, budget_window_seconds=1)
    assert "failed after 2 attempts (rate limit" in error
    assert "asked_seconds=1000000000.0 capped_by=budget_window_seconds" in error
    waits = [line for line in result.stderr.splitlines() if "logsearch_retry" in line]
    assert len(waits) == 1
    assert "wait_seconds=1.0" in waits[0]
    assert len(requests) == 2
