"""The one place that speaks HTTP to the Rapid7 Log Search API.

``LogSearchClient`` holds every HTTP policy: the ``X-Api-Key`` header, URLs by region or
``base_url``, starting a query, polling its ``Self`` link until it is done, following ``Next``
(which may start a new polling cycle), retries (429, 5xx, timeouts, dropped connections), fatal
errors with clear messages, and restarting a window from its cursor when a continuation link has
expired or a query ran too long. It does not know about the SDK's stream objects, so any number
of queries can run at once on one client (sessions are per thread; the rate-limit gate is shared).

The SDK's ``RESTStream``/paginator machinery assumes one HTTP response per page; here one page
is the end of several polls, so the loop lives below it, in this module.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec
import requests
from singer_sdk.exceptions import FatalAPIError

from singer_eventlog import log_event, redact
from tap_rapid7.ratelimit import RateLimitGate, parse_rate_limit_wait
from tap_rapid7.windows import Cursor, Window, WindowFilter, millis_to_iso

__all__ = [
    "REGIONS",
    "LogSearchClient",
    "Page",
    "QueryRejectedError",
    "QueryRestartNeeded",
    "WindowReport",
    "decode_json",
]

REGIONS = ("us", "us2", "us3", "eu", "ca", "au", "ap")
USER_AGENT = "tap-rapid7/0.1"
PREVIEW_CHARS = 300
# Empty pages in a row that still carry a Next link before the query is restarted from the
# cursor (restarts without progress are bounded by max_restarts, so this cannot loop forever).
MAX_EMPTY_PAGES_WITH_NEXT = 3

logger = logging.getLogger("tap_rapid7.client")

_decoder = msgspec.json.Decoder()


def decode_json(content: bytes) -> Any:
    """Decode a response body (msgspec keeps integers exact: sequence numbers exceed 2**53)."""
    return _decoder.decode(content)


class QueryRestartNeeded(Exception):  # noqa: N818 (a signal, not an error for the user)
    """A query cannot continue (expired link, poll timeout, looping Next): restart it."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class QueryRejectedError(FatalAPIError):
    """The server refused the query itself (HTTP 400): bad LEQL or bad parameters."""


@dataclass
class _Reply:
    status_code: int
    body: Any  # decoded JSON (exactly once per HTTP response), or None
    headers: Mapping[str, str]
    text: str  # redacted, truncated preview for error messages


@dataclass
class Page:
    """One completed page of a query, after all its polls."""

    events: list[dict]
    link_rels: list[str]
    status_code: int
    polls: int
    elapsed_seconds: float
    number: int
    next_href: str | None = None
    body_keys: list[str] = field(default_factory=list)


@dataclass
class WindowReport:
    """What reading one window did (filled in as the window is read)."""

    log_id: str
    window: Window
    events: int = 0
    duplicates_dropped: int = 0
    out_of_window_dropped: int = 0
    resume_skipped: int = 0
    pages: int = 0
    restarts: int = 0
    stalls: int = 0
    elapsed_seconds: float = 0.0
    page_sizes: list[int] = field(default_factory=list)


def _links(body: Any) -> list[dict]:
    links = body.get("links") if isinstance(body, dict) else None
    return [link for link in links or [] if isinstance(link, dict)]


def _href(body: Any, rel: str) -> str | None:
    """The href of the first link whose ``rel`` matches, case-insensitively (never by position)."""
    for link in _links(body):
        if str(link.get("rel", "")).lower() == rel:
            return link.get("href")
    return None


def _not_advancing(page_max: int | None, previous_max: int | None) -> bool:
    """A continued page whose newest event is no newer than the previous page's newest."""
    return page_max is None or (previous_max is not None and page_max <= previous_max)


def _exact_sequence(event: Mapping[str, Any]) -> tuple[int, str]:
    """``(int, str)`` of an event's sequence number, from the exact string when present."""
    text = event.get("sequence_number_str")
    if isinstance(text, str) and text:
        return int(text), text
    number = event.get("sequence_number")
    if isinstance(number, int) and not isinstance(number, bool):
        return number, str(number)
    msg = f"event without a usable sequence number: {sorted(event)}"
    raise FatalAPIError(msg)


def _to_record(event: Mapping[str, Any], log_id: str, timestamp: int, seq: int, seq_str: str):
    message = event.get("message")
    if message is not None and not isinstance(message, str):
        message = msgspec.json.encode(message).decode()
    return {
        "log_id": event.get("log_id") or log_id,
        "timestamp": timestamp,
        "event_time": millis_to_iso(timestamp),
        "sequence_number": seq,
        "sequence_number_str": seq_str,
        "message": message,
        "labels": _labels(event.get("labels")),
    }


def _labels(labels: Any) -> list[dict]:
    """Labels as the schema declares them (``[{"id": ...}]``); usually empty."""
    if not labels:
        return []
    return [{"id": label.get("id")} for label in labels if isinstance(label, dict)]


class LogSearchClient:
    """A thread-safe Log Search client with all retry, polling and paging policy."""

    def __init__(
        self,
        *,
        api_key: str,
        region: str = "us",
        base_url: str | None = None,
        per_page: int = 500,
        poll_interval_seconds: float = 1.0,
        poll_interval_max_seconds: float = 5.0,
        poll_timeout_seconds: float = 600.0,
        max_retries: int = 8,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        request_timeout_seconds: float = 60.0,
        max_restarts: int = 5,
        gate: RateLimitGate | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            msg = "the api_key setting is empty"
            raise FatalAPIError(msg)
        if base_url is None and region not in REGIONS:
            msg = f"unknown region {region!r} (setting region): expected one of {REGIONS}"
            raise FatalAPIError(msg)
        if not 1 <= per_page <= 500:
            msg = f"per_page must be within 1..500, got {per_page}"
            raise FatalAPIError(msg)
        self.base_url = (base_url or f"https://{region}.rest.logs.insight.rapid7.com").rstrip("/")
        self._api_key = api_key
        self.per_page = per_page
        self.poll_interval_seconds = poll_interval_seconds
        self.poll_interval_max_seconds = max(poll_interval_seconds, poll_interval_max_seconds)
        self.poll_timeout_seconds = poll_timeout_seconds
        self.max_retries = max_retries
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.max_restarts = max_restarts
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self.gate = gate or RateLimitGate(clock=clock, sleep=sleep, wall_clock=wall_clock)
        self._local = threading.local()
        self._counter_lock = threading.Lock()
        self.requests_sent = 0
        self.in_flight = 0
        self.max_in_flight = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> LogSearchClient:
        """Build a client from the tap's config dict (the settings in conventions.md)."""
        # The SDK reads JSON numbers as Decimal: coerce each setting to the type it means.
        types: dict[str, Callable[[Any], Any]] = {
            "api_key": str, "region": str, "base_url": str, "per_page": int,
            "poll_interval_seconds": float, "poll_interval_max_seconds": float,
            "poll_timeout_seconds": float, "max_retries": int, "backoff_base_seconds": float,
            "backoff_max_seconds": float, "request_timeout_seconds": float, "max_restarts": int,
        }  # fmt: skip
        kwargs = {
            name: cast(config[name]) for name, cast in types.items() if config.get(name) is not None
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # ---------------------------------------------------------------- HTTP with retries

    def url(self, path: str) -> str:
        """Absolute URL of an API path (continuation hrefs are used verbatim instead)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"X-Api-Key": self._api_key, "User-Agent": USER_AGENT})
            self._local.session = session
        return session

    def _redact(self, text: str) -> str:
        return redact(text, [self._api_key])

    def _preview(self, content: bytes) -> str:
        # Keep the key's length beyond the cut, so a key that starts inside the kept prefix is
        # whole when it is redacted (a key cut in half would slip past the redaction).
        keep = PREVIEW_CHARS * 4 + len(self._api_key.encode())
        text = content[:keep].decode("utf-8", errors="replace")
        text = self._redact(text)
        return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."

    def backoff_seconds(self, attempt: int) -> float:
        """Exponential backoff for retry number ``attempt`` (0-based), capped."""
        return min(self.backoff_max_seconds, self.backoff_base_seconds * (2**attempt))

    def _give_up_or_log(
        self, what: str, attempt: int, reason: str, wait: float, **fields: Any
    ) -> None:
        if attempt >= self.max_retries:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            msg = (
                f"Log Search {what} failed after {attempt + 1} attempts ({reason}; {detail}); "
                "raise max_retries or check the service"
            )
            raise FatalAPIError(self._redact(msg))
        log_event(
            logger, logging.WARNING, "logsearch_retry",
            **fields, attempt=attempt + 1, wait_seconds=round(wait, 3), reason=reason, what=what,
        )  # fmt: skip

    def _track(self, delta: int) -> None:
        with self._counter_lock:
            self.in_flight += delta
            if delta > 0:
                self.requests_sent += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _request(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        what: str,
        log_id: str | None = None,
    ) -> _Reply:
        """GET ``url``; retry 429/5xx/timeouts/dropped connections; decode the body once."""
        attempt = 0
        while True:
            self.gate.wait()
            self._track(+1)
            try:
                response = self._session().get(
                    url, params=params, timeout=self.request_timeout_seconds
                )
                content = response.content
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:  # a dropped connection or a body cut short
                wait = self.backoff_seconds(attempt)
                reason = "timeout" if isinstance(exc, requests.Timeout) else "connection error"
                self._give_up_or_log(
                    what, attempt, reason, wait, error=type(exc).__name__, log_id=log_id
                )
                self._sleep(wait)
                attempt += 1
                continue
            finally:
                self._track(-1)
            status = response.status_code
            if logger.isEnabledFor(logging.DEBUG):
                log_event(
                    logger, logging.DEBUG, "logsearch_response", what=what, log_id=log_id,
                    status_code=status, bytes=len(content), preview=self._preview(content),
                )  # fmt: skip
            if status == 429:
                told = parse_rate_limit_wait(response.headers, self._wall_clock)
                wait, source = told if told else (self.backoff_seconds(attempt), "backoff")
                self._give_up_or_log(
                    what, attempt, "rate limit", wait, status_code=status, source=source,
                    log_id=log_id,
                )  # fmt: skip
                self.gate.hold(wait)
                attempt += 1
                continue
            if status >= 500:
                wait = self.backoff_seconds(attempt)
                self._give_up_or_log(
                    what, attempt, "server error", wait, status_code=status, log_id=log_id
                )
                self._sleep(wait)
                attempt += 1
                continue
            self.gate.observe(response.headers)
            body = None
            if 200 <= status < 300:
                try:
                    body = decode_json(content)
                except msgspec.DecodeError:
                    wait = self.backoff_seconds(attempt)
                    self._give_up_or_log(
                        what, attempt, "invalid JSON body", wait, status_code=status,
                        log_id=log_id,
                    )  # fmt: skip
                    self._sleep(wait)
                    attempt += 1
                    continue
            elif content:
                try:
                    body = decode_json(content)
                except msgspec.DecodeError:
                    body = None
            return _Reply(status, body, response.headers, self._preview(content))

    def _raise_for_status(
        self, reply: _Reply, what: str, *, log_id: str | None = None, continuation: bool = False
    ) -> None:
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
        if status == 404 and continuation:
            raise QueryRestartNeeded("expired link", status_code=404)
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
            raise QueryRejectedError(self._redact(msg))
        msg = f"Log Search {what} failed with HTTP {status}: {message or reply.text}"
        raise FatalAPIError(self._redact(msg))

    def get_json(self, path: str, *, what: str | None = None) -> Any:
        """GET a management path (e.g. ``/management/logs``) and return its decoded body."""
        what = what or path
        reply = self._request(self.url(path), what=what)
        self._raise_for_status(reply, what)
        return reply.body

    def list_logs(self) -> list[dict]:
        """Every log the key can see (``/management/logs``; not paginated by the API)."""
        return list(self.get_json("/management/logs").get("logs") or [])

    def list_logsets(self) -> list[dict]:
        """Every log set (``/management/logsets``)."""
        return list(self.get_json("/management/logsets").get("logsets") or [])

    # ---------------------------------------------------------------- polling and paging

    @staticmethod
    def _is_running(status_code: int, body: Any) -> bool:
        # Whether Self and Next can come together is unconfirmed: a Next link, or events with
        # no unfinished progress, mean a finished page even when it also names itself.
        if status_code == 202:
            return True
        if not isinstance(body, dict):
            return False
        if _href(body, "next") is not None:
            return False
        progress = body.get("progress")
        if progress is not None and progress < 100:
            return True
        return _href(body, "self") is not None and not body.get("events")

    def _poll_until_done(self, reply: _Reply, *, log_id: str, started: float) -> tuple[_Reply, int]:
        """Poll ``Self`` (waiting, with backoff) until the reply is a finished page."""
        polls = 0
        interval = self.poll_interval_seconds
        while self._is_running(reply.status_code, reply.body):
            href = _href(reply.body, "self")
            if href is None:
                msg = f"query for log {log_id!r} is still running but has no Self link to poll"
                raise FatalAPIError(msg)
            if self._clock() - started > self.poll_timeout_seconds:
                raise QueryRestartNeeded("poll timeout")
            if interval > 0:
                self._sleep(interval)
            interval = min(self.poll_interval_max_seconds, interval * 2)
            reply = self._request(href, what="poll", log_id=log_id)
            self._raise_for_status(reply, "poll", log_id=log_id, continuation=True)
            polls += 1
            log_event(
                logger, logging.DEBUG, "logsearch_poll", log_id=log_id,
                progress=reply.body.get("progress") if isinstance(reply.body, dict) else None,
                polls=polls, elapsed_seconds=round(self._clock() - started, 3),
                status_code=reply.status_code,
            )  # fmt: skip
        return reply, polls

    def query_pages(
        self, log_id: str, from_ms: int, to_ms: int, statement: str | None = None
    ) -> Iterator[Page]:
        """Completed pages of one event query over ``[from_ms, to_ms)`` as the server sends it.

        Raises ``QueryRestartNeeded`` when the query cannot go on (the caller restarts it from
        its own cursor): an expired continuation link (404), a poll timeout, a repeated Next.
        """
        params: dict[str, Any] = {"from": from_ms, "to": to_ms, "per_page": self.per_page}
        if statement:
            params["query"] = statement
        started = self._clock()
        url = self.url(f"/query/logs/{quote(log_id, safe='')}")
        reply = self._request(url, params=params, what="query start", log_id=log_id)
        self._raise_for_status(reply, "query start", log_id=log_id)
        seen_next: set[str] = set()
        number = 0
        empty_pages_in_a_row = 0
        while True:
            reply, polls = self._poll_until_done(reply, log_id=log_id, started=started)
            body = reply.body if isinstance(reply.body, dict) else {}
            number += 1
            next_href = _href(body, "next")
            yield Page(
                events=body.get("events") or [],
                link_rels=[str(link.get("rel")) for link in _links(body)],
                status_code=reply.status_code,
                polls=polls,
                elapsed_seconds=self._clock() - started,
                number=number,
                next_href=next_href,
                body_keys=sorted(body),
            )
            if not next_href:
                return
            empty_pages_in_a_row = 0 if body.get("events") else empty_pages_in_a_row + 1
            if empty_pages_in_a_row >= MAX_EMPTY_PAGES_WITH_NEXT:
                raise QueryRestartNeeded("empty pages with Next links")
            if next_href in seen_next:
                raise QueryRestartNeeded("repeated Next link")
            seen_next.add(next_href)
            started = self._clock()
            reply = self._request(next_href, what="next page", log_id=log_id)
            self._raise_for_status(reply, "next page", log_id=log_id, continuation=True)

    def read_window(
        self,
        log_id: str,
        window: Window,
        resume: Cursor | None = None,
        statement: str | None = None,
        report: WindowReport | None = None,
    ) -> Iterator[list[dict]]:
        """Batches (one per page) of the records of ``window``, exactly, in server order.

        Drops events outside ``[from, to)`` (a server may include ``to``), events at or before
        ``resume`` and duplicates; restarts the query from the last accepted event when a link
        expires or a query times out, and logs one line per page and one per window.
        """
        report = report or WindowReport(log_id, window)
        filt = WindowFilter(window, resume)
        started = self._clock()
        query_from = window.from_ms if resume is None else max(window.from_ms, resume.millis)
        log_event(
            logger, logging.INFO, "logsearch_query_start", log_id=log_id,
            window_from=window.from_ms, window_to=window.to_ms, per_page=self.per_page,
            query_from=query_from,
        )  # fmt: skip
        # Restarts are bounded per run of restarts that made no progress: a slow consumer can
        # let links expire many times in a long window, each restart still moving forward.
        stuck_restarts = 0
        accepted_at_restart = 0
        while True:
            previous_max: int | None = None
            try:
                for page in self.query_pages(log_id, query_from, window.to_ms, statement):
                    batch, page_min, page_max = self._filter_page(page, log_id, filt)
                    report.pages += 1
                    report.page_sizes.append(len(page.events))
                    fields = {
                        "log_id": log_id, "page": report.pages, "status_code": page.status_code,
                        "event_count": len(page.events), "events_total": filt.accepted,
                        "page_min_event_timestamp": page_min,
                        "page_max_event_timestamp": page_max,
                        "window_from": window.from_ms, "window_to": window.to_ms,
                        "next_from_millis": filt.next_from_millis(),
                        "link_rels": page.link_rels, "keys": page.body_keys, "accepted": len(batch),
                        "polls": page.polls,
                        "elapsed_seconds": round(page.elapsed_seconds, 3),
                    }  # fmt: skip
                    log_event(logger, logging.INFO, "logsearch_page_complete", **fields)
                    stalled = page.number > 1 and _not_advancing(page_max, previous_max)
                    if stalled and page.next_href:
                        report.stalls += 1
                        log_event(logger, logging.WARNING, "logsearch_pagination_stalled", **fields)
                    if page_max is not None:
                        previous_max = page_max
                    if batch:
                        yield batch
                break
            except QueryRestartNeeded as signal:
                report.restarts += 1
                progressed = filt.accepted > accepted_at_restart
                stuck_restarts = 1 if progressed else stuck_restarts + 1
                accepted_at_restart = filt.accepted
                if stuck_restarts > self.max_restarts:
                    msg = (
                        f"query for log {log_id!r} window [{window.from_ms}, {window.to_ms}) "
                        f"restarted {self.max_restarts} times without progress "
                        f"({signal.reason}); giving up (setting max_restarts)"
                    )
                    raise FatalAPIError(msg) from signal
                query_from = filt.restart_from_ms()
                log_event(
                    logger, logging.WARNING, "logsearch_retry", log_id=log_id,
                    status_code=signal.status_code, attempt=report.restarts, wait_seconds=0,
                    reason=signal.reason, restart_from=query_from,
                )  # fmt: skip
        report.events = filt.accepted
        report.duplicates_dropped = filt.duplicates_dropped
        report.out_of_window_dropped = filt.out_of_window_dropped
        report.resume_skipped = filt.resume_skipped
        report.elapsed_seconds = self._clock() - started
        log_event(
            logger, logging.INFO, "logsearch_window_complete", log_id=log_id,
            window_from=window.from_ms, window_to=window.to_ms, events=filt.accepted,
            duplicates_dropped=filt.duplicates_dropped,
            out_of_window_dropped=filt.out_of_window_dropped,
            resume_skipped=filt.resume_skipped, pages=report.pages, restarts=report.restarts,
            elapsed_seconds=round(report.elapsed_seconds, 3),
        )  # fmt: skip

    @staticmethod
    def _filter_page(
        page: Page, log_id: str, filt: WindowFilter
    ) -> tuple[list[dict], int | None, int | None]:
        batch: list[dict] = []
        page_min: int | None = None
        page_max: int | None = None
        for event in page.events:
            timestamp = event.get("timestamp")
            if not isinstance(timestamp, int) or isinstance(timestamp, bool):
                msg = f"event in log {log_id!r} without an integer timestamp: {timestamp!r}"
                raise FatalAPIError(msg)
            if page_min is None or timestamp < page_min:
                page_min = timestamp
            if page_max is None or timestamp > page_max:
                page_max = timestamp
            seq, seq_str = _exact_sequence(event)
            if filt.accept(timestamp, seq, seq_str):
                batch.append(_to_record(event, log_id, timestamp, seq, seq_str))
        return batch, page_min, page_max

    # ---------------------------------------------------------------- counts

    def _count_raw(self, log_id: str, from_ms: int, to_ms: int, statement: str | None) -> int:
        leql = f"{statement} calculate(count)" if statement else "calculate(count)"
        started = self._clock()
        url = self.url(f"/query/logs/{quote(log_id, safe='')}")
        params = {"from": from_ms, "to": to_ms, "query": leql}  # no per_page: stats reject it
        for _ in range(self.max_restarts + 1):
            reply = self._request(url, params=params, what="count start", log_id=log_id)
            self._raise_for_status(reply, "count start", log_id=log_id)
            try:
                reply, _polls = self._poll_until_done(reply, log_id=log_id, started=started)
            except QueryRestartNeeded:
                started = self._clock()
                continue
            stats = reply.body.get("statistics") if isinstance(reply.body, dict) else None
            if not isinstance(stats, dict) or not isinstance(stats.get("count"), int | float):
                msg = f"count query for log {log_id!r} returned no statistics.count"
                raise FatalAPIError(msg)
            return int(stats["count"])
        msg = f"count query for log {log_id!r} kept expiring or timing out; giving up"
        raise FatalAPIError(msg)

    def count(self, log_id: str, from_ms: int, to_ms: int, statement: str | None = None) -> int:
        """Number of events of ``log_id`` in ``[from_ms, to_ms)`` (``statement``: a ``where()``).

        Runs ``calculate(count)`` polled to completion. Rapid7 does not document whether ``to``
        is inclusive, so a second count over the single millisecond ``[to_ms, to_ms]`` is taken
        and subtracted: a server with an exclusive ``to`` counts nothing there (or refuses the
        empty range with 400, read as 0), an inclusive one counts exactly the events at
        ``to_ms``, which do not belong to the half-open window. Either way the result is the
        half-open count the tap's windows use.
        """
        total = self._count_raw(log_id, from_ms, to_ms, statement)
        try:
            at_end = self._count_raw(log_id, to_ms, to_ms, statement)
        except QueryRejectedError:
            at_end = 0
        return total - at_end
