"""``LogSearchClient``: the pieces of the Log Search client, built once from the tap's settings.

It holds no policy of its own: HTTP and errors are in ``http``, the query protocol in ``query``,
exact windows in ``window_reader``. It does not know the SDK's stream objects, so any number of
queries can run at once on one client (sessions are per thread; the budget pacer is shared).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from singer_sdk.exceptions import FatalAPIError

from tap_rapid7.logsearch.budget import BudgetPacer
from tap_rapid7.logsearch.http import InvalidPageError, LogSearchHttp
from tap_rapid7.logsearch.labels import LabelNames
from tap_rapid7.logsearch.query import Page, QueryProtocol
from tap_rapid7.logsearch.window_reader import WindowReader, WindowReport
from tap_rapid7.settings import REGIONS, SettingError, TapSettings
from tap_rapid7.windows import Cursor, Window

__all__ = ["REGIONS", "LogSearchClient"]  # REGIONS re-exported from the settings


class LogSearchClient:
    """A thread-safe Log Search client: management lists, exact windows and counts."""

    def __init__(
        self,
        settings: TapSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        api_key, region, base_url = settings.api_key, settings.region, settings.base_url
        per_page = settings.per_page
        poll_interval_max_seconds = settings.poll_interval_max_seconds
        link_lifetime_seconds = settings.link_lifetime_seconds
        # Secret files often end in a newline: a header value with one is refused by requests
        # with a message that quotes it, key and all.
        api_key = api_key.strip()
        if not api_key:
            msg = "the api_key setting is empty"
            raise FatalAPIError(msg)
        if base_url is None and region not in REGIONS:
            msg = f"unknown region {region!r} (setting region): expected one of {REGIONS}"
            raise FatalAPIError(msg)
        if not 1 <= per_page <= 500:
            msg = f"per_page must be within 1..500, got {per_page}"
            raise FatalAPIError(msg)
        if not 0 < poll_interval_max_seconds < link_lifetime_seconds:
            msg = (
                f"poll_interval_max_seconds ({poll_interval_max_seconds}) must be below "
                f"link_lifetime_seconds ({link_lifetime_seconds}): a link not polled for that "
                "long expires, and restarting its query costs a query from the budget"
            )
            raise FatalAPIError(msg)
        try:
            pacer = BudgetPacer(
                window_seconds=settings.budget_window_seconds,
                reserve_share=settings.budget_reserve_share,
                log_interval_seconds=settings.budget_log_interval_seconds,
                clock=clock,
                sleep=sleep,
                wall_clock=wall_clock,
            )
        except ValueError as exc:
            raise FatalAPIError(str(exc)) from exc
        self.http = LogSearchHttp(
            api_key=api_key,
            base_url=base_url or f"https://{region}.rest.logs.insight.rapid7.com",
            max_retries=settings.max_retries,
            backoff_base_seconds=settings.backoff_base_seconds,
            backoff_max_seconds=settings.backoff_max_seconds,
            request_timeout_seconds=settings.request_timeout_seconds,
            link_lifetime_seconds=link_lifetime_seconds,
            max_response_bytes=settings.max_response_bytes,
            pacer=pacer,
            clock=clock,
            sleep=sleep,
            wall_clock=wall_clock,
            url_setting="base_url" if base_url else "region",
        )
        self.protocol = QueryProtocol(
            self.http,
            per_page=per_page,
            poll_interval_seconds=settings.poll_interval_seconds,
            poll_interval_max_seconds=poll_interval_max_seconds,
            poll_timeout_seconds=settings.poll_timeout_seconds,
            max_restarts=settings.max_restarts,
            kvp_info=settings.kvp_info,
        )
        # read once per run, shared by the labels stream and every window's records
        self.label_names = LabelNames(self.http)
        try:
            self.reader = WindowReader(
                self.protocol,
                event_time_fields=settings.event_time_fields,
                event_time_zone=settings.event_time_zone,
                max_message_bytes=settings.max_message_bytes,
                oversized_messages=settings.oversized_messages,
                label_names=self.label_names,
                kvp_info=settings.kvp_info,
            )
        except ValueError as exc:
            raise FatalAPIError(str(exc)) from exc

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **clocks: Any) -> LogSearchClient:
        """A client from a config dict (the tools' and tests' shortcut to ``TapSettings``)."""
        try:
            settings = TapSettings.from_config(config)
        except SettingError as exc:
            raise FatalAPIError(str(exc)) from exc
        return cls(settings, **clocks)

    def close(self) -> None:
        """Close the HTTP connections kept alive for later requests."""
        self.http.close()

    @property
    def base_url(self) -> str:
        """The API root every path is joined to."""
        return self.http.base_url

    @property
    def per_page(self) -> int:
        """Events per page asked for."""
        return self.protocol.per_page

    @property
    def pacer(self) -> BudgetPacer:
        """The budget pacer shared by every request of this key."""
        return self.http.pacer

    def url(self, path: str) -> str:
        """Absolute URL of an API path."""
        return self.http.url(path)

    def list_logs(self) -> list[dict]:
        """Every log the key can see (``/management/logs``; not paginated by the API)."""
        return self._listing("/management/logs", "logs")

    def list_log_ids(self) -> list[str]:
        """The id of every log the key can see; a log without a usable id is an error."""
        ids: list[str] = []
        for index, log in enumerate(self.list_logs()):
            log_id = log.get("id")
            if not isinstance(log_id, str) or not log_id:
                msg = (
                    f"Log Search /management/logs sent log {index} without a usable id "
                    f"(field logs[{index}].id: {log_id!r}); set log_ids, or check "
                    "region/base_url"
                )
                raise InvalidPageError(self.http.redact(msg))
            ids.append(log_id)
        return ids

    def list_logsets(self) -> list[dict]:
        """Every log set (``/management/logsets``)."""
        return self._listing("/management/logsets", "logsets")

    def list_labels(self) -> list[dict]:
        """Every label (``/management/labels``), read once per run (see ``LabelNames``)."""
        return self.label_names.labels()

    def _listing(self, path: str, key: str) -> list[dict]:
        body = self.http.get_json(path)
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list):
            msg = f"Log Search {path} answered without a {key!r} list: check region/base_url"
            raise InvalidPageError(msg)
        return [item for item in items if isinstance(item, dict)]

    def query_pages(
        self, log_id: str, from_ms: int, to_ms: int, statement: str | None = None
    ) -> Iterator[Page]:
        """Completed pages of one query, as the server sends them (see ``QueryProtocol``)."""
        return self.protocol.pages(log_id, from_ms, to_ms, statement)

    def read_window(
        self,
        log_id: str,
        window: Window,
        resume: Cursor | None = None,
        statement: str | None = None,
        report: WindowReport | None = None,
    ) -> Iterator[list[dict]]:
        """Record batches of exactly ``window`` (see ``WindowReader``)."""
        return self.reader.read(log_id, window, resume, statement, report)

    def read_group(
        self,
        log_ids: tuple[str, ...],
        window: Window,
        resumes: Mapping[str, Cursor | None],
        statement: str | None = None,
        reports: Mapping[str, WindowReport] | None = None,
    ) -> Iterator[list[dict]]:
        """Record batches of exactly ``window`` for several logs (see ``WindowReader``)."""
        return self.reader.read_group(log_ids, window, resumes, statement, reports)

    def count(self, log_id: str, from_ms: int, to_ms: int, statement: str | None = None) -> int:
        """Events of ``log_id`` in ``[from_ms, to_ms)``, exact (see ``QueryProtocol.count``)."""
        return self.protocol.count(log_id, from_ms, to_ms, statement)
