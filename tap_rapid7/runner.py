"""How the windows of a sync are executed: one after another (``max_concurrent_queries=1``).

A runner turns a ``WindowTask`` into the record batches of that window. The events stream asks
for the tasks in the order its records must go out (log after log, window after window).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from tap_rapid7.client import LogSearchClient, WindowReport
from tap_rapid7.windows import Cursor, Window

__all__ = ["SequentialRunner", "WindowRunner", "WindowTask"]


@dataclass(frozen=True)
class WindowTask:
    """One query window of one log; ``resume`` only on a log's first window."""

    log_id: str
    window: Window
    resume: Cursor | None = None
    statement: str | None = None


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
        report = WindowReport(task.log_id, task.window)
        self.reports.append(report)
        yield from self.client.read_window(
            task.log_id, task.window, task.resume, task.statement, report
        )
