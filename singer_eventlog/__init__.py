"""One-line structured log events shared by the tap and the target.

Both plugins log the same way (``../shared/conventions.md``): the event name first, then
``key=value`` fields, on one line. The same fields are attached to the ``LogRecord`` as
``extra`` so that the SDK's JSON log format (``StructuredFormatter``) carries them as real JSON
fields. Kept in its own tiny package so that the target, which must work for any tap, does not
import the tap.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["format_event", "log_event", "redact"]

_BARE_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+\-]+$")

# LogRecord attributes that ``extra`` may not overwrite (logging raises KeyError for them).
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _render(value: Any) -> str:
    """Render one field value: bare when unambiguous, else JSON (quoted, escaped)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value if _BARE_VALUE.match(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple) and all(
        isinstance(item, str) and _BARE_VALUE.match(item) and "," not in item for item in value
    ):
        return ",".join(value) if value else "[]"
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def format_event(event: str, fields: Mapping[str, Any]) -> str:
    """Return ``event k1=v1 k2=v2`` with fields in the order given."""
    parts = [event]
    parts.extend(f"{key}={_render(value)}" for key, value in fields.items())
    return " ".join(parts)


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
