"""Every private singer-sdk name the target overrides, calls or reads, and nowhere else.

singer-sdk promises nothing about names with a leading underscore: an upgrade may rename or
remove one, and an override of a name that no longer exists is silently never called. So the
target's modules (``target.py``, ``sinks.py``, ``reader.py``) use only the public methods and
accessors below, and ``PRIVATE_SDK_NAMES`` lists each private name these classes touch;
``tests/target/test_sdk_hooks.py`` checks that every one still exists in the installed SDK, with
the parameters our overrides expect, and fails loudly if not.
"""

from __future__ import annotations

import typing as t

from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target

from plugin_io.settings_types import hide_secrets_in_errors

if t.TYPE_CHECKING:
    from types import FrameType

    from singer_sdk.sinks.core import BaseJSONSchemaValidator

__all__ = ["PRIVATE_SDK_NAMES", "ReaderHooks", "SinkHooks", "TargetHooks"]

# (SDK class, private name, "override" | "call" | "attribute")
PRIVATE_SDK_NAMES: tuple[tuple[type, str, str], ...] = (
    (Target, "_validate_config", "override"),
    (Target, "_process_schema_message", "override"),
    (Target, "_process_record_message", "override"),
    (Target, "_process_state_message", "override"),
    (Target, "_handle_max_record_age", "override"),
    (Target, "_write_state_message", "override"),
    (Target, "_handle_termination", "override"),
    (Target, "_assert_line_requires", "call"),
    (Target, "_config", "attribute"),
    (Target, "_latest_state", "attribute"),
    (Target, "_sinks_active", "attribute"),
    (Target, "_sinks_to_clear", "attribute"),
    (BatchSink, "_parse_timestamps_in_record", "override"),
    (BatchSink, "_after_process_record", "override"),
    (BatchSink, "_get_context", "call"),
    (BatchSink, "_validator", "attribute"),
    (BatchSink, "_pending_batch", "attribute"),
    (BatchSink, "_batch_records_read", "attribute"),
    (MsgSpecReader, "_process_unknown_message", "override"),
)


class TargetHooks(Target):
    """The target's private-hook overrides (each delegates to a public method, the SDK's
    behaviour by default) and accessors for the private SDK state it reads."""

    # Settings whose values no message may show though the schema cannot mark them secret.
    secret_settings: t.ClassVar[tuple[str, ...]] = ()

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # ``prepare_config`` before the SDK's schema check: the only hook that runs once, before
        # anything reads the config, with the config still writable. The SDK's messages quote
        # the wrong value, a secret's too (the CLI logs each one): secrets are only named.
        prepared = self.prepare_config(dict(self._config))
        if prepared:
            self._config = {**self._config, **prepared}
        try:
            errors = super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            hidden = self.hidden_config_errors(exc.errors)
            raise ConfigValidationError(str(exc), errors=hidden, schema=exc.schema) from None
        return self.hidden_config_errors(errors)

    def hidden_config_errors(self, errors: list[str]) -> list[str]:
        """``errors`` with every secret setting (schema or ``secret_settings``) only named."""
        return hide_secrets_in_errors(
            errors, self.config_jsonschema, self._config, self.secret_settings
        )

    def prepare_config(self, config: dict[str, t.Any]) -> dict[str, t.Any]:
        """Settings to replace before the schema check (e.g. numbers given as text)."""
        return {}

    def _process_schema_message(self, message_dict: dict) -> None:
        # The SDK's SCHEMA handling, then ours (``handle_schema_message``).
        self.handle_schema_message(message_dict)

    def handle_schema_message(self, message_dict: dict) -> None:
        """A SCHEMA message; the SDK's handling (sinks created or archived) by default."""
        super()._process_schema_message(message_dict)

    def _process_record_message(self, message_dict: dict) -> None:
        # Every RECORD message: the SDK's per-record pipeline (copy, map, metadata strip,
        # validate, parse timestamps, key check, counters) costs ~10 us per record; the target's
        # fast path (``handle_record_message``) skips it where it is identity or done
        # column-wise at flush.
        self.handle_record_message(message_dict)

    def handle_record_message(self, message_dict: dict) -> None:
        """A RECORD message; the SDK's per-record pipeline by default."""
        super()._process_record_message(message_dict)

    def _process_state_message(self, message_dict: dict) -> None:
        # The SDK only remembers the latest STATE (written at a full drain); the target tracks
        # each one and emits it once its records are durable (``handle_state_message``).
        self.handle_state_message(message_dict)

    def handle_state_message(self, message_dict: dict) -> None:
        """A STATE message; the SDK's (remember it as the latest) by default."""
        super()._process_state_message(message_dict)

    def _handle_max_record_age(self) -> None:
        # The SDK's per-record check (drain everything every 5 minutes); the target adds its
        # safe-STATE and lag checks.
        self.handle_max_record_age()

    def handle_max_record_age(self) -> None:
        """Per-record age check; the SDK's (a full drain when the last one is too old)."""
        super()._handle_max_record_age()

    def _write_state_message(self, state: dict) -> None:
        # Called by ``drain_all`` after every sink was drained: Decimal-aware encoding (SDK
        # issue 3787) and no duplicate lines.
        self.write_state_message(state)

    def write_state_message(self, state: dict) -> None:
        """Write the STATE that ``drain_all`` made safe; the SDK's writer by default."""
        super()._write_state_message(state)

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        # The SDK's handler drains every sink and writes STATE inside the handler, while the
        # flush it interrupted never finishes (and with the idle watcher flushing, two flushes
        # run at once), then exits 0; ``on_stop_signal`` decides instead.
        self.on_stop_signal(signum, frame)

    def on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        """Called from the signal handler (main thread, at any point); the SDK's by default."""
        super()._handle_termination(signum, frame)

    def assert_line_requires(self, message_dict: dict, requires: set[str]) -> None:
        """Raise the SDK's error when ``message_dict`` lacks one of the ``requires`` keys."""
        self._assert_line_requires(message_dict, requires=requires)

    def set_config_value(self, name: str, value: t.Any) -> None:
        """Set a setting in the SDK's config (before any sink reads it), e.g. a default."""
        self._config[name] = value

    @property
    def latest_state(self) -> t.Any:
        """The latest STATE value received (what ``drain_all`` writes)."""
        return self._latest_state

    @latest_state.setter
    def latest_state(self, value: t.Any) -> None:
        self._latest_state = value

    @property
    def sinks_active(self) -> dict[str, t.Any]:
        """The active sink of each stream (by the stream's name after stream maps)."""
        return self._sinks_active

    @property
    def sinks_to_clear(self) -> list[t.Any]:
        """Sinks archived by a changed schema, not yet drained and cleaned up."""
        return self._sinks_to_clear


class SinkHooks(BatchSink):
    """The sink's private-hook overrides and accessors for the private SDK state it reads."""

    def _parse_timestamps_in_record(self, record: dict, schema: dict, treatment: t.Any) -> None:
        # The SDK's per-record date-time parse (singer-sdk ~=0.54.9 is pinned): the sink skips
        # it (``parse_timestamps_in_record``) because the columnar cast in ``columns.py`` does the
        # same parse at flush and refuses the same bad strings.
        self.parse_timestamps_in_record(record, schema, treatment)

    def parse_timestamps_in_record(self, record: dict, schema: dict, treatment: t.Any) -> None:
        """Parse a record's date-time strings; the SDK's per-record parse by default."""
        super()._parse_timestamps_in_record(record, schema, treatment)

    def _after_process_record(self, context: dict) -> None:
        # The SDK's per-record DEBUG line: the sink skips it (``after_process_record``), one
        # line per record is too costly at this rate.
        self.after_process_record(context)

    def after_process_record(self, context: dict) -> None:
        """After each record is processed; the SDK's (a DEBUG line) by default."""
        super()._after_process_record(context)

    def new_batch_context(self, record: dict) -> dict:
        """The batch context for ``record`` (the SDK starts a batch when none is pending)."""
        return self._get_context(record)

    @property
    def pending_batch(self) -> dict | None:
        """The batch being buffered (its context), or None."""
        return self._pending_batch

    @property
    def batch_records_read(self) -> int:
        """Records counted into the current batch (``current_size``)."""
        return self._batch_records_read

    @batch_records_read.setter
    def batch_records_read(self, value: int) -> None:
        self._batch_records_read = value

    @property
    def record_validator(self) -> BaseJSONSchemaValidator | None:
        """The per-record validator the SDK built (``get_validator``), or None."""
        return self._validator


class ReaderHooks(MsgSpecReader):
    """The reader's private-hook override."""

    def _process_unknown_message(self, message_dict: dict) -> None:
        # A message of an unknown type; the SDK's handler by default (``on_unknown_message``).
        self.on_unknown_message(message_dict)

    def on_unknown_message(self, message_dict: dict) -> None:
        """A message of a type no callback takes; the SDK's handling by default."""
        super()._process_unknown_message(message_dict)
