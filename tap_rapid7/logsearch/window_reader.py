"""One window of one log, exactly: ``[from, to)`` whatever the server's reading of the bounds.

Rapid7's spec leaves open whether ``from`` is inclusive (one literal reading of the
``sequence_number`` text excludes it) and does not say whether ``to`` is. So the reader asks from
the millisecond *before* the one it needs and cuts ``[from, to)`` itself: a server that excludes
``from`` still returns ``from``, one that includes it also returns the millisecond before, which
is dropped (counted in ``out_of_window_dropped``), and one that includes ``to`` has ``to`` cut.
Entries are identified by ``(log_id, timestamp, sequence_number)``; sequence numbers may recur
across milliseconds. A restart (expired or refused link, poll timeout, looping ``Next``) asks
again from just before the last accepted event's millisecond, and the identity dedupe absorbs
the re-read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

from singer_sdk.exceptions import FatalAPIError

from plugin_io.log_events import log_event
from tap_rapid7.logsearch.http import InvalidPageError, QueryRestartNeeded
from tap_rapid7.logsearch.labels import LabelNames
from tap_rapid7.logsearch.query import (
    MAX_POLL_TIMEOUTS,
    Page,
    PagingBrake,
    PollTimeout,
    QueryProtocol,
)
from tap_rapid7.logsearch.records import MAX_MESSAGE_BYTES, OVERSIZED_MESSAGES, RecordBuilder
from tap_rapid7.windows import MAX_EVENTS, Cursor, SequenceOrder, Window, WindowFilter

__all__ = ["WindowReader", "WindowReport", "exact_sequence"]

logger = logging.getLogger("tap_rapid7.logsearch")

# The record schema promises int64 for `timestamp` and `sequence_number`; a value outside would
# be refused by the target forever, so it is an invalid page here, never a record.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# A query chain longer than this many pages asks the window's calculate(count) once, and is
# then held to the pages that count needs (plus a margin): a chain that pages on without end
# costs one count query, a normal one nothing.
COUNT_AFTER_PAGES = 20
# The page bound when the count cannot be had: 5,000,000 events at 500 a page.
MAX_PAGES_WITHOUT_COUNT = 10_000
PAGE_LIMIT = "more pages than the window holds"


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
    event_time_missing: int = 0
    event_time_unparsable: int = 0
    messages_truncated: int = 0
    kvp_dropped: int = 0
    beyond_retention: bool = False
    page_sizes: list[int] = field(default_factory=list)


def exact_sequence(event: Mapping[str, Any]) -> tuple[int, str] | None:
    """``(int, str)`` of an event's sequence number, from the exact string when present.

    The string is part of the records' key as sent, so only a plain decimal is taken (``int``
    would also read ``" 7"``, ``"+7"`` or ``"7_0"``, which then name no entry of the API).
    """
    text = event.get("sequence_number_str")
    if isinstance(text, str) and text:
        digits = text[1:] if text[0] == "-" else text
        if not (digits.isascii() and digits.isdigit()):
            return None
        return int(text), text
    number = event.get("sequence_number")
    if isinstance(number, int) and not isinstance(number, bool):
        return number, str(number)
    return None


def _not_advancing(page_max: int | None, previous_max: int | None) -> bool:
    """A continued page whose newest event is no newer than the previous page's newest."""
    return page_max is None or (previous_max is not None and page_max <= previous_max)


@dataclass
class _LogRead:
    """One log's part of a window being read: its filter, record builder and report."""

    log_id: str
    filt: WindowFilter
    build: RecordBuilder
    report: WindowReport
    started: float
    order: SequenceOrder = field(default_factory=SequenceOrder)
    page_limit: int | None = None  # pages one query chain may take (from the window's count)


class _PageScan(NamedTuple):
    """What one page of a log's query chain held, for its log line and the paging brakes."""

    batch: list[dict]
    page_min: int | None
    page_max: int | None
    fresh: int  # events this query chain had not served before (the edge milliseconds too)
    beyond_to: int  # events after the window's end (a to-inclusive server's `to` is not after)


class WindowReader:
    """Reads windows through a ``QueryProtocol``; logs one line per page and one per window.

    One log per query, or several (``read_group``): quiet logs share one query, which then
    costs one query for all of them instead of one each. A shared query is only ever read for
    its first page. If that page is full (it has a ``Next``), each log goes on alone from where
    the page left it: exactness then never depends on how a server continues a query over
    several logs (Rapid7 promises sequence numbers unique only within one log's millisecond).
    """

    def __init__(
        self,
        protocol: QueryProtocol,
        *,
        event_time_fields: tuple[str, ...] = (),
        event_time_zone: str = "UTC",
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        oversized_messages: str = OVERSIZED_MESSAGES[0],
        label_names: LabelNames | None = None,
        kvp_info: bool = False,
    ) -> None:
        self.protocol = protocol
        self.label_names = label_names
        self.kvp_info = kvp_info
        self.event_time_fields = event_time_fields
        self.event_time_zone = event_time_zone
        self.max_message_bytes = max_message_bytes
        self.oversized_messages = oversized_messages
        self._record_builder()  # refuse bad record settings before any query

    def _record_builder(self) -> RecordBuilder:
        """A window's record builder (one per window: its counts are per window)."""
        return RecordBuilder(
            self.event_time_fields,
            event_time_zone=self.event_time_zone,
            max_message_bytes=self.max_message_bytes,
            oversized_messages=self.oversized_messages,
            label_names=self.label_names,
            kvp_info=self.kvp_info,
        )

    def _start(
        self, log_id: str, window: Window, resume: Cursor | None, report: WindowReport | None
    ) -> _LogRead:
        return _LogRead(
            log_id,
            WindowFilter(window, resume),
            self._record_builder(),
            report or WindowReport(log_id, window),
            self.protocol.http.clock(),
        )

    def read(
        self,
        log_id: str,
        window: Window,
        resume: Cursor | None = None,
        statement: str | None = None,
        report: WindowReport | None = None,
    ) -> Iterator[list[dict]]:
        """Batches (one per page) of the records of ``window``, exactly, in server order.

        Drops events outside ``[from, to)``, events at or before ``resume`` and duplicates;
        restarts the query when it cannot go on, bounded by ``max_restarts`` restarts in a row
        that made no progress.
        """
        state = self._start(log_id, window, resume, report)
        self._log_query_start(log_id, window, state.filt.start_from_ms())
        yield from self._read_alone(state, statement)
        self._complete(state)

    def read_group(
        self,
        log_ids: tuple[str, ...],
        window: Window,
        resumes: Mapping[str, Cursor | None],
        statement: str | None = None,
        reports: Mapping[str, WindowReport] | None = None,
    ) -> Iterator[list[dict]]:
        """Batches of the records of ``window`` for several logs (mixed, in server order).

        One shared query first; only if its first page is full does each log continue alone.
        Each log keeps its own filter (resume point, identity dedupe) and report.
        """
        if len(log_ids) == 1:
            log_id = log_ids[0]
            report = reports.get(log_id) if reports else None
            yield from self.read(log_id, window, resumes.get(log_id), statement, report)
            return
        states = {
            log_id: self._start(
                log_id, window, resumes.get(log_id), reports.get(log_id) if reports else None
            )
            for log_id in log_ids
        }
        first_ms = min(state.filt.start_from_ms() for state in states.values())
        label = f"{log_ids[0]}+{len(log_ids) - 1}"
        self._log_query_start(label, window, first_ms, logs=len(log_ids))
        page = self._group_page(log_ids, label, window, first_ms, statement)
        batch = self._filter_group_page(page, states, label)
        if batch:
            self.protocol.http.pacer.count_events(len(batch))
            yield batch
        if page.next_href:  # full: each log goes on alone from where the page left it
            for log_id in log_ids:
                yield from self._read_alone(states[log_id], statement)
        for log_id in log_ids:
            self._complete(states[log_id])

    def _group_page(
        self,
        log_ids: tuple[str, ...],
        label: str,
        window: Window,
        first_ms: int,
        statement: str | None,
    ) -> Page:
        """The first page of one query over several logs (restarted if its link expires)."""
        protocol = self.protocol
        timeouts = 0
        for attempt in range(protocol.max_restarts + 1):
            pages = protocol.pages(log_ids, max(0, first_ms - 1), window.to_ms, statement)
            try:
                return next(pages)
            except QueryRestartNeeded as signal:
                if isinstance(signal, PollTimeout):
                    timeouts += 1
                    if timeouts >= MAX_POLL_TIMEOUTS:
                        raise self._poll_timeout_error(
                            f"logs {label}", window, signal, timeouts
                        ) from signal
                protocol.http.pacer.count_restart()
                log_event(
                    logger, logging.WARNING, "logsearch_retry", log_id=label,
                    status_code=signal.status_code, attempt=attempt + 1, wait_seconds=0,
                    reason=signal.reason, restart_from=max(0, first_ms - 1),
                )  # fmt: skip
                last = signal
            finally:
                pages.close()  # never follow a shared query's Next
        msg = (
            f"query for logs {label} window [{window.from_ms}, {window.to_ms}) restarted "
            f"{protocol.max_restarts} times without a page ({last.reason}); giving up "
            "(setting max_restarts)"
        )
        raise FatalAPIError(msg) from last

    def _filter_group_page(
        self, page: Page, states: Mapping[str, _LogRead], label: str
    ) -> list[dict]:
        batch: list[dict] = []
        window = next(iter(states.values())).filt.window
        if page.beyond_retention:
            for read in states.values():
                self._note_retention(read, page)
        per_log: dict[str, list[int]] = {}
        for index, event in enumerate(page.events):
            if not isinstance(event, dict):
                _bad_event(
                    page, label, window, index, f"is a {type(event).__name__}, not an object"
                )
            event_log = event.get("log_id")
            state = states.get(event_log) if isinstance(event_log, str) else None
            if state is None:
                _bad_event(page, label, window, index, f"belongs to log {event_log!r}")
            timestamp, seq, seq_str = _identity(page, label, window, index, event)
            per_log.setdefault(state.log_id, []).append(timestamp)
            if window.contains(timestamp):
                self._check_order(state, page, timestamp, seq)
            if state.filt.accept(timestamp, seq, seq_str):
                batch.append(state.build(event, state.log_id, timestamp, seq, seq_str))
        for state in states.values():
            state.report.pages += 1
            state.report.page_sizes.append(len(per_log.get(state.log_id, ())))
        stamps = [ts for log_stamps in per_log.values() for ts in log_stamps]
        log_event(
            logger, logging.INFO, "logsearch_page_complete", log_id=label, logs=len(states),
            page=1, status_code=page.status_code, event_count=len(page.events),
            events_total=len(batch), page_min_event_timestamp=min(stamps, default=None),
            page_max_event_timestamp=max(stamps, default=None), window_from=window.from_ms,
            window_to=window.to_ms, link_rels=page.link_rels, keys=page.body_keys,
            accepted=len(batch), polls=page.polls, elapsed_seconds=round(page.elapsed_seconds, 3),
        )  # fmt: skip
        return batch

    def _log_query_start(self, log_id: str, window: Window, first_ms: int, **extra: Any) -> None:
        log_event(
            logger, logging.INFO, "logsearch_query_start", log_id=log_id,
            window_from=window.from_ms, window_to=window.to_ms, per_page=self.protocol.per_page,
            query_from=max(0, first_ms - 1), **extra,
        )  # fmt: skip

    @staticmethod
    def _note_retention(state: _LogRead, page: Page) -> None:
        if not page.beyond_retention or state.report.beyond_retention:
            return
        state.report.beyond_retention = True
        window = state.filt.window
        log_event(
            logger, logging.WARNING, "logsearch_beyond_retention", log_id=state.log_id,
            window_from=window.from_ms, window_to=window.to_ms, message=page.beyond_retention,
        )  # fmt: skip

    def _read_alone(self, state: _LogRead, statement: str | None) -> Iterator[list[dict]]:
        """Page one log's query to its end from where its filter stands, restarting as needed.

        A query chain that cannot get anywhere is restarted from the cursor (``PagingBrake``):
        a continuation page that only repeats what the chain already served, events after the
        window's end on a continuation page, or more pages than the window's count needs. So
        is a poll timeout, but only once in a row (``MAX_POLL_TIMEOUTS``); other restarts are
        bounded by ``max_restarts`` in a row without progress.
        """
        protocol = self.protocol
        log_id, filt, report = state.log_id, state.filt, state.report
        window = filt.window
        stuck_restarts = 0
        timeouts = 0
        accepted_at_restart = 0
        while True:
            previous_max: int | None = None
            query_from = max(0, filt.start_from_ms() - 1)
            served: set[tuple[int, str]] = set()  # identities this query chain has served
            state.order.restart()
            pages = protocol.pages(log_id, query_from, window.to_ms, statement)
            try:
                for page in pages:
                    self._note_retention(state, page)
                    scan = self._filter_page(page, state, served)
                    batch = scan.batch
                    report.pages += 1
                    report.page_sizes.append(len(page.events))
                    fields = {
                        "log_id": log_id, "page": report.pages, "status_code": page.status_code,
                        "event_count": len(page.events), "events_total": filt.accepted,
                        "page_min_event_timestamp": scan.page_min,
                        "page_max_event_timestamp": scan.page_max,
                        "window_from": window.from_ms, "window_to": window.to_ms,
                        "next_from_millis": filt.next_from_millis(),
                        "link_rels": page.link_rels, "keys": page.body_keys, "accepted": len(batch),
                        "polls": page.polls,
                        "elapsed_seconds": round(page.elapsed_seconds, 3),
                    }  # fmt: skip
                    log_event(logger, logging.INFO, "logsearch_page_complete", **fields)
                    stalled = page.number > 1 and _not_advancing(scan.page_max, previous_max)
                    if stalled and page.next_href:
                        report.stalls += 1
                        log_event(logger, logging.WARNING, "logsearch_pagination_stalled", **fields)
                    if scan.page_max is not None:
                        previous_max = scan.page_max
                    if batch:  # what the page brought goes out before any brake restarts
                        protocol.http.pacer.count_events(len(batch))
                        yield batch
                    if page.next_href:
                        brake = self._brake(state, page, scan, statement)
                        if brake is not None:
                            raise brake
                return
            except QueryRestartNeeded as signal:
                report.restarts += 1
                protocol.http.pacer.count_restart()
                # past the window's page limit, events are not progress: the server sends more
                # than the window holds, and restarting can only end the run
                over_limit = isinstance(signal, PagingBrake) and signal.reason == PAGE_LIMIT
                progressed = filt.accepted > accepted_at_restart and not over_limit
                stuck_restarts = 1 if progressed else stuck_restarts + 1
                accepted_at_restart = filt.accepted
                if isinstance(signal, PollTimeout):
                    timeouts = (0 if progressed else timeouts) + 1
                    if timeouts >= MAX_POLL_TIMEOUTS:
                        raise self._poll_timeout_error(
                            f"log {log_id!r}", window, signal, timeouts
                        ) from signal
                if stuck_restarts > protocol.max_restarts:
                    where = ""
                    if isinstance(signal, PagingBrake):
                        where = f": {signal.detail}, at {signal.path}"
                    msg = (
                        f"query for log {log_id!r} window [{window.from_ms}, {window.to_ms}) "
                        f"restarted {protocol.max_restarts} times without progress "
                        f"({signal.reason}{where}); giving up (setting max_restarts)"
                    )
                    raise FatalAPIError(msg) from signal
                path = signal.path if isinstance(signal, PagingBrake | PollTimeout) else None
                log_event(
                    logger, logging.WARNING, "logsearch_retry", log_id=log_id,
                    status_code=signal.status_code, attempt=report.restarts, wait_seconds=0,
                    reason=signal.reason, restart_from=max(0, filt.start_from_ms() - 1),
                    **({"path": path} if path else {}),
                )  # fmt: skip
            finally:
                pages.close()

    def _brake(
        self, state: _LogRead, page: Page, scan: _PageScan, statement: str | None
    ) -> PagingBrake | None:
        """Why this query chain must not follow the page's ``Next`` (None: follow it).

        Rapid7's ``Next`` launches a new query positioned after the page's last entry (§11), so
        paging moves forward through ``[from, to)`` and ends. A chain that serves the same
        entries again under fresh links, or entries past ``to``, or more pages than the
        window holds, is not going to end: restart it from the cursor instead.
        """
        window = state.filt.window
        if page.number > 1 and scan.beyond_to:
            return PagingBrake(
                "events after the window on a continuation page", page.path,
                f"page {page.number} holds {scan.beyond_to} events after {window.to_ms} "
                f"(newest {scan.page_max})",
            )  # fmt: skip
        if page.number > 1 and page.events and not scan.fresh:
            return PagingBrake(
                "page without new entries", page.path,
                f"page {page.number} of the query only repeats entries it already served",
            )  # fmt: skip
        pages = state.report.pages - state.report.restarts  # a restart re-reads a page
        if pages < COUNT_AFTER_PAGES:
            return None
        if state.page_limit is None:
            state.page_limit = self._page_limit(state, statement)
        if pages >= state.page_limit:
            return PagingBrake(
                PAGE_LIMIT, page.path,
                f"{pages} pages and more to come, the window's count needs at most "
                f"{state.page_limit}",
            )  # fmt: skip
        return None

    def _page_limit(self, state: _LogRead, statement: str | None) -> int:
        """Pages this log's window may take: its ``calculate(count)`` (over the range the
        reader asks for, so an upper bound) in pages, plus a tenth and 2 (late entries, a short
        page), or ``MAX_PAGES_WITHOUT_COUNT`` when the count fails."""
        protocol = self.protocol
        window = state.filt.window
        try:
            count = protocol.count_range(
                state.log_id, max(0, window.from_ms - 1), window.to_ms, statement
            )
        except FatalAPIError as exc:
            log_event(
                logger, logging.WARNING, "logsearch_count_unavailable", log_id=state.log_id,
                window_from=window.from_ms, window_to=window.to_ms,
                max_pages=MAX_PAGES_WITHOUT_COUNT, error=str(exc),
            )  # fmt: skip
            return MAX_PAGES_WITHOUT_COUNT
        if not 0 <= count <= MAX_EVENTS:  # a broken or hostile answer: no bound to page by
            log_event(
                logger, logging.WARNING, "logsearch_count_unavailable", log_id=state.log_id,
                window_from=window.from_ms, window_to=window.to_ms,
                max_pages=MAX_PAGES_WITHOUT_COUNT, error=f"count {count} is not a number of events",
            )  # fmt: skip
            return MAX_PAGES_WITHOUT_COUNT
        needed = math.ceil(count / protocol.per_page)
        limit = needed + needed // 10 + 2
        log_event(
            logger, logging.INFO, "logsearch_page_limit", log_id=state.log_id,
            window_from=window.from_ms, window_to=window.to_ms, count=count,
            per_page=protocol.per_page, max_pages=limit,
        )  # fmt: skip
        return limit

    def _poll_timeout_error(
        self, label: str, window: Window, signal: PollTimeout, timeouts: int
    ) -> FatalAPIError:
        return FatalAPIError(
            f"query for {label} window [{window.from_ms}, {window.to_ms}) was still running "
            f"after poll_timeout_seconds ({self.protocol.poll_timeout_seconds:g} s), "
            f"{timeouts} times in a row without progress (at {signal.path}); giving up "
            "(setting poll_timeout_seconds)"
        )

    @staticmethod
    def _check_order(state: _LogRead, page: Page, timestamp: int, sequence_number: int) -> None:
        previous = state.order.check(timestamp, sequence_number)
        if previous is None:
            return
        window = state.filt.window
        log_event(
            logger, logging.WARNING, "logsearch_sequence_order", log_id=state.log_id,
            millis=timestamp, previous_sequence_number=previous,
            sequence_number=sequence_number, page=page.number, window_from=window.from_ms,
            window_to=window.to_ms,
        )  # fmt: skip

    def _complete(self, state: _LogRead) -> None:
        """Fill the report and log the window's line."""
        filt, report, build = state.filt, state.report, state.build
        window = filt.window
        report.events = filt.accepted
        report.duplicates_dropped = filt.duplicates_dropped
        report.out_of_window_dropped = filt.out_of_window_dropped
        report.resume_skipped = filt.resume_skipped
        report.event_time_missing = build.event_time.missing
        report.event_time_unparsable = build.event_time.unparsable
        report.messages_truncated = build.truncated
        report.kvp_dropped = build.kvp_dropped
        kvp = {"kvp_dropped": build.kvp_dropped} if build.kvp_info else {}
        report.elapsed_seconds = self.protocol.http.clock() - state.started
        log_event(
            logger, logging.INFO, "logsearch_window_complete", log_id=state.log_id,
            window_from=window.from_ms, window_to=window.to_ms, events=filt.accepted,
            duplicates_dropped=filt.duplicates_dropped,
            out_of_window_dropped=filt.out_of_window_dropped,
            resume_skipped=filt.resume_skipped, pages=report.pages, restarts=report.restarts,
            event_time_missing=report.event_time_missing,
            event_time_unparsable=report.event_time_unparsable,
            messages_truncated=report.messages_truncated,
            beyond_retention=report.beyond_retention,
            elapsed_seconds=round(report.elapsed_seconds, 3), **kvp,
        )  # fmt: skip

    @classmethod
    def _filter_page(cls, page: Page, state: _LogRead, served: set[tuple[int, str]]) -> _PageScan:
        batch: list[dict] = []
        page_min: int | None = None
        page_max: int | None = None
        fresh = beyond_to = 0
        log_id, filt, build = state.log_id, state.filt, state.build
        window = filt.window
        for index, event in enumerate(page.events):
            if not isinstance(event, dict):
                _bad_event(
                    page, log_id, window, index, f"is a {type(event).__name__}, not an object"
                )
            timestamp, seq, seq_str = _identity(page, log_id, window, index, event)
            event_log = event.get("log_id")
            if event_log is not None and event_log != log_id:
                _bad_event(page, log_id, window, index, f"belongs to log {event_log!r}")
            if page_min is None or timestamp < page_min:
                page_min = timestamp
            if page_max is None or timestamp > page_max:
                page_max = timestamp
            identity = (timestamp, seq_str)
            if identity not in served:  # the millisecond before from and to count too: a
                served.add(identity)  # burst there can fill whole pages of a real chain
                fresh += 1
            if window.contains(timestamp):
                cls._check_order(state, page, timestamp, seq)
            elif timestamp > window.to_ms:
                beyond_to += 1
            if filt.accept(timestamp, seq, seq_str):
                batch.append(build(event, log_id, timestamp, seq, seq_str))
        return _PageScan(batch, page_min, page_max, fresh, beyond_to)


def _identity(
    page: Page, log_id: str, window: Window, index: int, event: Mapping[str, Any]
) -> tuple[int, int, str]:
    """``(timestamp, sequence_number, sequence_number_str)`` of an event, or a clear error."""
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        _bad_event(page, log_id, window, index, f"has no integer timestamp ({timestamp!r})")
    if not INT64_MIN <= timestamp <= INT64_MAX:
        _bad_event(page, log_id, window, index, f"has a timestamp outside int64 ({timestamp})")
    sequence = exact_sequence(event)
    if sequence is None:
        _bad_event(page, log_id, window, index, "has no usable sequence_number")
    if not INT64_MIN <= sequence[0] <= INT64_MAX:
        _bad_event(
            page, log_id, window, index, f"has a sequence_number outside int64 ({sequence[1]})"
        )
    return timestamp, sequence[0], sequence[1]


def _bad_event(page: Page, log_id: str, window: Window, index: int, problem: str) -> NoReturn:
    msg = (
        f"Log Search sent a malformed event for log {log_id!r} window "
        f"[{window.from_ms}, {window.to_ms}): event {index} of page {page.number} "
        f"(at {page.path}) {problem}"
    )
    raise InvalidPageError(msg)
