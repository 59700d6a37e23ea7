"""tap-rapid7: exact, resumable pulls from the Rapid7 InsightIDR Log Search API."""

from __future__ import annotations

import copy
import datetime as dt
import sys
from functools import cached_property
from typing import Any

from singer_sdk import Stream
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.singerlib import Message, RecordMessage

from tap_rapid7.config_dates import check_dates
from tap_rapid7.logsearch import LogSearchClient
from tap_rapid7.runner import ConcurrentRunner, SequentialRunner, WindowRunner, WindowTask
from tap_rapid7.sdk_hooks import TapHooks
from tap_rapid7.settings import CONFIG_SCHEMA, SettingError, TapSettings, numbers_from_text
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


class TapRapid7(TapHooks):
    """Singer tap for Rapid7 Log Search: events per log, plus logs and log sets."""

    name = DISTRIBUTION
    package_name = DISTRIBUTION  # --about's version and Python support come from its metadata
    # msgspec writes RECORD lines faster than the default simplejson writer and keeps ints exact.
    message_writer_class = RecordBufferingWriter

    # a copy: the SDK appends its built-in settings (stream_maps, ...) to this dict in place
    config_jsonschema = copy.deepcopy(CONFIG_SCHEMA)

    def prepare_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Numbers given as text (Meltano passes kind-less settings from the environment so)."""
        return numbers_from_text(config)

    def resolve_config(self, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Relative dates resolved once for the run, and date errors naming the setting.

        ``start_date``/``end_date`` become ISO 8601 moments, so every stream sees the same
        values; a future ``start_date``, an ``end_date`` not after it, or an unparsable date is
        refused with the setting named (the CLI prints each error).
        """
        return check_dates(config, dt.datetime.now(tz=dt.UTC))

    def discover_streams(self) -> list[Stream]:
        """The events stream and the two management streams."""
        return [EventsStream(self), LogsStream(self), LogsetsStream(self)]

    @cached_property
    def settings(self) -> TapSettings:
        """The typed settings of this run (read after validation resolved the dates)."""
        return TapSettings.from_config(self.config)

    @cached_property
    def client(self) -> LogSearchClient:
        """The one HTTP client of this run (shared by every stream and thread)."""
        try:
            return LogSearchClient(self.settings)
        except SettingError as exc:
            raise FatalAPIError(str(exc)) from exc

    @cached_property
    def log_ids(self) -> list[str]:
        """``log_ids`` from config, or every log the API key can see."""
        if self.settings.log_ids:
            return self.settings.logs
        return [log["id"] for log in self.client.list_logs()]

    def window_runner(self, plan: list[WindowTask]) -> WindowRunner:
        """The runner for this sync's windows (built once per run)."""
        runner = self.__dict__.get("_window_runner")
        if runner is None:
            limit = self.settings.max_concurrent_queries
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
