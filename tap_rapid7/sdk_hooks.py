"""Every private singer-sdk name the tap overrides, calls or reads, and nowhere else.

singer-sdk promises nothing about names with a leading underscore: an upgrade may rename or
remove one, and an override of a name that no longer exists is silently never called. So the
tap's modules use only the public methods below, and ``PRIVATE_SDK_NAMES`` lists each private
name these classes touch; ``tests/tap/test_sdk_hooks.py`` checks that every one still exists
in the installed SDK, with the parameters our overrides expect, and fails loudly if not.
"""

from __future__ import annotations

import logging
import typing as t
from collections.abc import Generator
from types import FrameType

from singer_sdk import Stream, Tap
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers._util import utc_now
from singer_sdk.singerlib import RecordMessage

from plugin_io.settings_types import hide_secrets_in_errors

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

__all__ = ["PRIVATE_SDK_NAMES", "SYNC_FAILED", "StreamHooks", "TapHooks"]

# What ``Stream.sync`` logs at ERROR before re-raising any error (singer_sdk/streams/core.py).
SYNC_FAILED = "An unhandled error occurred while syncing '%s'"

# (SDK class, private name, "override" | "call" | "attribute")
PRIVATE_SDK_NAMES: tuple[tuple[type, str, str], ...] = (
    (Tap, "_validate_config", "override"),
    (Tap, "_handle_termination", "override"),
    (Tap, "_config", "attribute"),
    (Stream, "_tap", "attribute"),
    (Stream, "_generate_record_messages", "override"),
    (Stream, "_increment_stream_state", "override"),
    (Stream, "_write_state_message", "call"),
    (Stream, "_stream_version", "attribute"),
)


class TapHooks(Tap):
    """The tap's private-hook overrides: config validation that can also change the config, and
    the SIGTERM/SIGINT handler."""

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        # The SDK's handler writes STATE and exits 0 from wherever the main thread was (even
        # halfway through a RECORD line); ``on_stop_signal`` decides instead.
        self.on_stop_signal(signum)

    def on_stop_signal(self, signum: int) -> None:
        """Called from the signal handler (main thread, at any point); the SDK's by default."""
        super()._handle_termination(signum, None)

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # ``prepare_config``, the SDK's schema check, then ``resolve_config`` (ours): the only
        # hook that runs once, before streams are built, with the config still writable.
        self._config = {**self._config, **self.prepare_config(dict(self._config))}
        errors: list[str] = []
        schema: dict | None = None
        try:
            errors = list(super()._validate_config(raise_errors=raise_errors))
        except ConfigValidationError as exc:
            errors, schema = list(exc.errors), exc.schema
        resolved, more_errors = self.resolve_config(dict(self._config))
        self._config = {**self._config, **resolved}
        # The SDK's messages quote the wrong value, a secret's too (the CLI logs each one).
        errors = hide_secrets_in_errors(errors + more_errors, self.config_jsonschema, self._config)
        more_errors = errors[len(errors) - len(more_errors) :]
        if errors and raise_errors:
            raise ConfigValidationError("Config validation failed", errors=errors, schema=schema)
        for error in more_errors:
            self.logger.warning("Config validation error: %s", error)
        return errors

    def prepare_config(self, config: dict[str, t.Any]) -> dict[str, t.Any]:
        """Settings to replace before the schema check (e.g. numbers given as text)."""
        return {}

    def resolve_config(self, config: dict[str, t.Any]) -> tuple[dict[str, t.Any], list[str]]:
        """Settings to replace in the config, and errors naming settings; none by default."""
        return {}, []


class StreamHooks(Stream):
    """The streams' private-hook overrides and the private names they reach."""

    @property
    def parent_tap(self) -> Tap:
        """The tap this stream belongs to (the SDK keeps it private)."""
        return self._tap

    def write_state_now(self) -> None:
        """Write a STATE message for the stream's current state at once."""
        self.state_manager.is_flushed = False
        self._write_state_message()

    def _generate_record_messages(self, record: Record) -> Generator[RecordMessage, None, None]:
        # The SDK's per-record pruning and conformance can be skipped when ``plain_records``
        # says they cannot change anything (a tenth of the tap's CPU per event); stream maps
        # still apply.
        if not self.plain_records():
            yield from super()._generate_record_messages(record)
            return
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=utc_now(),
                )

    def log(self, message: str, *args: t.Any, level: int = logging.INFO, **kwargs: t.Any) -> None:
        """The SDK's stream log, except its "unhandled error while syncing" line goes to DEBUG.

        That ERROR line comes before the error itself propagates; the CLI then logs the error as
        the one line that says what failed (``TapRapid7.log_unhandled``), so at the default
        level a failure is that one line.
        """
        if message == SYNC_FAILED and level >= logging.ERROR:
            level = logging.DEBUG
        super().log(message, *args, level=level, **kwargs)

    def plain_records(self) -> bool:
        """True when records need no pruning or conformance; False keeps the SDK's path."""
        return False

    def _increment_stream_state(
        self, latest_record: Record, *, context: Context | None = None
    ) -> None:
        # Runs after each RECORD is written; ``advance_state`` replaces the SDK's bookkeeping
        # when it returns True (per-log cursors of interleaved logs, one dict lookup).
        if not self.advance_state(latest_record):
            super()._increment_stream_state(latest_record, context=context)

    def advance_state(self, latest_record: Record) -> bool:
        """Advance the state after ``latest_record`` was written; False: the SDK's way."""
        return False
