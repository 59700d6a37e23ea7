"""How the windows of a sync are executed: one after another, or several queries at once.

A runner turns a ``WindowTask`` into the record batches of that window. The events stream asks
for the tasks in the order its records must go out (log after log, window after window), so
records, and therefore STATE, stay in order per log whichever runner is used.

``ConcurrentRunner`` (``max_concurrent_queries`` > 1) keeps up to N window queries in flight
from worker threads that take windows strictly in consumption order, each with a small bounded
buffer of pages: while the records of the current window go out, the next windows and logs are
already being polled and paged. Taking windows in consumption order, and holding a query slot
only while fetching (never while waiting for the consumer), is what makes it deadlock-free: the
window the consumer waits for was taken before any window behind it and can always get a slot.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from tap_rapid7.logsearch import LogSearchClient, WindowReport
from tap_rapid7.windows import Cursor, Window

__all__ = ["ConcurrentRunner", "SequentialRunner", "WindowRunner", "WindowTask"]


@dataclass(frozen=True)
class WindowTask:
    """One query window of one log or of several logs read together (``logs_per_query``).

    ``resumes`` holds ``(log_id, cursor)`` for the logs that start inside this window (a stored
    cursor); the others start at the window's beginning.
    """

    log_ids: tuple[str, ...]
    window: Window
    resumes: tuple[tuple[str, Cursor], ...] = ()
    statement: str | None = None

    def read(self, client: LogSearchClient, reports: list[WindowReport]) -> Iterator[list[dict]]:
        """The task's record batches through ``client``; one report per log is appended."""
        own = {log_id: WindowReport(log_id, self.window) for log_id in self.log_ids}
        reports.extend(own.values())
        return client.read_group(self.log_ids, self.window, dict(self.resumes), self.statement, own)


class WindowRunner(Protocol):
    """Yields the record batches of a task, in server order."""

    def batches(self, task: WindowTask) -> Iterator[list[dict]]: ...


class SequentialRunner:
    """The plain path: each window is queried when its records are needed."""

    def __init__(self, client: LogSearchClient) -> None:
        self.client = client
        self.reports: list[WindowReport] = []

    def batches(self, task: WindowTask) -> Iterator[list[dict]]:
        """Query ``task`` now and stream its batches."""
        yield from task.read(self.client, self.reports)


_DONE = object()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class ConcurrentRunner:
    """Up to ``max_concurrent`` window queries in flight; records still handed out in order.

    A query is "in flight" while its next page is being fetched (start or ``Next``, and the
    polls until that page is ready). Worker threads (twice as many) take windows in the order
    their records will be needed and hold a slot only while fetching: a worker whose page buffer
    is full waits for the consumer without holding a slot, so another window can be queried.
    """

    def __init__(
        self,
        client: LogSearchClient,
        tasks: Sequence[WindowTask],
        max_concurrent: int,
        buffered_pages: int = 4,
        lookahead: int = 2,
    ) -> None:
        self.client = client
        self.max_concurrent = max(1, max_concurrent)
        self.workers = min(len(tasks), self.max_concurrent * max(1, lookahead))
        self._order = list(tasks)
        # Bounded memory: at most `buffered_pages` pages wait per started window, and at most
        # `workers` windows are started ahead of the consumer.
        self._queues: dict[WindowTask, queue.Queue] = {
            task: queue.Queue(maxsize=max(1, buffered_pages)) for task in self._order
        }
        self._slots = threading.Semaphore(self.max_concurrent)
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reports: list[WindowReport] = []
        self.active = 0
        self.max_active = 0  # the most page fetches (queries) ever in flight at once

    def _start(self) -> None:
        if self._threads:
            return
        for number in range(self.workers):
            thread = threading.Thread(
                target=self._work, name=f"logsearch-query-{number}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _claim(self) -> WindowTask | None:
        with self._lock:
            if self._stop.is_set() or self._next >= len(self._order):
                return None
            task = self._order[self._next]
            self._next += 1
            return task

    def _put(self, box: queue.Queue, item: object) -> bool:
        while not self._stop.is_set():
            try:
                box.put(item, timeout=0.2)  # wakes up now and then to notice a stop
            except queue.Full:
                continue
            return True
        return False

    def _fetch(self, pages: Iterator[list[dict]]) -> list[dict] | None:
        """The next batch of a window (None at its end), fetched while holding a slot."""
        with self._slots:
            with self._lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                return next(pages, None)
            finally:
                with self._lock:
                    self.active -= 1

    def _work(self) -> None:
        while (task := self._claim()) is not None:
            box = self._queues[task]
            with self._lock:
                pages = task.read(self.client, self.reports)
            try:
                while (batch := self._fetch(pages)) is not None:
                    if not self._put(box, batch):
                        return
                if not self._put(box, _DONE):
                    return
            except BaseException as error:  # handed to the consuming thread, raised there
                self._put(box, _Failure(error))
                return

    def batches(self, task: WindowTask) -> Iterator[list[dict]]:
        """The batches of ``task`` as its worker produces them (starts the workers once)."""
        self._start()
        box = self._queues[task]
        try:
            while True:
                item = box.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        except BaseException:
            self.close()  # an error or an abandoned sync: stop every worker
            raise
        finally:
            self._queues.pop(task, None)

    def close(self) -> None:
        """Stop starting queries and unblock workers waiting on full buffers."""
        self._stop.set()
