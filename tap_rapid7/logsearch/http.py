"""HTTP to the Log Search API: session, key, retries, deadlines, redaction, errors users see.

Every request of the tap goes through ``LogSearchHttp.request``: it waits for its family's
budget (``budget.BudgetPacer``), retries what is transient (429, 5xx, timeouts, dropped
connections, bodies that are not what a 2xx must be), decodes the body exactly once, and never
lets the API key into a message. What a status *means* for a query (an expired link, a
rejected statement) is decided here too, so the protocol code above only sees answers or clear
exceptions.

The key's reach: ``X-Api-Key`` goes only to the configured host (scheme, host and port of
``base_url`` or the region's URL). Redirects are never followed by ``requests`` (it would carry
the custom header to any host): one to the same host is followed here, one to another host is
refused, and so is a ``Self``/``Next`` link naming another host.

Time limits: ``request_timeout_seconds`` bounds a whole request (connect, headers and body), not
each read: a deadline watchdog cuts the connection of a request that outlives it, so a server
that drips its answer cannot hang the tap. A TLS failure or an unknown host is not transient and
fails at once; a refused connection gets two quick retries; all of them name the URL and the
setting (``base_url`` or ``region``) to check.

Size limits: a body is read in chunks, counted on the wire (compressed) and decoded, and the
request fails at ``max_response_bytes`` (a gzip bomb of 2 MB inflating to 2 GiB, or a page of
300 MB, would otherwise take gigabytes of memory). Waits a 429 names are bounded too (see
``budget.server_wait``): never longer than the budget window, never a crash on ``inf``.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import msgspec
import requests
import urllib3
from requests.adapters import HTTPAdapter
from singer_sdk.exceptions import FatalAPIError
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from plugin_io.log_events import log_event, redact
from tap_rapid7.logsearch.budget import MANAGEMENT, POLL, BudgetPacer, server_wait
from tap_rapid7.version import USER_AGENT

__all__ = [
    "ForeignHostError",
    "InvalidPageError",
    "LogSearchHttp",
    "QueryRejectedError",
    "QueryRestartNeeded",
    "Reply",
    "ResponseTooLargeError",
    "decode_json",
    "origin_of",
]

PREVIEW_CHARS = 300
# Connecting is quick or it is not happening: at most this long per attempt (or the request
# timeout, if lower); a refused or unanswered connect is retried at most CONNECT_RETRIES times,
# waiting at most CONNECT_RETRY_WAIT_MAX_SECONDS, whatever max_retries says.
CONNECT_TIMEOUT_MAX_SECONDS = 10.0
CONNECT_RETRIES = 2
CONNECT_RETRY_WAIT_MAX_SECONDS = 1.0
MAX_REDIRECTS = 5
# Default of max_response_bytes. A full page is 500 events (per_page's maximum); Rapid7 does not
# publish its largest entry, so assume 64 KiB (syslog-style inputs cut there), JSON-escaped up to
# 6 bytes per byte (\u00XX) plus an event's own fields: ~200 MiB at the very worst. 256 MiB
# stays above that; a body past it is broken or hostile, not a page.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
# Bytes asked of the stream at a time: urllib3 (>= 2.6) then inflates at most this much per read,
# so even a gzip bomb (about 1000:1) never decodes much more than one chunk past the limit.
BODY_CHUNK_BYTES = 64 * 1024
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
_DEFAULT_PORTS = {"http": 80, "https": 443}

logger = logging.getLogger("tap_rapid7.logsearch")

_decoder = msgspec.json.Decoder()


def decode_json(content: bytes | bytearray) -> Any:
    """Decode a response body (msgspec keeps integers exact: sequence numbers exceed 2**53)."""
    return _decoder.decode(content)


class QueryRestartNeeded(Exception):  # noqa: N818 (a signal, not an error for the user)
    """A query cannot continue (expired or invalid link, poll timeout, looping Next): restart it."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class QueryRejectedError(FatalAPIError):
    """The server refused the query itself (HTTP 400): bad LEQL or bad parameters."""


class InvalidPageError(FatalAPIError):
    """A finished answer that is not an events page, or an event without its identity."""


class ForeignHostError(FatalAPIError):
    """A redirect or a link names another host than the configured one: the key is not sent."""


class ResponseTooLargeError(FatalAPIError):
    """A body above ``max_response_bytes`` (on the wire or decoded), or one memory cannot hold.

    Not retried: the same request would bring the same body (and the same memory) again.
    """


@dataclass
class Reply:
    """One HTTP answer, its body decoded once."""

    status_code: int
    body: Any  # decoded JSON, or None
    headers: Mapping[str, str]
    text: str  # redacted, truncated preview for error messages
    url: str

    @property
    def path(self) -> str:
        """The URL's path, for messages (the query string can be long; the key is never in it)."""
        return urlsplit(self.url).path


# A check of a 2xx body: None when it is acceptable, else why not (the request is retried).
BodyCheck = Callable[[Reply], str | None]


def origin_of(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an absolute http(s) URL (default port filled in), else None."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port
    except ValueError:  # a port that is not a number, an unbalanced IPv6 bracket
        return None
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _origin_text(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == _DEFAULT_PORTS[scheme] else f":{port}")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bad_key_character(api_key: str) -> str | None:
    """What in the key cannot go into an HTTP header (requests would quote the key refusing it)."""
    for index, char in enumerate(api_key):
        if "!" <= char <= "~":
            continue
        if char == " ":
            kind = "a space"
        elif char.isascii():
            kind = f"a control character (U+{ord(char):04X})"
        else:
            kind = f"a non-ASCII character (U+{ord(char):04X})"
        return f"{kind} at position {index + 1} of {len(api_key)}"
    return None


# ----------------------------------------------------------------------------- deadlines
class _Watch:
    """One request's deadline: the connections it used, and whether the watchdog cut them."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.done = False
        self._connections: list[Any] = []
        self._lock = threading.Lock()

    def attach(self, connection: Any) -> None:
        with self._lock:
            if not any(known is connection for known in self._connections):
                self._connections.append(connection)
            expired = self.expired
        if expired:
            _cut(connection)

    def cut(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)

    def finish(self) -> None:
        with self._lock:
            self.done = True


def _cut(connection: Any) -> None:
    """Shut a connection's socket down: a read blocked on it returns at once (end of stream)."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        # socket.socket's own shutdown: an SSLSocket's would also drop its TLS object
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for the process: cuts the connections of requests past their deadline.

    ``requests`` only bounds each read (a server sending a byte a second never times out); this
    bounds the whole request. Watches end in ``finish`` and are dropped lazily.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watch) -> None:
        with self._cond:
            earlier = not self._heap or watch.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="logsearch-deadline", daemon=True
                )
                self._thread.start()
            elif earlier:
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, watch = heapq.heappop(self._heap)
                    watch.cut()  # a no-op when it is done
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()
_current = threading.local()


class _Deadline:
    """``with _Deadline(seconds) as watch``: the connections this thread uses in the block are
    cut when ``seconds`` pass before the block ends."""

    def __init__(self, seconds: float) -> None:
        self.watch = _Watch(time.monotonic() + seconds)

    def __enter__(self) -> _Watch:
        _current.watch = self.watch
        _WATCHDOG.add(self.watch)
        return self.watch

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.watch.finish()
        _current.watch = None


def _attach(connection: Any) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.attach(connection)


class _Watched(urllib3.connection.HTTPConnection):
    """A connection that reports to the current request's deadline when used."""

    def connect(self) -> None:
        _attach(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _WatchedHTTPConnection(_Watched):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections report to the current request's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are their own classes
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


# ----------------------------------------------------------------------------- failures
@dataclass
class _Failure:
    """A request that got no HTTP answer: what kind of failure, and its cause in words."""

    kind: str  # tls, dns, connect, timeout, deadline, dropped, invalid
    detail: str
    error: BaseException


_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, urllib3's ``reason``)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)]
        todo.extend(item for item in linked if isinstance(item, BaseException))


def _failure(exc: requests.RequestException, watch: _Watch) -> _Failure:
    causes = list(_causes(exc))
    if watch.expired:
        return _Failure("deadline", "timeout", exc)
    for cause in causes:
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            text = getattr(cause, "verify_message", None) or str(cause)
            return _Failure("tls", _SSL_LOCATION.sub("", str(text)) or type(cause).__name__, exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return _Failure("tls", "TLS handshake failed", exc)
    for cause in causes:
        if isinstance(cause, urllib3.exceptions.NameResolutionError | socket.gaierror):
            gai = next((c for c in causes if isinstance(c, socket.gaierror)), None)
            return _Failure("dns", (gai.strerror if gai else None) or "unknown host", exc)
    if isinstance(exc, requests.ConnectTimeout):
        return _Failure("connect", "no answer to connect", exc)
    for cause in causes:
        if isinstance(cause, urllib3.exceptions.NewConnectionError):
            os_error = next((c for c in causes if isinstance(c, OSError) and c.strerror), None)
            detail = (os_error.strerror if os_error else None) or "cannot connect"
            return _Failure("connect", detail.lower(), exc)
    if isinstance(exc, requests.Timeout):
        return _Failure("timeout", "timeout", exc)
    if isinstance(
        exc,
        requests.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    ):
        return _Failure("dropped", "connection error", exc)
    return _Failure("invalid", type(exc).__name__, exc)


class LogSearchHttp:
    """Thread-safe HTTP for one API key: one session per thread, one budget pacer for all.

    ``url_setting`` names where ``base_url`` comes from, for messages: ``base_url`` or the
    region (e.g. ``region us``).
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        max_retries: int = 8,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        request_timeout_seconds: float = 60.0,
        link_lifetime_seconds: float = 20.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        pacer: BudgetPacer | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        url_setting: str = "base_url",
    ) -> None:
        problem = _bad_key_character(api_key)
        if problem:
            msg = (
                f"the api_key setting has {problem}, which an HTTP header cannot carry: check "
                "where the key comes from (a secret file or variable with a line break, a "
                "byte-order mark or a pasted quote inside)"
            )
            raise FatalAPIError(msg)
        self.base_url = base_url.rstrip("/")
        self.url_setting = url_setting
        origin = origin_of(self.base_url)
        if origin is None:
            msg = (
                f"the {url_setting} setting must be an absolute http:// or https:// URL, "
                f"got {self.base_url!r}"
            )
            raise FatalAPIError(redact(msg, [api_key]))
        self.origin = origin
        self._api_key = api_key
        self.max_retries = max_retries
        # Set by the first HTTP answer: from then on a timeout is the service being slow
        # (retried up to max_retries), before it a sign that nothing answers there at all.
        self.host_answered = False
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        if not request_timeout_seconds > 0:
            msg = f"request_timeout_seconds must be above 0, got {request_timeout_seconds}"
            raise FatalAPIError(msg)
        self.request_timeout_seconds = request_timeout_seconds
        if not max_response_bytes > 0:
            msg = f"max_response_bytes must be above 0, got {max_response_bytes}"
            raise FatalAPIError(msg)
        self.max_response_bytes = max_response_bytes
        self.connect_timeout_seconds = min(CONNECT_TIMEOUT_MAX_SECONDS, request_timeout_seconds)
        self.clock = clock
        self.sleep = sleep
        self._wall_clock = wall_clock
        self.link_lifetime_seconds = link_lifetime_seconds
        self.pacer = pacer or BudgetPacer(clock=clock, sleep=sleep, wall_clock=wall_clock)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        if origin[0] == "http" and not _is_loopback(origin[1]):
            log_event(
                logger, logging.WARNING, "logsearch_insecure_base_url",
                base_url=_origin_text(origin), setting=url_setting,
                reason="plain http to a host that is not this machine: the API key crosses "
                "the network unencrypted; use https",
            )  # fmt: skip

    def url(self, path: str) -> str:
        """Absolute URL of an API path (continuation hrefs are used verbatim instead)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = _DeadlineAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # The key is not a session header: it is added per request, after the host check.
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every thread's session (their kept-alive connections)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced."""
        return redact(text, [self._api_key])

    def _preview(self, content: bytes | bytearray) -> str:
        # Keep the key's length beyond the cut, so a key that starts inside the kept prefix is
        # whole when it is redacted (a key cut in half would slip past the redaction).
        keep = PREVIEW_CHARS * 4 + len(self._api_key.encode())
        text = content[:keep].decode("utf-8", errors="replace")
        text = self.redact(text)
        return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."

    def backoff_seconds(self, attempt: int) -> float:
        """Exponential backoff for retry number ``attempt`` (0-based), capped."""
        return min(self.backoff_max_seconds, self.backoff_base_seconds * (2**attempt))

    def _setting_hint(self) -> str:
        return f"the {self.url_setting} setting ({_origin_text(self.origin)})"

    def _where(self, url: str) -> str:
        """A URL for messages: scheme, host, port and path (the query string can be long)."""
        origin = origin_of(url)
        path = urlsplit(url).path
        return f"{_origin_text(origin)}{path}" if origin else repr(url)

    def link_url(
        self, href: Any, *, rel: str, reply: Reply, log_id: str | None, window: str | None
    ) -> str:
        """The URL a body's ``Self``/``Next`` link names, checked before anything is sent to it.

        Raises ``InvalidPageError`` when it is not an absolute http(s) URL and
        ``ForeignHostError`` when it names another host than the configured one.
        """
        where = f" for log {log_id!r}" if log_id else ""
        where += f" window {window}" if window else ""
        if not isinstance(href, str) or origin_of(href) is None:
            shown = "missing" if href in (None, "") else self.redact(repr(href))[:200]
            msg = (
                f"Log Search sent a {rel} link that is not an absolute http(s) URL ({shown})"
                f"{where} (at {reply.path}, field links[rel={rel}].href)"
            )
            raise InvalidPageError(msg)
        self._require_configured_host(
            href, f"sent a {rel} link{where} (at {reply.path}, field links[rel={rel}].href)"
        )
        return href

    def _require_configured_host(self, url: str, how: str) -> None:
        origin = origin_of(url)
        if origin == self.origin:
            return
        named = _origin_text(origin) if origin else repr(url)
        msg = (
            f"Log Search {how} to another host: {named}, not the configured "
            f"{_origin_text(self.origin)} ({self.url_setting} setting). The API key is only "
            "sent to the configured host, so the tap does not follow it; if the service moved, "
            f"change {self.url_setting}"
        )
        raise ForeignHostError(self.redact(msg))

    def _give_up_or_log(
        self, what: str, attempt: int, reason: str, wait: float, **fields: Any
    ) -> None:
        if attempt >= self.max_retries:
            detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            msg = (
                f"Log Search {what} failed after {attempt + 1} attempts ({reason}; {detail}); "
                f"raise max_retries or check the service and {self._setting_hint()}"
            )
            raise FatalAPIError(self.redact(msg))
        log_event(
            logger, logging.WARNING, "logsearch_retry",
            **fields, attempt=attempt + 1, wait_seconds=round(wait, 3), reason=reason, what=what,
        )  # fmt: skip

    def _send(
        self, method: str, url: str, params: Mapping[str, Any] | None, json_body: Any, what: str
    ) -> tuple[requests.Response, bytearray] | _Failure:
        """One HTTP exchange within the request deadline, or what kept it from an answer."""
        with _Deadline(self.request_timeout_seconds) as watch:
            try:
                response = self._session().request(
                    method, url, params=params, json=json_body,
                    headers={"X-Api-Key": self._api_key}, allow_redirects=False,
                    timeout=(self.connect_timeout_seconds, self.request_timeout_seconds),
                    stream=True,
                )  # fmt: skip
                try:
                    return response, self._read_body(response, what)
                finally:
                    # Read to the end, the connection goes back to the pool; cut short (too
                    # large), it is closed rather than drained.
                    response.close()
            except requests.RequestException as exc:
                return _failure(exc, watch)

    def _too_large(self, what: str, url: str, how: str) -> ResponseTooLargeError:
        limit = self.max_response_bytes
        msg = (
            f"Log Search {what}: the answer from {self._where(url)} is larger than "
            f"max_response_bytes ({limit} bytes, {limit / 2**20:.4g} MiB; {how}); not retried. "
            "A Log Search page is far smaller: check the service and "
            f"{self._setting_hint()}, or raise max_response_bytes"
        )
        return ResponseTooLargeError(self.redact(msg))

    def _read_body(self, response: requests.Response, what: str) -> bytearray:
        """The decoded body, read in chunks and refused past ``max_response_bytes``.

        Both counts are checked: bytes on the wire (``raw.tell()``, compressed) and bytes
        decoded, so neither a huge plain body nor a small gzip bomb grows memory much beyond
        the limit. A ``MemoryError`` (a limit set above what the machine has) is one clear line
        too, not a traceback.
        """
        limit = self.max_response_bytes
        url = response.url
        announced = (response.headers.get("Content-Length") or "").strip()
        if announced.isdigit() and int(announced) > limit:
            raise self._too_large(what, url, f"Content-Length {announced}")
        body = bytearray()
        raw = response.raw
        try:
            for chunk in response.iter_content(BODY_CHUNK_BYTES):
                body += chunk
                wire = raw.tell() if hasattr(raw, "tell") else 0
                if len(body) > limit or wire > limit:
                    how = (
                        f"{len(body)} bytes decoded so far"
                        if len(body) > limit
                        else f"{wire} bytes on the wire so far"
                    )
                    body = bytearray()  # free it before the error travels up
                    raise self._too_large(what, url, how)
        except MemoryError:
            body = bytearray()
            raise self._out_of_memory(what, url, "reading") from None
        return body

    def _out_of_memory(self, what: str, url: str, doing: str) -> ResponseTooLargeError:
        msg = (
            f"Log Search {what}: ran out of memory {doing} the answer from {self._where(url)} "
            f"(max_response_bytes is {self.max_response_bytes} bytes); lower "
            "max_response_bytes, per_page or max_concurrent_queries, or give the tap more memory"
        )
        return ResponseTooLargeError(self.redact(msg))

    def _fail_transport(
        self, failure: _Failure, what: str, url: str, attempts: int, **fields: Any
    ) -> None:
        """Raise the error for a request that got no answer (the cause stays chained)."""
        label = f"Log Search {what}"
        if fields.get("log_id"):
            label += f" for log {fields['log_id']!r}"
        target = self._where(url)
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        hint = self._setting_hint()
        if failure.kind == "tls":
            msg = (
                f"{label}: TLS failed with {target} ({failure.detail}); not retried. Check "
                f"{hint}: an https:// URL needs a TLS server with a certificate valid for "
                "its name (a plain-http server, such as the emulator, needs http://)"
            )
        elif failure.kind == "dns":
            msg = (
                f"{label}: cannot resolve the host of {target} ({failure.detail}); not "
                f"retried. Check {hint} and this machine's DNS"
            )
        elif failure.kind == "connect":
            msg = (
                f"{label}: cannot connect to {target} ({failure.detail}, {tries}). Check "
                f"{hint}: is the service running there and reachable from here?"
            )
        elif failure.kind in ("deadline", "timeout"):
            msg = (
                f"{label}: {target} did not complete its answer within request_timeout_seconds "
                f"({self.request_timeout_seconds:g} s; {tries}). Check the service and {hint}, "
                "or raise request_timeout_seconds"
            )
        elif failure.kind == "invalid":
            msg = f"{label}: the request to {target} could not be made ({failure.detail})"
        else:
            msg = (
                f"{label}: {failure.detail} with {target} ({tries}); raise max_retries or "
                f"check the service and {hint}"
            )
        raise FatalAPIError(self.redact(msg)) from failure.error

    def request(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        what: str,
        family: str = MANAGEMENT,
        log_id: str | None = None,
        window: str | None = None,
        check: BodyCheck | None = None,
    ) -> Reply:
        """GET ``url``; retry 429/5xx/timeouts/dropped connections and 2xx bodies that ``check``
        refuses; decode the body once (a ``json_body`` makes it a POST). ``family`` is the
        budget the request counts against (``query``, ``poll``, ``management``); ``log_id`` and
        ``window`` label logs and errors.

        A poll waits for its budget at most half a link lifetime, and a 429 on a poll whose wait
        would outlive the link raises ``QueryRestartNeeded`` at once: the link is lost either
        way, and waiting first would only delay the restart.

        Only the configured host gets the key: ``url`` and any redirect must be on it
        (``ForeignHostError`` otherwise). TLS and name-resolution failures are not retried; a
        connection that cannot be made is retried at most ``CONNECT_RETRIES`` times.
        """
        self._require_configured_host(url, f"was asked to send {what}")
        attempt = 0
        connect_failures = 0
        redirects = 0
        method = "GET" if json_body is None else "POST"
        path = urlsplit(url).path
        poll = family == POLL
        while True:
            self.pacer.acquire(family, max_wait=self.link_lifetime_seconds / 2 if poll else None)
            sent = self._send(method, url, params, json_body, what)
            if isinstance(sent, _Failure):
                fields = {"error": type(sent.error).__name__, "log_id": log_id,
                          "window": window, "path": path}  # fmt: skip
                if sent.kind in ("tls", "dns", "invalid"):
                    self._fail_transport(sent, what, url, attempt + 1, **fields)
                # A host that has not answered once in this run is not busy but unreachable
                # or not a Log Search server (a silent port): fail as quickly as a refused one.
                if sent.kind == "connect" or (
                    sent.kind in ("deadline", "timeout") and not self.host_answered
                ):
                    connect_failures += 1
                    wait = min(self.backoff_seconds(attempt), CONNECT_RETRY_WAIT_MAX_SECONDS)
                    if connect_failures > CONNECT_RETRIES or attempt >= self.max_retries:
                        self._fail_transport(sent, what, url, attempt + 1, **fields)
                else:
                    wait = self.backoff_seconds(attempt)
                    if attempt >= self.max_retries:
                        self._fail_transport(sent, what, url, attempt + 1, **fields)
                log_event(
                    logger, logging.WARNING, "logsearch_retry", **fields, attempt=attempt + 1,
                    wait_seconds=round(wait, 3), reason=sent.detail, what=what,
                )  # fmt: skip
                self.sleep(wait)
                attempt += 1
                continue
            response, content = sent
            self.host_answered = True
            status = response.status_code
            if logger.isEnabledFor(logging.DEBUG):
                log_event(
                    logger, logging.DEBUG, "logsearch_response", what=what, log_id=log_id,
                    status_code=status, bytes=len(content), preview=self._preview(content),
                )  # fmt: skip
            location = response.headers.get("Location")
            if status in _REDIRECTS and location:
                target = urljoin(url, location)
                self._require_configured_host(
                    target, f"redirected {what} (HTTP {status} at {path})"
                )
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    msg = (
                        f"Log Search {what} was redirected more than {MAX_REDIRECTS} times "
                        f"(last at {path}); check {self._setting_hint()}"
                    )
                    raise FatalAPIError(self.redact(msg))
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method, json_body = "GET", None  # as browsers and requests do
                url, params, path = target, None, urlsplit(target).path
                continue
            if status == 429:
                # Bounded: never past the budget window (Rapid7's budgets refill within it),
                # and a header that names no usable wait falls back to the tap's backoff.
                told = server_wait(
                    response.headers, self._wall_clock, max_seconds=self.pacer.window_seconds
                )
                wait = self.backoff_seconds(attempt) if told.seconds is None else told.seconds
                self.pacer.observe(family, response.headers)
                self.pacer.hold(family, wait)
                if poll and wait >= self.link_lifetime_seconds:
                    raise QueryRestartNeeded("rate limited while polling", status_code=429)
                told_fields: dict[str, Any] = {}
                if told.ignored:
                    told_fields["ignored_headers"] = [self.redact(h) for h in told.ignored]
                if told.asked_seconds is not None:
                    told_fields["asked_seconds"] = round(told.asked_seconds, 3)
                    told_fields["capped_by"] = "budget_window_seconds"
                self._give_up_or_log(
                    what, attempt, "rate limit", wait, status_code=status, source=told.source,
                    log_id=log_id, window=window, path=path, **told_fields,
                )  # fmt: skip
                attempt += 1
                continue
            if status >= 500:
                wait = self.backoff_seconds(attempt)
                self._give_up_or_log(
                    what, attempt, "server error", wait, status_code=status, log_id=log_id,
                    window=window, path=path,
                )  # fmt: skip
                self.sleep(wait)
                attempt += 1
                continue
            self.pacer.observe(family, response.headers)
            preview = self._preview(content)
            problem: str | None = None
            body = None
            try:
                body = decode_json(content) if content else None
            except msgspec.DecodeError:
                problem = "invalid JSON body" if 200 <= status < 300 else None
            except MemoryError:
                content = bytearray()  # the traceback keeps this frame: free the body
                raise self._out_of_memory(what, url, "decoding") from None
            del content  # the decoded body is what is kept
            reply = Reply(status, body, response.headers, preview, url)
            if problem is None and check is not None and 200 <= status < 300:
                problem = check(reply)
            if problem is not None:
                wait = self.backoff_seconds(attempt)
                self._give_up_or_log(
                    what, attempt, problem, wait, status_code=status, log_id=log_id,
                    window=window, path=path,
                )  # fmt: skip
                self.sleep(wait)
                attempt += 1
                continue
            return reply

    def raise_for_status(
        self,
        reply: Reply,
        what: str,
        *,
        log_id: str | None = None,
        continuation: bool = False,
    ) -> None:
        """Turn a non-2xx answer into the exception that says what to do about it.

        On a continuation (a ``Self`` poll or a ``Next`` page) 404 means the link expired and
        400 that the server no longer accepts it: both restart the query from the cursor.
        """
        status = reply.status_code
        if 200 <= status < 300:
            return
        message = reply.body.get("message") if isinstance(reply.body, dict) else None
        if status in (401, 403):
            label = "Unauthorized" if status == 401 else "Forbidden"
            msg = (
                f"Log Search refused the API key (HTTP {status} {label}) on {what}: check the "
                "api_key setting, its permissions (read access to logs) and region/base_url"
            )
            raise FatalAPIError(msg)
        if continuation and status == 404:
            raise QueryRestartNeeded("expired link", status_code=404)
        if continuation and status == 400:
            raise QueryRestartNeeded("invalid continuation", status_code=400)
        if status == 404 and log_id is not None:
            msg = (
                f"Log Search has no log with id {log_id!r} (HTTP 404 on {what}): "
                "check the log_ids setting"
            )
            raise FatalAPIError(msg)
        if status == 400:
            code = reply.body.get("errorCode") if isinstance(reply.body, dict) else None
            where = f" for log {log_id!r}" if log_id else ""
            msg = (
                f"Log Search rejected the query{where} (HTTP 400, errorCode {code}): "
                f"{message or reply.text}. Check the query setting."
            )
            raise QueryRejectedError(self.redact(msg))
        msg = (
            f"Log Search {what} failed with HTTP {status} at {reply.path}: {message or reply.text}"
        )
        raise FatalAPIError(self.redact(msg))

    def get_json(self, path: str, *, what: str | None = None) -> Any:
        """GET a management path (e.g. ``/management/logs``) and return its decoded body."""
        what = what or path
        reply = self.request(self.url(path), what=what)
        self.raise_for_status(reply, what)
        return reply.body
