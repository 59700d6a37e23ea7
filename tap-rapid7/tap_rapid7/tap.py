"""tap-rapid7: exact, resumable pulls from the Rapid7 InsightIDR Log Search API."""

from __future__ import annotations

import datetime as dt
import sys
from functools import cached_property
from typing import Any

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.singerlib import Message, RecordMessage

from tap_rapid7.config_dates import ACCEPTED_FORMATS, check_dates
from tap_rapid7.logsearch import REGIONS, LogSearchClient
from tap_rapid7.runner import ConcurrentRunner, SequentialRunner, WindowRunner, WindowTask
from tap_rapid7.streams import EventsStream, LogsetsStream, LogsStream
from tap_rapid7.version import DISTRIBUTION

__all__ = ["TapRapid7"]


class RecordBufferingWriter(MsgSpecWriter):
    """msgspec writer that flushes stdout at every non-RECORD message instead of every message.

    A flush per record is a system call per event. STATE (and SCHEMA) still flush at once, and
    they follow the records they cover in the same stream, so a reader never sees a STATE before
    its records; records after the last STATE may sit in the buffer, as they may in any pipe.
    """

    def write_message(self, message: Message) -> None:
        """Write one message; flush unless it is a RECORD."""
        sys.stdout.buffer.write(self.format_message(message))
        if not isinstance(message, RecordMessage):
            sys.stdout.flush()


class TapRapid7(Tap):
    """Singer tap for Rapid7 Log Search: events per log, plus logs and log sets."""

    name = DISTRIBUTION
    package_name = DISTRIBUTION  # --about's version and Python support come from its metadata
    # msgspec writes RECORD lines faster than the default simplejson writer and keeps ints exact.
    message_writer_class = RecordBufferingWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key", th.StringType(nullable=False), required=True, secret=True,
            description="Rapid7 Insight platform API key, sent as X-Api-Key",
        ),
        th.Property(
            "region", th.StringType, default="us", allowed_values=list(REGIONS),
            description=(
                "Picks https://{region}.rest.logs.insight.rapid7.com; one of "
                + ", ".join(REGIONS)
            ),
        ),
        th.Property(
            "base_url", th.StringType,
            description="Overrides the region URL (the emulator, a proxy)",
        ),
        th.Property(
            "log_ids", th.ArrayType(th.StringType),
            description="Logs to read; empty means every log /management/logs lists",
        ),
        th.Property(
            "query", th.StringType,
            description="LEQL statement applied to every window, e.g. where(...)",
        ),
        th.Property(
            "event_time_fields", th.ArrayType(th.StringType),
            description=(
                "Where the event's own time is in the message, tried in order: JSON keys or "
                "dotted paths (timestamp, timeGenerated, Event.System.TimeCreated), or "
                "re:<regex> with a group for text lines; ISO 8601 and epoch s/ms/us are "
                "understood. Fills event_time (null when absent or unparsable)"
            ),
        ),
        th.Property(
            "start_date", th.DateTimeType,
            description=(
                "Where the first sync starts (required without state): " + ACCEPTED_FORMATS
            ),
        ),
        th.Property(
            "end_date", th.DateTimeType,
            description=(
                "Where a sync stops, exclusive (default: now - lag_seconds); same formats "
                "as start_date"
            ),
        ),
        th.Property(
            "lag_seconds", th.NumberType, default=300,
            description="Stay this far behind now, so windows are complete when read",
        ),
        th.Property(
            "window_seconds", th.NumberType, default=86400,
            description=(
                "Longest time one query covers. Each window ends with a partial page, one "
                "query from the budget: longer windows cost fewer queries, shorter ones bound "
                "each query's work on the server"
            ),
        ),
        th.Property(
            "logs_per_query", th.IntegerType, default=20,
            description=(
                "Logs read together in one query per window (POST /query/logs): quiet logs "
                "then cost one query together instead of one each; a group whose first page "
                "is full goes on log by log. 1 = one query per log"
            ),
        ),
        th.Property(
            "budget_window_seconds", th.NumberType, default=900,
            description="Rapid7's budget window (15 minutes): pacing spreads each budget over it",
        ),
        th.Property(
            "budget_reserve_share", th.NumberType, default=0.05,
            description=(
                "Share of each budget (queries, polls, management) left unused for other "
                "users of the same key: other jobs, the console, reconciliation"
            ),
        ),
        th.Property(
            "budget_log_interval_seconds", th.NumberType, default=60,
            description="How often a logsearch_budget line reports what is spent and left",
        ),
        th.Property(
            "link_lifetime_seconds", th.NumberType, default=20,
            description=(
                "A query's Self link expires when not polled this long (Rapid7: 20 s): polls "
                "never wait longer for the budget, and poll_interval_max_seconds must be below"
            ),
        ),
        th.Property("per_page", th.IntegerType, default=500, description="Events per page, 1..500"),
        th.Property(
            "poll_interval_seconds", th.NumberType, default=1.0,
            description="First wait between polls of a running query; doubles up to the max",
        ),
        th.Property(
            "poll_interval_max_seconds", th.NumberType, default=5.0,
            description="Longest wait between two polls",
        ),
        th.Property(
            "poll_timeout_seconds", th.NumberType, default=600,
            description="Give up on (and restart from the cursor) one query after this long",
        ),
        th.Property(
            "max_retries", th.IntegerType, default=8,
            description="Retries of one request on 429, 5xx, timeouts and dropped connections",
        ),
        th.Property(
            "backoff_base_seconds", th.NumberType, default=1.0,
            description="First retry wait (doubles each retry) when the server names none",
        ),
        th.Property(
            "backoff_max_seconds", th.NumberType, default=60,
            description="Longest backoff wait between retries",
        ),
        th.Property(
            "request_timeout_seconds", th.NumberType, default=60,
            description="HTTP timeout of one request",
        ),
        th.Property(
            "max_restarts", th.IntegerType, default=5,
            description="Restarts of one window (expired link, poll timeout) before failing",
        ),
        th.Property(
            "state_every_records", th.IntegerType, default=10000,
            description="Also emit STATE every this many records (besides after each window)",
        ),
        th.Property(
            "max_concurrent_queries", th.IntegerType, default=4,
            description="Queries in flight at once (logs and next windows); 1 = sequential",
        ),
    ).to_dict()  # fmt: skip

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's schema check, then the dates: relative ones resolved once for the run.

        ``start_date``/``end_date`` are replaced by their ISO 8601 moments here, so every
        stream sees the same values; a future ``start_date``, an ``end_date`` not after it, or
        an unparsable date is refused with the setting named (the CLI prints each error).
        """
        errors: list[str] = []
        schema: dict | None = None
        try:
            errors = list(super()._validate_config(raise_errors=raise_errors))
        except ConfigValidationError as exc:
            errors, schema = list(exc.errors), exc.schema
        resolved, date_errors = check_dates(self._config, dt.datetime.now(tz=dt.UTC))
        self._config = {**self._config, **resolved}
        errors += date_errors
        if errors and raise_errors:
            raise ConfigValidationError("Config validation failed", errors=errors, schema=schema)
        for error in date_errors:
            self.logger.warning("Config validation error: %s", error)
        return errors

    def discover_streams(self) -> list[Stream]:
        """The events stream and the two management streams."""
        return [EventsStream(self), LogsStream(self), LogsetsStream(self)]

    @cached_property
    def client(self) -> LogSearchClient:
        """The one HTTP client of this run (shared by every stream and thread)."""
        return LogSearchClient.from_config(self.config)

    @cached_property
    def log_ids(self) -> list[str]:
        """``log_ids`` from config, or every log the API key can see."""
        configured = self.config.get("log_ids") or []
        if configured:
            return list(dict.fromkeys(configured))
        return [log["id"] for log in self.client.list_logs()]

    def window_runner(self, plan: list[WindowTask]) -> WindowRunner:
        """The runner for this sync's windows (built once per run)."""
        runner = self.__dict__.get("_window_runner")
        if runner is None:
            limit = int(self.config.get("max_concurrent_queries") or 1)
            if limit <= 1:
                runner = SequentialRunner(self.client)
            else:
                runner = ConcurrentRunner(self.client, plan, limit)
            self.__dict__["_window_runner"] = runner
        return runner


def _main() -> Any:  # pragma: no cover
    return TapRapid7.cli()


if __name__ == "__main__":  # pragma: no cover
    _main()
