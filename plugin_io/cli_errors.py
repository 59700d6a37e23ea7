"""The plugins' last resort for an error a run did not handle: one ERROR line, frames at DEBUG.

singer-sdk's CLI installs an excepthook (``SingerCommand.excepthook``) that logs the error with
its whole traceback at ERROR: 60 to 140 lines after the one that says what failed, which is all a
scheduler's log shows of a failed run. Both plugins replace it, the same way, through this mixin;
the line and the DEBUG traceback go through ``log_fatal_error`` with the plugin's secrets hidden.
"""

from __future__ import annotations

import sys
import typing as t

from singer_sdk.plugin_base import SingerCommand

from plugin_io.log_events import log_fatal_error

if t.TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    import click

__all__ = ["OneLineFatalErrors"]


class OneLineFatalErrors:
    """Mixin for a plugin class (before the SDK's base in the bases): its CLI command logs an
    unhandled error as one ERROR line, the traceback only at DEBUG; Python then exits 1."""

    @classmethod
    def fatal_error_secrets(cls) -> Iterable[str | None]:
        """Texts no fatal line or traceback may show (the latest instance's secret settings)."""
        return ()

    @classmethod
    def log_unhandled(
        cls,
        exc_type: type[BaseException],
        exc_value: BaseException,
        exc_traceback: TracebackType | None,
    ) -> None:
        """The CLI's excepthook: Ctrl-C as Python shows it, anything else as one line."""
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc_value, exc_traceback)
            return
        logger = t.cast("t.Any", cls).logger  # the SDK's class-level plugin logger
        error = exc_value.with_traceback(exc_traceback)
        log_fatal_error(logger, error, secrets=cls.fatal_error_secrets())

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, with ``log_unhandled`` as its excepthook."""
        command: click.Command = super().get_singer_command()  # type: ignore[misc]
        if isinstance(command, SingerCommand):
            command.excepthook = cls.log_unhandled  # type: ignore[method-assign]
        return command
