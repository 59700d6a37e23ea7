"""One-line structured log events: written and parsed here, and nowhere else.

The tap, the target and their tools log the same way (docs/log-events.md): the event name
first, then ``key=value`` fields, on one line. ``parse_fields`` reads back exactly what
``format_event`` writes (strings that look like numbers are quoted, lists keep their type), so
the timeline and reconcile tools never re-implement the grammar. The same fields are attached
to the ``LogRecord`` as ``extra`` so that the SDK's JSON log format (``StructuredFormatter``)
carries them as real JSON fields. In ``plugin_io``, not in the tap, so that the target, which
must work for any tap, does not import the tap.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "LOG_LEVELS",
    "add_log_level_argument",
    "format_event",
    "log_event",
    "log_fatal_error",
    "one_line",
    "parse_fields",
    "redact",
]

# How a user gets the traceback the fatal line leaves out: the SDK reads the level from these
# variables (``<PLUGIN>_LOGLEVEL`` first; Meltano's ``--log-level`` sets ``LOGLEVEL``).
TRACEBACK_HINT = "(LOGLEVEL=DEBUG shows the traceback)"

_BARE_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+\-]+$")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_DECODER = json.JSONDecoder()
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None, "None": None}

# LogRecord attributes that ``extra`` may not overwrite (logging raises KeyError for them).
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _scalar(text: str) -> Any:
    """Turn a bare value back into int, float, bool or None where it is one, else keep it."""
    if text in _LITERALS:
        return _LITERALS[text]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def _bare_string(value: str) -> bool:
    """A string may go unquoted when it reads back as the same string."""
    return bool(_BARE_VALUE.match(value)) and _scalar(value) == value


def _render(value: Any) -> str:
    """Render one field value: bare when unambiguous, else JSON (quoted, escaped)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value if _bare_string(value) else json.dumps(value, ensure_ascii=False)
    if (
        isinstance(value, list | tuple)
        and len(value) > 1
        and all(isinstance(item, str) and _bare_string(item) for item in value)
    ):
        return ",".join(value)  # bare items hold no comma: a bare value with one is a list
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def format_event(event: str, fields: Mapping[str, Any]) -> str:
    """Return ``event k1=v1 k2=v2`` with fields in the order given."""
    parts = [event]
    parts.extend(f"{key}={_render(value)}" for key, value in fields.items())
    return " ".join(parts)


def parse_fields(text: str) -> dict[str, Any]:
    """Read the ``k1=v1 k2="quoted" k3=[...]`` fields that ``format_event`` wrote.

    Free text after the fields (or a malformed tail) ends the parse; what came before is kept.
    """
    fields: dict[str, Any] = {}
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        match = _KEY.match(text, pos)
        if not match:
            break
        key, pos = match.group(1), match.end()
        if pos < len(text) and text[pos] in '"[{':
            try:
                value, pos = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError:
                end = text.find(" ", pos)
                end = len(text) if end < 0 else end
                value, pos = text[pos:end], end
        else:
            end = pos
            while end < len(text) and not text[end].isspace():
                end += 1
            token = text[pos:end]
            value = token.split(",") if "," in token else _scalar(token)
            pos = end
        fields[key] = value
    return fields


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log one structured event line (cheap when the level is disabled)."""
    if not logger.isEnabledFor(level):
        return
    extra = {("field_" + key if key in _RESERVED else key): value for key, value in fields.items()}
    extra["event_name"] = event
    logger.log(level, format_event(event, fields), extra=extra)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every non-empty secret in ``text`` with ``[REDACTED]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text


def one_line(error: BaseException) -> str:
    """``error`` as one line: its message (lines joined), or its type when it has none.

    Built-in errors other than ``OSError`` (whose text says what failed) keep their type's
    name: a bare ``'x'`` from a ``KeyError`` says nothing.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines)
    name = type(error).__name__
    if not text:
        return name
    if type(error).__module__ == "builtins" and not isinstance(error, OSError):
        return f"{name}: {text}"
    return text


def log_fatal_error(
    logger: logging.Logger,
    error: BaseException,
    *,
    message: str | None = None,
    secrets: Iterable[str | None] = (),
) -> None:
    """The error that ends the run: one ERROR line; its traceback only when DEBUG is on.

    A scheduler's log shows the last lines of a failed run: there the one line must say what
    failed, not sit above 60 to 140 lines of frames that only a developer reads. ``message``
    replaces the error's own text; ``secrets`` are replaced in both the line and the traceback.
    """
    text = redact(message or one_line(error), secrets)
    if not logger.isEnabledFor(logging.DEBUG):
        logger.error("%s %s", text, TRACEBACK_HINT)
        return
    logger.error("%s", text)
    frames = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    logger.debug("Traceback of the error above:\n%s", redact(frames.rstrip(), secrets))


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_log_level_argument(parser: Any, *, default: str = "INFO", more: str = "") -> None:
    """The tools' ``--log-level`` option (an ``argparse`` parser): DEBUG adds the traceback of a
    failure, which is otherwise one line. ``more`` adds what else the level changes."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default,
        help=f"DEBUG adds the traceback of a failure{more}; default {default}",
    )
