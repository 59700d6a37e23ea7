"""HTTP to the Log Search API: session, key, retries, redaction, and the errors users see.

Every request of the tap goes through ``LogSearchHttp.request``: it waits for its family's
budget (``budget.BudgetPacer``), retries what is transient (429, 5xx, timeouts, dropped
connections, bodies that are not what a 2xx must be), decodes the body exactly once, and never
lets the API key into a message. What a status *means* for a query (an expired link, a
rejected statement) is decided here too, so the protocol code above only sees answers or clear
exceptions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import requests
from singer_sdk.exceptions import FatalAPIError

from logfmt_events import log_event, redact
from tap_rapid7.logsearch.budget import MANAGEMENT, POLL, BudgetPacer, parse_rate_limit_wait
from tap_rapid7.version import USER_AGENT

__all__ = [
    "InvalidPageError",
    "LogSearchHttp",
    "QueryRejectedError",
    "QueryRestartNeeded",
    "Reply",
    "decode_json",
]

PREVIEW_CHARS = 300

logger = logging.getLogger("tap_rapid7.logsearch")

_decoder = msgspec.json.Decoder()


def decode_json(content: bytes) -> Any:
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


class LogSearchHttp:
    """Thread-safe HTTP for one API key: one session per thread, one budget pacer for all."""

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
        pacer: BudgetPacer | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.max_retries = max_retries
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.clock = clock
        self.sleep = sleep
        self._wall_clock = wall_clock
        self.link_lifetime_seconds = link_lifetime_seconds
        self.pacer = pacer or BudgetPacer(clock=clock, sleep=sleep, wall_clock=wall_clock)
        self._local = threading.local()

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

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced."""
        return redact(text, [self._api_key])

    def _preview(self, content: bytes) -> str:
        # Keep the key's length beyond the cut, so a key that starts inside the kept prefix is
        # whole when it is redacted (a key cut in half would slip past the redaction).
        keep = PREVIEW_CHARS * 4 + len(self._api_key.encode())
        text = content[:keep].decode("utf-8", errors="replace")
        text = self.redact(text)
        return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."

    def backoff_seconds(self, attempt: int) -> float:
        """Exponential backoff for retry number ``attempt`` (0-based), capped."""
        return min(self.backoff_max_seconds, self.backoff_base_seconds * (2**attempt))

    def _give_up_or_log(
        self, what: str, attempt: int, reason: str, wait: float, **fields: Any
    ) -> None:
        if attempt >= self.max_retries:
            detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            msg = (
                f"Log Search {what} failed after {attempt + 1} attempts ({reason}; {detail}); "
                "raise max_retries or check the service"
            )
            raise FatalAPIError(self.redact(msg))
        log_event(
            logger, logging.WARNING, "logsearch_retry",
            **fields, attempt=attempt + 1, wait_seconds=round(wait, 3), reason=reason, what=what,
        )  # fmt: skip

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
        """
        attempt = 0
        path = urlsplit(url).path
        poll = family == POLL
        while True:
            self.pacer.acquire(family, max_wait=self.link_lifetime_seconds / 2 if poll else None)
            try:
                if json_body is None:
                    response = self._session().get(
                        url, params=params, timeout=self.request_timeout_seconds
                    )
                else:
                    response = self._session().post(
                        url, params=params, json=json_body, timeout=self.request_timeout_seconds
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
                    what, attempt, reason, wait, error=type(exc).__name__, log_id=log_id,
                    window=window, path=path,
                )  # fmt: skip
                self.sleep(wait)
                attempt += 1
                continue
            status = response.status_code
            if logger.isEnabledFor(logging.DEBUG):
                log_event(
                    logger, logging.DEBUG, "logsearch_response", what=what, log_id=log_id,
                    status_code=status, bytes=len(content), preview=self._preview(content),
                )  # fmt: skip
            if status == 429:
                told = parse_rate_limit_wait(response.headers, self._wall_clock)
                wait, source = told if told else (self.backoff_seconds(attempt), "backoff")
                self.pacer.observe(family, response.headers)
                self.pacer.hold(family, wait)
                if poll and wait >= self.link_lifetime_seconds:
                    raise QueryRestartNeeded("rate limited while polling", status_code=429)
                self._give_up_or_log(
                    what, attempt, "rate limit", wait, status_code=status, source=source,
                    log_id=log_id, window=window, path=path,
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
