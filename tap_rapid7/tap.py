"""tap-rapid7: exact, resumable pulls from the Rapid7 InsightIDR Log Search API."""

from __future__ import annotations

import copy
import datetime as dt
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar, NoReturn, TypeVar

from singer_sdk import Stream
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TapCapabilities,
)
from singer_sdk.singerlib import Message, RecordMessage, StateMessage

from plugin_io.cli_errors import OneLineFatalErrors
from plugin_io.distribution import DISTRIBUTION
from plugin_io.log_events import log_event, log_fatal_error
from plugin_io.settings_types import secret_paths, secret_texts
from plugin_io.singer_lines import write_line
from tap_rapid7.config_dates import check_dates
from tap_rapid7.log_selection import select_logs, state_log_ids
from tap_rapid7.logsearch import LogSearchClient
from tap_rapid7.runner import ConcurrentRunner, SequentialRunner, WindowRunner, WindowTask
from tap_rapid7.sdk_hooks import TapHooks
from tap_rapid7.settings import CONFIG_SCHEMA, SettingError, TapSettings, numbers_from_text
from tap_rapid7.stopping import StopRequested, StopSignal
from tap_rapid7.streams import EventsStream, LabelsStream, LogsetsStream, LogsStream
from tap_rapid7.version import PLUGIN_NAME

T = TypeVar("T")

__all__ = ["TapRapid7"]


class RecordBufferingWriter(MsgSpecWriter):
    """msgspec writer that flushes stdout at every non-RECORD message instead of every message.

    A flush per record is a system call per event. STATE (and SCHEMA) still flush at once, and
    they follow the records they cover in the same stream, so a reader never sees a STATE before
    its records; records after the last STATE may sit in the buffer, as they may in any pipe.
    """

    records_written = 0  # RECORD lines handed to stdout (some may still sit in its buffer)
    last_state: bytes | None = None  # the last STATE line flushed to stdout whole

    def write_message(self, message: Message) -> None:
        """Write one message whole (``plugin_io.singer_lines``); flush unless it is a RECORD.

        Counts what went out, for the line that reports a target gone mid-run.
        """
        is_record = isinstance(message, RecordMessage)
        line = self.format_message(message)
        write_line(line, flush=not is_record)
        if is_record:
            self.records_written += 1
        elif isinstance(message, StateMessage):
            self.last_state = bytes(line).strip()


class TapRapid7(OneLineFatalErrors, TapHooks):
    """Singer tap for Rapid7 Log Search: events per log, plus logs, log sets and labels."""

    name = PLUGIN_NAME
    # --about's version and Python support: the one distribution's metadata (public SDK attribute)
    package_name = DISTRIBUTION
    # msgspec writes RECORD lines faster than the default simplejson writer and keeps ints exact.
    message_writer_class = RecordBufferingWriter

    # a copy: the SDK appends its built-in settings (stream_maps, ...) to this dict in place
    config_jsonschema = copy.deepcopy(CONFIG_SCHEMA)

    # The SDK's list less two (--about, meltano-hub/ and meltano.yml follow): BATCH writes a
    # window's STATE before the batch file holding its events is announced, so a crash in
    # between loses them; ACTIVATE_VERSION needs an undeclared setting and is untested here.
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    def prepare_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Numbers given as text (Meltano passes kind-less settings from the environment so)."""
        return numbers_from_text(config)

    def resolve_config(self, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Relative dates resolved once for the run, and date errors naming the setting.

        ``start_date``/``end_date`` become ISO 8601 moments, so every stream sees the same
        values; a future ``start_date``, an ``end_date`` not after it, or an unparsable date is
        refused with the setting named (the CLI prints each error).
        """
        resolved, errors = check_dates(config, dt.datetime.now(tz=dt.UTC))
        if config.get("batch_config"):
            # the SDK would take this path from the setting alone, capability or not
            errors.append(
                "batch_config: not supported by tap-rapid7 (STATE could pass the batch files); "
                "remove it"
            )
        return resolved, errors

    # Stopping on SIGTERM/SIGINT (see ``stopping``): the handler only records the signal.
    installed_stop: ClassVar[StopSignal | None] = None  # the latest tap's: handlers are per process
    # The latest tap's writer and secret values: the CLI's last-resort error lines read them.
    installed_writer: ClassVar[RecordBufferingWriter | None] = None
    hidden_texts: ClassVar[list[str]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stop_signal = StopSignal()  # before the SDK installs the handler that uses it
        TapRapid7.installed_stop = self.stop_signal
        super().__init__(*args, **kwargs)
        TapRapid7.hidden_texts = secret_texts(self.config, secret_paths(self.config_jsonschema))
        if isinstance(self.message_writer, RecordBufferingWriter):
            TapRapid7.installed_writer = self.message_writer

    def on_stop_signal(self, signum: int) -> None:
        """Record the signal; stop at once only while waiting for the API (nothing half written)."""
        self.stop_signal.request(signum)

    def stop_if_requested(self) -> None:
        """Between two records: stop here if a signal came (STATE of what was written, exit)."""
        if self.stop_signal.signum is not None:
            self.stop_now(self.stop_signal.signum)

    def wait_for_api(self, fetch: Callable[[], T]) -> T:
        """``fetch()``, a wait for the API (nothing is written): a stop signal ends it at once.

        A call, not a context manager: a ``with`` block's ``__exit__`` runs in the caller's
        frame, so a signal landing as the block was left (still counted as waiting) raised
        ``StopRequested`` outside the handler (exit 1 in CI). Here every moment counted as
        waiting runs inside this ``try``.
        """
        try:
            with self.stop_signal.waiting():
                return fetch()
        except StopRequested as stop:
            self.stop_now(stop.signum)

    def stop_now(self, signum: int) -> NoReturn:
        """Write the STATE of what was written, log ``tap_stopped``, exit 128 + ``signum``."""
        # The cursor of every log is the last RECORD written (streams update it right after
        # each write), so this STATE is never ahead of the records.
        self.state_writer.write_state(self.state)
        sys.stdout.flush()
        self.exit_stopped(
            signum, "stopped between records; the last STATE covers every RECORD written, "
            "resume from it",
        )  # fmt: skip

    @classmethod
    def exit_stopped(cls, signum: int, reason: str) -> NoReturn:
        """Log ``tap_stopped`` and exit 128 + ``signum``, as a shell reports a killed command."""
        code = 128 + signum
        log_event(
            cls.logger, logging.WARNING, "tap_stopped", signal=signal.Signals(signum).name,
            exit_code=code, reason=reason,
        )  # fmt: skip
        raise SystemExit(code)

    @classmethod
    def invoke(cls, *args: Any, **kwargs: Any) -> None:
        """The SDK's sync, then: a signal that came after the last record still exits 128 + n.

        A cancel reaches the target too, and it stops reading first: the tap's next write then
        fails with a broken pipe. That is the cancel, not a fault of the tap (click would exit
        1 with a traceback): the target has the last STATE it could read, so exit 128 + n.
        Without a signal, a closed pipe means the target died: exit 1 with one line that says
        so and how far the output got (``output_closed``).
        """
        try:
            super().invoke(*args, **kwargs)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            # What is still buffered for stdout goes nowhere, so the exit's flush cannot fail
            # too (Python would print "Exception ignored ... BrokenPipeError" and exit 120).
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            stop = TapRapid7.installed_stop
            if stop is None or stop.signum is None:
                cls.output_closed(exc)
            cls.exit_stopped(
                stop.signum, "the target closed its input (it was stopped too): it holds the "
                "last STATE it read, resume from that",
            )  # fmt: skip
        stop = TapRapid7.installed_stop
        if stop is not None and stop.signum is not None:
            cls.exit_stopped(
                stop.signum, "the signal came after the last record: the sync is complete"
            )

    @classmethod
    def output_closed(cls, error: OSError) -> NoReturn:
        """The target stopped reading (it died, or ``| head``): one ERROR line, exit 1."""
        writer = TapRapid7.installed_writer
        records = writer.records_written if writer is not None else 0
        state = writer.last_state if writer is not None else None
        if state is None:
            covered = "no STATE was written yet: the next run starts where this one did"
        else:
            # the STATE's value as the target would emit it, cut: the line stays readable
            text = state.decode(errors="replace")
            prefix = '{"type":"STATE","value":'
            if text.startswith(prefix) and text.endswith("}"):
                text = text[len(prefix) : -1]
            text = text if len(text) <= 500 else text[:497] + "..."
            covered = (
                f"the last STATE written was {text}; the target holds at most what it read, "
                "so resume from the last STATE the target emitted"
            )
        message = (
            f"the target closed its input (broken pipe) after the tap had written {records} "
            f"records (the target may have read fewer); {covered}"
        )
        log_fatal_error(cls.logger, error, message=message, secrets=TapRapid7.hidden_texts)
        raise SystemExit(1)

    @classmethod
    def fatal_error_secrets(cls) -> list[str]:
        """The latest run's secret setting values (hidden in the fatal line and traceback)."""
        return TapRapid7.hidden_texts

    def discover_streams(self) -> list[Stream]:
        """The events stream and the three management streams."""
        return [EventsStream(self), LogsStream(self), LogsetsStream(self), LabelsStream(self)]

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
        """The logs of this run (``log_selection``: ``log_ids``, ``logsets``, else every log).

        Read before the events stream adds partitions, so the STATE's are the incoming ones.
        """
        return select_logs(self.settings, self.client, state_log_ids(self.state))

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
