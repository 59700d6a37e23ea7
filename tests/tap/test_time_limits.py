"""Hangs and slow failures (issue 11, finding 6), against real loopback sockets.

Waits between attempts go through the fake clock (``fake_time.sleeps``), so a test that retries
too often still finishes at once and fails on the count; only the request deadline is real time
(fractions of a second here). Each message must name the URL and the setting to check.
"""

from __future__ import annotations

import ssl

import pytest
import requests
import urllib3
from singer_sdk.exceptions import FatalAPIError

from tap_rapid7.logsearch import LogSearchClient
from tests.tap.conftest import API_KEY
from tests.tap.loopback import LoopbackServer, closed_port, read_request

DRIP_INTERVAL = 0.05
DRIP_LIMIT = 200  # the server gives up after ~10 s, so a missing deadline fails, not hangs


def test_refused_port_fails_after_few_quick_attempts_naming_url_and_base_url(
    make_client, fake_time
):
    port = closed_port()
    client = make_client(base_url=f"http://127.0.0.1:{port}", max_retries=8)
    with pytest.raises(FatalAPIError) as caught:
        client.list_logs()
    assert str(caught.value) == (
        f"Log Search /management/logs: cannot connect to http://127.0.0.1:{port}/management/logs "
        f"(connection refused, 3 attempts). Check the base_url setting (http://127.0.0.1:{port}): "
        "is the service running there and reachable from here?"
    )
    assert fake_time.sleeps == [0.5, 1.0]  # two quick retries, whatever max_retries says


def test_without_base_url_the_message_names_the_region_setting(requests_mock, fake_time):
    url = "https://eu.rest.logs.insight.rapid7.com/management/logs"
    refused = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    requests_mock.get(url, exc=requests.ConnectionError(urllib3.exceptions.MaxRetryError(
        None, "/management/logs", refused  # type: ignore[arg-type]
    )))  # fmt: skip
    client = LogSearchClient.from_config(
        {"api_key": API_KEY, "region": "eu"}, clock=fake_time.clock, sleep=fake_time.sleep,
        wall_clock=fake_time.wall_clock,
    )  # fmt: skip
    with pytest.raises(FatalAPIError) as caught:
        client.list_logs()
    client.close()
    assert f"cannot connect to {url} (connection refused, 3 attempts)" in str(caught.value)
    assert "Check the region setting (https://eu.rest.logs.insight.rapid7.com)" in str(caught.value)


def plain_http(conn, server):
    """Whatever comes (a TLS ClientHello here), answer like a plain-HTTP server."""
    server.record(conn.recv(65536))
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_tls_to_a_plain_http_server_fails_at_once_naming_url_and_base_url(make_client, fake_time):
    with LoopbackServer(plain_http) as server:
        base = f"https://127.0.0.1:{server.port}"
        with pytest.raises(FatalAPIError) as caught:
            make_client(base_url=base, max_retries=8).list_logs()
    assert server.connections == 1
    assert fake_time.sleeps == []
    message = str(caught.value)
    assert message.startswith(
        f"Log Search /management/logs: TLS failed with {base}/management/logs ("
    )
    assert "WRONG_VERSION_NUMBER" in message or "wrong version number" in message
    assert f"not retried. Check the base_url setting ({base})" in message
    assert isinstance(caught.value.__cause__, requests.exceptions.SSLError)


def test_untrusted_certificate_fails_at_once(requests_mock, make_client, fake_time):
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    requests_mock.get("https://logs.test/management/logs", exc=requests.exceptions.SSLError(error))
    with pytest.raises(FatalAPIError, match=r"TLS failed with https://logs.test/management/logs "
                       r"\(self-signed certificate\); not retried"):  # fmt: skip
        make_client(max_retries=8).list_logs()
    assert requests_mock.call_count == 1
    assert fake_time.sleeps == []


def test_unknown_host_fails_at_once_naming_url_and_base_url(make_client, fake_time):
    base = "https://no-such-host.invalid"  # .invalid never resolves (RFC 6761)
    with pytest.raises(FatalAPIError) as caught:
        make_client(base_url=base, max_retries=8).list_logs()
    message = str(caught.value)
    assert message.startswith(
        f"Log Search /management/logs: cannot resolve the host of {base}/management/logs ("
    )
    assert message.endswith(
        f"); not retried. Check the base_url setting ({base}) and this machine's DNS"
    )
    assert fake_time.sleeps == []


def silent(conn, server):
    server.record(read_request(conn))
    server.stopped.wait()


def drip_body(conn, server):
    server.record(read_request(conn))
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9999\r\n\r\n"
    )
    for _ in range(DRIP_LIMIT):
        conn.sendall(b" ")
        if server.stopped.wait(DRIP_INTERVAL):
            return


def drip_headers(conn, server):
    server.record(read_request(conn))
    for byte in b"HTTP/1.1 200 OK\r\nX-Filler: " + b"x" * DRIP_LIMIT:
        conn.sendall(bytes([byte]))
        if server.stopped.wait(DRIP_INTERVAL):
            return


@pytest.mark.parametrize("handler", [drip_body, drip_headers, silent])
def test_a_slow_answer_is_cut_at_request_timeout_seconds(make_client, fake_time, handler):
    """A server that sends a byte now and then never trips a per-read timeout: the whole
    request has a deadline."""
    with LoopbackServer(handler) as server:
        client = make_client(base_url=server.url, max_retries=1, request_timeout_seconds=0.5)
        with pytest.raises(FatalAPIError) as caught:
            client.list_logs()
    assert str(caught.value) == (
        f"Log Search /management/logs: {server.url}/management/logs did not complete its answer "
        "within "
        f"request_timeout_seconds (0.5 s; 2 attempts). Check the service and the base_url "
        f"setting ({server.url}), or raise request_timeout_seconds"
    )
    assert server.connections == 2
    assert fake_time.sleeps == [0.5]  # one retry, after the backoff


def test_the_deadline_leaves_a_quick_answer_alone(make_client):
    def quick(conn, server):
        while raw := read_request(conn):
            server.record(raw)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"logs":[]}')

    with LoopbackServer(quick) as server:
        client = make_client(base_url=server.url, request_timeout_seconds=30)
        for _ in range(3):  # one kept-alive connection, three requests, no cut
            assert client.list_logs() == []
    assert server.connections == 1


def test_request_timeout_seconds_must_be_positive(make_client):
    with pytest.raises(FatalAPIError, match="request_timeout_seconds must be above 0"):
        make_client(request_timeout_seconds=0)


def test_a_host_that_never_answered_fails_after_the_quick_retries(make_client, fake_time):
    """A silent port (accepts, never answers) is not a busy service: 3 attempts, not 9."""
    with LoopbackServer(silent) as server:
        client = make_client(base_url=server.url, max_retries=8, request_timeout_seconds=0.3)
        with pytest.raises(FatalAPIError) as caught:
            client.list_logs()
    assert "(0.3 s; 3 attempts)" in str(caught.value)
    assert f"the base_url setting ({server.url})" in str(caught.value)
    assert server.connections == 3


def test_once_the_host_answered_a_timeout_gets_every_retry(make_client, fake_time):
    """After one answer, a slow reply is the service being busy: max_retries applies."""
    answered: list[int] = []

    def first_quick_then_silent(conn, server):
        raw = read_request(conn)
        server.record(raw)
        if not answered:
            answered.append(1)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"logs":[]}')
            raw = read_request(conn)  # the next request on this connection: never answered
        server.stopped.wait()

    with LoopbackServer(first_quick_then_silent) as server:
        client = make_client(base_url=server.url, max_retries=4, request_timeout_seconds=0.3)
        assert client.list_logs() == []
        with pytest.raises(FatalAPIError) as caught:
            client.list_logs()
    assert "(0.3 s; 5 attempts)" in str(caught.value)
