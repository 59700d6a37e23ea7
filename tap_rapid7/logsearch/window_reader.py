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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from singer_sdk.exceptions import FatalAPIError

from singer_eventlog import log_event
from tap_rapid7.logsearch.http import InvalidPageError, QueryRestartNeeded
from tap_rapid7.logsearch.query import Page, QueryProtocol
from tap_rapid7.logsearch.records import RecordBuilder
from tap_rapid7.windows import Cursor, Window, WindowFilter

__all__ = ["WindowReader", "WindowReport", "exact_sequence"]

logger = logging.getLogger("tap_rapid7.logsearch")


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
    beyond_retention: bool = False
    page_sizes: list[int] = field(default_factory=list)


def exact_sequence(event: Mapping[str, Any]) -> tuple[int, str] | None:
    """``(int, str)`` of an event's sequence number, from the exact string when present."""
    text = event.get("sequence_number_str")
    if isinstance(text, str) and text:
        try:
            return int(text), text
        except ValueError:
            return None
    number = event.get("sequence_number")
    if isinstance(number, int) and not isinstance(number, bool):
        return number, str(number)
    return None


def _not_advancing(page_max: int | None, previous_max: int | None) -> bool:
    """A continued page whose newest event is no newer than the previous page's newest."""
    return page_max is None or (previous_max is not None and page_max <= previous_max)


class WindowReader:
    """Reads windows through a ``QueryProtocol``; logs one line per page and one per window."""

    def __init__(self, protocol: QueryProtocol, *, event_time_fields: tuple[str, ...] = ()) -> None:
        self.protocol = protocol
        self.event_time_fields = event_time_fields
        RecordBuilder(event_time_fields)  # refuse a bad event_time_fields before any query

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
        report = report or WindowReport(log_id, window)
        protocol = self.protocol
        clock = protocol.http.clock
        build = RecordBuilder(self.event_time_fields)
        filt = WindowFilter(window, resume)
        started = clock()
        first_ms = filt.start_from_ms()
        log_event(
            logger, logging.INFO, "logsearch_query_start", log_id=log_id,
            window_from=window.from_ms, window_to=window.to_ms, per_page=protocol.per_page,
            query_from=max(0, first_ms - 1),
        )  # fmt: skip
        stuck_restarts = 0
        accepted_at_restart = 0
        while True:
            previous_max: int | None = None
            query_from = max(0, filt.start_from_ms() - 1)
            try:
                for page in protocol.pages(log_id, query_from, window.to_ms, statement):
                    if page.beyond_retention and not report.beyond_retention:
                        report.beyond_retention = True
                        log_event(
                            logger, logging.WARNING, "logsearch_beyond_retention",
                            log_id=log_id, window_from=window.from_ms, window_to=window.to_ms,
                            message=page.beyond_retention,
                        )  # fmt: skip
                    batch, page_min, page_max = self._filter_page(page, log_id, filt, build)
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
                if stuck_restarts > protocol.max_restarts:
                    msg = (
                        f"query for log {log_id!r} window [{window.from_ms}, {window.to_ms}) "
                        f"restarted {protocol.max_restarts} times without progress "
                        f"({signal.reason}); giving up (setting max_restarts)"
                    )
                    raise FatalAPIError(msg) from signal
                log_event(
                    logger, logging.WARNING, "logsearch_retry", log_id=log_id,
                    status_code=signal.status_code, attempt=report.restarts, wait_seconds=0,
                    reason=signal.reason, restart_from=max(0, filt.start_from_ms() - 1),
                )  # fmt: skip
        report.events = filt.accepted
        report.duplicates_dropped = filt.duplicates_dropped
        report.out_of_window_dropped = filt.out_of_window_dropped
        report.resume_skipped = filt.resume_skipped
        report.event_time_missing = build.event_time.missing
        report.event_time_unparsable = build.event_time.unparsable
        report.elapsed_seconds = clock() - started
        log_event(
            logger, logging.INFO, "logsearch_window_complete", log_id=log_id,
            window_from=window.from_ms, window_to=window.to_ms, events=filt.accepted,
            duplicates_dropped=filt.duplicates_dropped,
            out_of_window_dropped=filt.out_of_window_dropped,
            resume_skipped=filt.resume_skipped, pages=report.pages, restarts=report.restarts,
            event_time_missing=report.event_time_missing,
            event_time_unparsable=report.event_time_unparsable,
            beyond_retention=report.beyond_retention,
            elapsed_seconds=round(report.elapsed_seconds, 3),
        )  # fmt: skip

    @staticmethod
    def _filter_page(
        page: Page, log_id: str, filt: WindowFilter, build: RecordBuilder
    ) -> tuple[list[dict], int | None, int | None]:
        batch: list[dict] = []
        page_min: int | None = None
        page_max: int | None = None
        window = filt.window
        for index, event in enumerate(page.events):
            if not isinstance(event, dict):
                _bad_event(
                    page, log_id, window, index, f"is a {type(event).__name__}, not an object"
                )
            timestamp = event.get("timestamp")
            if not isinstance(timestamp, int) or isinstance(timestamp, bool):
                _bad_event(page, log_id, window, index, f"has no integer timestamp ({timestamp!r})")
            sequence = exact_sequence(event)
            if sequence is None:
                _bad_event(page, log_id, window, index, "has no usable sequence_number")
            event_log = event.get("log_id")
            if event_log is not None and event_log != log_id:
                _bad_event(page, log_id, window, index, f"belongs to log {event_log!r}")
            if page_min is None or timestamp < page_min:
                page_min = timestamp
            if page_max is None or timestamp > page_max:
                page_max = timestamp
            seq, seq_str = sequence
            if filt.accept(timestamp, seq, seq_str):
                batch.append(build(event, log_id, timestamp, seq, seq_str))
        return batch, page_min, page_max


def _bad_event(page: Page, log_id: str, window: Window, index: int, problem: str) -> NoReturn:
    msg = (
        f"Log Search sent a malformed event for log {log_id!r} window "
        f"[{window.from_ms}, {window.to_ms}): event {index} of page {page.number} "
        f"(at {page.path}) {problem}"
    )
    raise InvalidPageError(msg)
