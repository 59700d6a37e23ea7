"""Singer message builders for the target tests (Rapid7-shaped events and small streams)."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from typing import Any

EVENTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "log_id": {"type": "string"},
        "timestamp": {"type": "integer"},
        "sequence_number": {"type": "integer"},
        "sequence_number_str": {"type": "string"},
        "message": {"type": ["string", "null"]},
        "labels": {
            "type": ["array", "null"],
            "items": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
        "event_time": {"type": "string", "format": "date-time"},
    },
    "required": ["log_id", "timestamp", "sequence_number", "sequence_number_str"],
}
EVENTS_KEYS = ["log_id", "sequence_number_str"]
BASE_SEQUENCE = 2**60 + 12345  # far above 2**53: must stay exact
BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def schema_message(stream: str = "events", schema: dict | None = None, keys=None) -> str:
    """One SCHEMA line."""
    return json.dumps(
        {
            "type": "SCHEMA",
            "stream": stream,
            "schema": schema or EVENTS_SCHEMA,
            "key_properties": EVENTS_KEYS if keys is None else keys,
        }
    )


def event(i: int, log_id: str = "11111111-2222-3333-4444-555555555555") -> dict[str, Any]:
    """A Rapid7-shaped event number ``i`` (message is JSON text with unicode)."""
    ms = BASE_MS + i * 1000
    seq = BASE_SEQUENCE + i
    when = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    message = json.dumps({"user": f"usér{i}", "action": "login ✓", "n": i}, ensure_ascii=False)
    return {
        "log_id": log_id,
        "timestamp": ms,
        "sequence_number": seq,
        "sequence_number_str": str(seq),
        "message": message,
        "labels": [{"id": str(uuid.UUID(int=i))}],
        "event_time": when.isoformat(timespec="milliseconds").replace("+00:00", "+00:00"),
    }


def record_message(rec: dict[str, Any], stream: str = "events") -> str:
    """One RECORD line."""
    return json.dumps({"type": "RECORD", "stream": stream, "record": rec}, ensure_ascii=False)


def state_message(value: Any) -> str:
    """One STATE line."""
    return json.dumps({"type": "STATE", "value": value})


def events_lines(
    count: int, *, state_every: int | None = None, start: int = 0, stream: str = "events"
) -> Iterator[str]:
    """SCHEMA, ``count`` events, and a STATE (bookmark = last index) every ``state_every``."""
    yield schema_message(stream)
    for i in range(start, start + count):
        yield record_message(event(i), stream)
        if state_every and (i + 1) % state_every == 0:
            yield state_message({"bookmarks": {stream: {"last": i}}})


def changed(record: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with ``change`` applied (a value of ``...`` removes the field)."""
    result = dict(record)
    for key, value in change.items():
        if value is ...:
            del result[key]
        else:
            result[key] = value
    return result
