"""The asynchronous query protocol: start, poll ``Self``, follow ``Next``, ``calculate(count)``.

Rapid7's OpenAPI document (``rapid7-logsearch-api.md`` §11) defines completion: a query is
complete when the body has no link with ``rel`` ``Self``; a body with a ``Next`` link is complete
too (Rapid7's own sample client). A ``Next`` link launches a new query, which may need polling
again. A *finished* body must be an events page: a JSON object with an ``events`` list. Anything
else (``{}``, ``{"events": null}``, a body without ``events``, as a proxy or a truncated answer
can give) is retried like a server error and then fails loudly; it never counts as "done and
empty", which would move STATE past events that exist.

The SDK's ``RESTStream``/paginator machinery assumes one HTTP response per page; here one page
is the end of several polls, so the loop lives here, below the streams.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from singer_sdk.exceptions import FatalAPIError

from plugin_io.log_events import log_event
from tap_rapid7.logsearch.budget import POLL, QUERY
from tap_rapid7.logsearch.http import InvalidPageError, LogSearchHttp, QueryRestartNeeded, Reply

__all__ = [
    "Page",
    "PagingBrake",
    "PollTimeout",
    "QueryProtocol",
    "beyond_retention",
    "is_running",
    "page_problem",
    "with_query_param",
]

# Empty pages in a row that still carry a Next link before the query is restarted from the
# cursor (restarts without progress are bounded by max_restarts, so this cannot loop forever).
MAX_EMPTY_PAGES_WITH_NEXT = 3
# Poll timeouts in a row without progress before a query fails: it is restarted once (a server
# may have lost it), not max_restarts times: a query that never finishes cost
# (max_restarts + 1) x poll_timeout_seconds, an hour with the defaults; now 2 x, 20 minutes.
MAX_POLL_TIMEOUTS = 2
BEYOND_RETENTION_HEADER = "x-beyond-retention"
KVP_INFO_PARAM = "kvp_info"
BEYOND_RETENTION_MESSAGE_HEADER = "x-beyond-retention-message"

logger = logging.getLogger("tap_rapid7.logsearch")


class PollTimeout(QueryRestartNeeded):
    """A query still running after ``poll_timeout_seconds``: restarted once, then the run fails.

    Restarting a query the server never finishes only repeats the wait: with the old rule
    (``max_restarts`` restarts without progress) that was six poll timeouts, an hour by default.
    """

    def __init__(self, path: str) -> None:
        super().__init__("poll timeout")
        self.path = path


class PagingBrake(QueryRestartNeeded):
    """A query chain that pages without getting anywhere: restart it from the cursor.

    ``path`` is the URL path of the page that tripped it and ``detail`` what was seen, for the
    message that ends the run when restarts make no progress.
    """

    def __init__(self, reason: str, path: str, detail: str = "") -> None:
        super().__init__(reason)
        self.path = path
        self.detail = detail


@dataclass
class Page:
    """One completed page of a query, after all its polls."""

    events: list[Any]
    link_rels: list[str]
    status_code: int
    polls: int
    elapsed_seconds: float
    number: int
    next_href: str | None = None
    body_keys: list[str] = field(default_factory=list)
    path: str = ""
    beyond_retention: str | None = None  # the server's message when it flagged the range


def _links(body: Any) -> list[dict]:
    links = body.get("links") if isinstance(body, dict) else None
    if not isinstance(links, list):
        return []
    return [link for link in links if isinstance(link, dict)]


def link_href(body: Any, rel: str) -> Any:
    """The href of the first link whose ``rel`` matches, case-insensitively (never by position);
    None when there is no such link. The href is as sent (any JSON value): a link that is there
    but unusable is an error (``LogSearchHttp.link_url``), never taken as "no link"."""
    for link in _links(body):
        if str(link.get("rel", "")).lower() == rel:
            href = link.get("href")
            return "" if href is None else href
    return None


def with_query_param(url: str, name: str, value: str) -> str:
    """``url`` with ``name=value`` in its query string, whatever it held for ``name`` before.

    For the parameters a ``Next`` link must keep (``kvp_info``): Rapid7's own example of a
    ``Next`` link drops it. The rest of the query string is kept byte for byte (re-encoding it
    could change the LEQL statement the link carries).
    """
    parts = urlsplit(url)
    kept = [
        item
        for item in parts.query.split("&")
        if item and unquote_plus(item.split("=", 1)[0]) != name
    ]
    kept.append(f"{quote(name, safe='')}={quote(value, safe='')}")
    return urlunsplit(parts._replace(query="&".join(kept)))


def is_running(status_code: int, body: Any) -> bool:
    """A 202, or a body that names itself (``Self``) without a ``Next``: poll it again."""
    if status_code == 202:
        return True
    return link_href(body, "self") is not None and link_href(body, "next") is None


def page_problem(reply: Reply) -> str | None:
    """Why a 2xx answer is neither a running query nor an events page (None when it is fine)."""
    body = reply.body
    if not isinstance(body, dict):
        return "answer is not a JSON object"
    if is_running(reply.status_code, body):
        return None  # a running query without Self is caught by the poll loop, with its message
    if not isinstance(body.get("events"), list):
        return "finished answer without an events list"
    return None


def statistics_problem(reply: Reply) -> str | None:
    """Why a 2xx answer is neither a running query nor a statistics result."""
    body = reply.body
    if not isinstance(body, dict):
        return "answer is not a JSON object"
    if is_running(reply.status_code, body):
        return None
    stats = body.get("statistics")
    count = stats.get("count") if isinstance(stats, dict) else None
    if not isinstance(count, int | float) or isinstance(count, bool):
        return "finished count answer without statistics.count"
    if isinstance(count, float) and not count.is_integer():  # 2.5 events; nan and inf too
        return f"statistics.count {count!r} is not a whole number"
    return None


def beyond_retention(headers: Mapping[str, str]) -> str | None:
    """The server's retention message when the queried range is beyond retention, else None."""
    flag = headers.get(BEYOND_RETENTION_HEADER)
    if flag is None or str(flag).strip().lower() not in ("true", "1", "yes"):
        return None
    return str(headers.get(BEYOND_RETENTION_MESSAGE_HEADER) or "range is beyond retention")


class QueryProtocol:
    """Runs queries to completion over one ``LogSearchHttp``; holds the polling policy."""

    def __init__(
        self,
        http: LogSearchHttp,
        *,
        per_page: int = 500,
        poll_interval_seconds: float = 1.0,
        poll_interval_max_seconds: float = 5.0,
        poll_timeout_seconds: float = 600.0,
        max_restarts: int = 5,
        kvp_info: bool = False,
    ) -> None:
        self.http = http
        self.per_page = per_page
        self.kvp_info = kvp_info  # event queries (and their Next pages) ask for kvp_info
        self.poll_interval_seconds = poll_interval_seconds
        self.poll_interval_max_seconds = max(poll_interval_seconds, poll_interval_max_seconds)
        self.poll_timeout_seconds = poll_timeout_seconds
        self.max_restarts = max_restarts

    def _poll_until_done(
        self, reply: Reply, *, log_id: str, window: str, started: float, check: Any
    ) -> tuple[Reply, int]:
        """Poll ``Self`` (waiting, with backoff) until the reply is finished."""
        polls = 0
        interval = self.poll_interval_seconds
        http = self.http
        while is_running(reply.status_code, reply.body):
            href = link_href(reply.body, "self")
            if href is None:
                msg = (
                    f"query for log {log_id!r} window {window} is still running (HTTP "
                    f"{reply.status_code} at {reply.path}) but has no Self link to poll"
                )
                raise InvalidPageError(msg)
            href = http.link_url(href, rel="Self", reply=reply, log_id=log_id, window=window)
            if http.clock() - started > self.poll_timeout_seconds:
                raise PollTimeout(reply.path)
            if interval > 0:
                http.sleep(interval)
            interval = min(self.poll_interval_max_seconds, interval * 2)
            reply = http.request(
                href, what="poll", family=POLL, log_id=log_id, window=window, check=check
            )
            http.raise_for_status(reply, "poll", log_id=log_id, continuation=True)
            polls += 1
            log_event(
                logger, logging.DEBUG, "logsearch_poll", log_id=log_id,
                progress=reply.body.get("progress") if isinstance(reply.body, dict) else None,
                polls=polls, elapsed_seconds=round(http.clock() - started, 3),
                status_code=reply.status_code,
            )  # fmt: skip
        return reply, polls

    def pages(
        self,
        log_id: str | tuple[str, ...],
        from_ms: int,
        to_ms: int,
        statement: str | None = None,
    ) -> Generator[Page, None, None]:
        """Completed pages of one event query over ``from_ms``..``to_ms`` as the server sends it.

        ``log_id`` is one log (``GET /query/logs/{id}``) or several (``POST /query/logs`` with
        the list: one query for all of them; events carry their ``log_id``). The server's
        reading of ``from``/``to`` is not assumed here: the window reader asks for a wider range
        and cuts it. Raises ``QueryRestartNeeded`` when the query cannot go on (the caller
        restarts from its own cursor): an expired or refused continuation link, a poll timeout,
        a repeated ``Next``, endless empty pages.
        """
        http = self.http
        window = f"[{from_ms},{to_ms})"
        params: dict[str, Any] = {"per_page": self.per_page}
        if self.kvp_info:  # a query parameter for the POST of several logs too (OpenAPI)
            params[KVP_INFO_PARAM] = "true"
        request_body: dict[str, Any] | None = None
        if isinstance(log_id, str):
            url = http.url(f"/query/logs/{quote(log_id, safe='')}")
            params.update({"from": from_ms, "to": to_ms})
            if statement:
                params["query"] = statement
            label = log_id
        else:
            url = http.url("/query/logs")
            during = {"from": from_ms, "to": to_ms}
            request_body = {
                "logs": list(log_id),
                "leql": {"statement": statement or "", "during": during},
            }
            label = f"{log_id[0]}+{len(log_id) - 1}"  # as the window reader names the group
        started = http.clock()
        reply = http.request(
            url, params=params, json_body=request_body, what="query start", family=QUERY,
            log_id=label, window=window, check=page_problem,
        )  # fmt: skip
        log_id = label
        http.raise_for_status(reply, "query start", log_id=log_id)
        retention = beyond_retention(reply.headers)
        seen_next: set[str] = set()
        number = 0
        empty_pages_in_a_row = 0
        while True:
            reply, polls = self._poll_until_done(
                reply, log_id=log_id, window=window, started=started, check=page_problem
            )
            body: dict = reply.body
            retention = retention or beyond_retention(reply.headers)
            number += 1
            next_href = link_href(body, "next")
            if next_href is not None:
                next_href = http.link_url(
                    next_href, rel="Next", reply=reply, log_id=log_id, window=window
                )
                if self.kvp_info:  # the Next query is a new query: it must ask again
                    next_href = with_query_param(next_href, KVP_INFO_PARAM, "true")
            events = body["events"]
            yield Page(
                events=events,
                link_rels=[str(link.get("rel")) for link in _links(body)],
                status_code=reply.status_code,
                polls=polls,
                elapsed_seconds=http.clock() - started,
                number=number,
                next_href=next_href,
                body_keys=sorted(body),
                path=reply.path,
                beyond_retention=retention,
            )
            if not next_href:
                return
            empty_pages_in_a_row = 0 if events else empty_pages_in_a_row + 1
            if empty_pages_in_a_row >= MAX_EMPTY_PAGES_WITH_NEXT:
                raise PagingBrake(
                    "empty pages with Next links", reply.path,
                    f"{MAX_EMPTY_PAGES_WITH_NEXT} empty pages in a row",
                )  # fmt: skip
            if next_href in seen_next:
                raise PagingBrake("repeated Next link", reply.path, "a Next link seen before")
            seen_next.add(next_href)
            started = http.clock()
            reply = http.request(
                next_href,
                what="next page",
                family=QUERY,
                log_id=log_id,
                window=window,
                check=page_problem,
            )
            http.raise_for_status(reply, "next page", log_id=log_id, continuation=True)

    def _count_raw(self, log_id: str, from_ms: int, to_ms: int, statement: str | None) -> int:
        http = self.http
        window = f"[{from_ms},{to_ms}]"
        leql = f"{statement} calculate(count)" if statement else "calculate(count)"
        url = http.url(f"/query/logs/{quote(log_id, safe='')}")
        params = {"from": from_ms, "to": to_ms, "query": leql}  # no per_page: stats reject it
        timeouts = 0
        for _ in range(self.max_restarts + 1):
            started = http.clock()
            reply = http.request(
                url, params=params, what="count start", family=QUERY, log_id=log_id,
                window=window, check=statistics_problem,
            )  # fmt: skip
            http.raise_for_status(reply, "count start", log_id=log_id)
            try:
                reply, _polls = self._poll_until_done(
                    reply, log_id=log_id, window=window, started=started, check=statistics_problem
                )
            except PollTimeout as signal:
                timeouts = self._note_poll_timeout(
                    timeouts, f"count query for log {log_id!r}", signal
                )
                continue
            except QueryRestartNeeded:
                continue
            return int(reply.body["statistics"]["count"])
        msg = f"count query for log {log_id!r} kept expiring or timing out; giving up"
        raise FatalAPIError(msg)

    def _note_poll_timeout(self, timeouts: int, what: str, signal: PollTimeout) -> int:
        """One more poll timeout of a count: the second in a row fails (see ``PollTimeout``)."""
        timeouts += 1
        if timeouts >= MAX_POLL_TIMEOUTS:
            msg = (
                f"{what} was still running after poll_timeout_seconds "
                f"({self.poll_timeout_seconds:g} s), {timeouts} times in a row (at "
                f"{signal.path}); giving up (setting poll_timeout_seconds)"
            )
            raise FatalAPIError(msg) from signal
        return timeouts

    def count_range(
        self, log_id: str, from_ms: int, to_ms: int, statement: str | None = None
    ) -> int:
        """One ``calculate(count)`` over ``from_ms``..``to_ms`` as the server reads the bounds.

        A single query: for planning (``tap-rapid7-capacity``), where the edge milliseconds do
        not matter; ``count`` is the exact, half-open one.
        """
        return self._count_raw(log_id, from_ms, to_ms, statement)

    def count(self, log_id: str, from_ms: int, to_ms: int, statement: str | None = None) -> int:
        """Number of events of ``log_id`` in ``[from_ms, to_ms)`` (``statement``: a ``where()``).

        Exact under every reading of ``from`` and ``to`` (inclusive or exclusive, §11). With
        ``c(a, b)`` the server's ``calculate(count)`` over ``a``..``b``, ``N(m)`` the events of
        millisecond ``m``, and ``F``/``T`` 1 when the server includes ``from``/``to``::

            c(from - 1, to) = N(from) + ... + N(to - 1) + F * N(from - 1) + T * N(to)

        The two error terms are measured, not assumed: an event query over ``from - 1``..``from``
        returns the events of ``from - 1`` only when the server includes ``from`` (F), and one
        over ``to - 1``..``to`` returns those of ``to`` only when it includes ``to`` (T); their
        timestamps say which millisecond each is in. Cost: one count and two one-millisecond
        event queries.
        """
        if from_ms <= 0:  # no millisecond before the epoch to ask from (a server excluding
            # `from` then misses millisecond 0: the one place this count is not exact)
            return self._count_raw(log_id, 0, to_ms, statement) - self._events_at(
                log_id, max(0, to_ms - 1), to_ms, to_ms, statement
            )
        total = self._count_raw(log_id, from_ms - 1, to_ms, statement)
        total -= self._events_at(log_id, from_ms - 1, from_ms, from_ms - 1, statement)
        total -= self._events_at(log_id, to_ms - 1, to_ms, to_ms, statement)
        return total

    def _events_at(
        self, log_id: str, query_from: int, query_to: int, millis: int, statement: str | None
    ) -> int:
        """How many events a query over ``query_from``..``query_to`` returns at ``millis``."""
        timeouts = 0
        for _ in range(self.max_restarts + 1):
            try:
                return sum(
                    1
                    for page in self.pages(log_id, query_from, query_to, statement)
                    for event in page.events
                    if isinstance(event, dict) and event.get("timestamp") == millis
                )
            except PollTimeout as signal:
                timeouts = self._note_poll_timeout(
                    timeouts, f"edge query for log {log_id!r}", signal
                )
                continue
            except QueryRestartNeeded:
                continue
        msg = f"edge query for log {log_id!r} at {millis} kept expiring or timing out; giving up"
        raise FatalAPIError(msg)
