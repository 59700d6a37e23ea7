"""The API key goes to the configured host only, and into no message (issue 11, finding 3).

``requests`` follows redirects by default and strips ``Authorization`` on the way, but not a
custom header such as ``X-Api-Key``: a 302 would hand the key to any host it names. Links in
bodies (``Self``, ``Next``) are followed verbatim, so they are checked the same way.
"""

from __future__ import annotations

import logging

import pytest
from singer_sdk.exceptions import FatalAPIError

from tap_rapid7.logsearch import InvalidPageError, WindowReport
from tap_rapid7.logsearch.http import ForeignHostError
from tap_rapid7.settings import TapSettings
from tap_rapid7.windows import Window
from tests.tap.conftest import API_KEY, BASE, LOG, START_URL, event, page, running
from tests.tap.loopback import LoopbackServer, read_request, request_headers

WINDOW = Window(1000, 2000)


def read_all(client):
    report = WindowReport(LOG, WINDOW)
    return [r for batch in client.read_window(LOG, WINDOW, None, None, report) for r in batch]


def test_redirect_to_another_host_is_refused_and_that_host_never_gets_the_key(make_client):
    """A loopback server answers 302 to another loopback port, which records what it gets."""

    def recorder(conn, server):
        server.record(read_request(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    with LoopbackServer(recorder) as other:

        def redirector(conn, server):
            raw = read_request(conn)
            server.record(raw)
            # the first hop stays on this host (followed, key and all), the second leaves it
            target = "/moved" if b"GET /moved" not in raw else f"{other.url}/stolen"
            conn.sendall(
                f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )

        with LoopbackServer(redirector) as api:
            client = make_client(base_url=api.url)
            with pytest.raises(ForeignHostError) as caught:
                client.list_logs()
    message = str(caught.value)
    assert other.requests == []  # not even a connection with the key
    assert other.connections == 0
    assert "redirected /management/logs (HTTP 302 at /moved) to another host" in message
    assert other.url in message
    assert api.url in message
    assert "base_url" in message
    assert API_KEY not in message
    seen = [request_headers(raw) for raw in api.requests]
    assert [h.get("x-api-key") for h in seen] == [API_KEY, API_KEY]  # same host: followed


@pytest.mark.parametrize(
    "href",
    [
        "https://evil.example/query/stolen",
        "https://logs.test:8443/query/stolen",  # same host name, another port
        "http://logs.test/query/stolen",  # same host, downgraded to plain http
    ],
)
@pytest.mark.parametrize("rel", ["Next", "Self"])
def test_a_link_to_another_host_is_refused_before_anything_is_sent(
    requests_mock, make_client, rel, href
):
    stolen = requests_mock.get(href, json=page([event(1500, 9)]))
    if rel == "Next":
        requests_mock.get(START_URL, json=page([event(1000, 1)], next_href=href))
    else:
        requests_mock.get(START_URL, status_code=202, json=running(href))
    with pytest.raises(ForeignHostError) as caught:
        read_all(make_client())
    assert stolen.call_count == 0
    message = str(caught.value)
    assert f"sent a {rel} link for log {LOG!r} window [999,2000)" in message
    assert f"field links[rel={rel}].href) to another host" in message
    assert href.rsplit("/query", 1)[0] in message  # the link's origin
    assert f"not the configured {BASE} (base_url setting)" in message


@pytest.mark.parametrize(
    ("href", "shown"),
    [("/query/logs/log-a?offset=3", "'/query/logs/log-a?offset=3'"), ("50", "'50'"), (5, "5"),
     (None, "missing"), ("", "missing")],
)  # fmt: skip
def test_a_malformed_link_names_log_window_path_and_field(requests_mock, make_client, href, shown):
    body = page([event(1000, 1)])
    body["links"] = [{"rel": "Next", "href": href}]
    requests_mock.get(START_URL, json=body)
    with pytest.raises(InvalidPageError) as caught:
        read_all(make_client())
    assert str(caught.value) == (
        f"Log Search sent a Next link that is not an absolute http(s) URL ({shown}) for log "
        f"{LOG!r} window [999,2000) (at /query/logs/{LOG}, field links[rel=Next].href)"
    )


@pytest.mark.parametrize(
    ("base_url", "warned"),
    [
        ("http://logs.example.com", True),
        ("http://10.0.0.8:8080/log_search", True),
        ("https://logs.example.com", False),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
    ],
)
def test_plain_http_base_url_to_another_machine_warns_once(make_client, caplog, base_url, warned):
    caplog.set_level(logging.WARNING, logger="tap_rapid7.logsearch")
    make_client(base_url=base_url)
    lines = [r.getMessage() for r in caplog.records if "insecure_base_url" in r.getMessage()]
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert lines[0].startswith("logsearch_insecure_base_url base_url=http://")
        assert "setting=base_url" in lines[0]
        assert "unencrypted" in lines[0]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (API_KEY[:8] + "\n" + API_KEY[8:], "a control character (U+000A) at position 9 of 26"),
        (API_KEY[:8] + "\r\n" + API_KEY[8:], "a control character (U+000D) at position 9 of 27"),
        (API_KEY[:4] + "\u2013" + API_KEY[4:], "a non-ASCII character (U+2013) at position 5"),
        ("\ufeff" + API_KEY, "a non-ASCII character (U+FEFF) at position 1 of 26"),
        (API_KEY[:8] + " " + API_KEY[8:], "a space at position 9 of 26"),
    ],
)
def test_a_key_no_header_can_carry_is_refused_without_being_quoted(
    requests_mock, make_client, key, problem
):
    requests_mock.get(f"{BASE}/management/logs", json={"logs": []})
    with pytest.raises(FatalAPIError) as caught:
        make_client(api_key=key).list_logs()
    message = str(caught.value)
    assert f"the api_key setting has {problem}" in message
    for part in (API_KEY[:8], API_KEY[8:], API_KEY[4:]):
        assert part not in message
        assert part not in repr(caught.value)
    assert requests_mock.call_count == 0


def test_the_settings_repr_leaves_the_key_out():
    settings = TapSettings.from_config({"api_key": API_KEY, "base_url": BASE})
    assert API_KEY not in repr(settings)
    assert "base_url='https://logs.test'" in repr(settings)
