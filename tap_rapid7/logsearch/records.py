"""An event as a record of the ``events`` stream, and that record's schema, side by side.

Two clocks, named for what they are (``rapid7-logsearch-api.md`` §11): ``timestamp`` is the API's
int, the millisecond Rapid7 *received* the entry; ``received_at`` is the same instant as a
date-time (the replication key: windows, cursors and the API's counts are all in this clock);
``event_time`` is the event's own time, taken from its message where the user says it is
(``event_time_fields``), null otherwise. The console filters on the second clock, the API on
the first: that is how one 10-second window can show about 402 lines in the console and about
18,957 events through the API.

The records are built here with exactly the schema's types, so the SDK's per-record type
conformance has nothing to do (``EventsStream.TYPE_CONFORMANCE_LEVEL``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from singer_sdk import typing as th

from tap_rapid7.logsearch.event_time import EventTimeExtractor
from tap_rapid7.windows import millis_to_iso

__all__ = [
    "EVENTS_KEY_PROPERTIES",
    "EVENTS_REPLICATION_KEY",
    "EVENTS_SCHEMA",
    "EVENTS_STREAM",
    "EVENT_TIME",
    "LOG_ID",
    "RECEIVED_AT",
    "SEQUENCE_NUMBER",
    "SEQUENCE_NUMBER_STR",
    "TIMESTAMP",
    "RecordBuilder",
    "labels_of",
]

# Column names of the `events` stream that other parts (reconcile) read: import, don't restate.
EVENTS_STREAM = "events"
LOG_ID = "log_id"
TIMESTAMP = "timestamp"  # the API's integer: milliseconds when Rapid7 received the entry
SEQUENCE_NUMBER = "sequence_number"
SEQUENCE_NUMBER_STR = "sequence_number_str"
RECEIVED_AT = "received_at"  # TIMESTAMP as a date-time
EVENT_TIME = "event_time"  # the event's own time, read from its message
# An entry's identity (§11): the log, the millisecond it was received, its sequence number.
EVENTS_KEY_PROPERTIES = (LOG_ID, TIMESTAMP, SEQUENCE_NUMBER_STR)
EVENTS_REPLICATION_KEY = RECEIVED_AT

EVENTS_SCHEMA = th.PropertiesList(
    th.Property("log_id", th.StringType, required=True, description="Log the entry is in"),
    th.Property(
        "timestamp", th.IntegerType, required=True,
        description="When Rapid7 received the entry, epoch ms, as the API sends it",
    ),
    th.Property(
        "received_at", th.DateTimeType, required=True,
        description="`timestamp` as an ISO 8601 UTC date-time (replication key)",
    ),
    th.Property(
        "event_time", th.DateTimeType,
        description="The event's own time, from the message (event_time_fields); null if none",
    ),
    th.Property(
        "sequence_number", th.IntegerType, required=True,
        description="Sequence number (int64, exact); unique only within one millisecond",
    ),
    th.Property(
        "sequence_number_str", th.StringType, required=True,
        description="Sequence number exactly as sent, as text",
    ),
    th.Property("message", th.StringType, description="Raw log line, never re-encoded"),
    th.Property("labels", th.ArrayType(th.ObjectType(th.Property("id", th.StringType)))),
).to_dict()  # fmt: skip


def labels_of(labels: Any) -> list[dict]:
    """Labels as the schema declares them (``[{"id": ...}]``); usually empty."""
    if not labels or not isinstance(labels, list):
        return []
    return [{"id": label.get("id")} for label in labels if isinstance(label, dict)]


class RecordBuilder:
    """Builds ``events`` records; one per window reader (the extractor's counts are per window)."""

    def __init__(self, event_time_fields: tuple[str, ...] = ()) -> None:
        self.event_time = EventTimeExtractor(event_time_fields)

    def __call__(
        self, event: Mapping[str, Any], log_id: str, timestamp: int, seq: int, seq_str: str
    ) -> dict:
        """The record of one validated event (identity already checked by the reader)."""
        message = event.get("message")
        if message is not None and not isinstance(message, str):
            message = msgspec.json.encode(message).decode()
        return {
            "log_id": log_id,
            "timestamp": timestamp,
            "received_at": millis_to_iso(timestamp),
            "event_time": self.event_time.extract(message) if self.event_time.enabled else None,
            "sequence_number": seq,
            "sequence_number_str": seq_str,
            "message": message,
            "labels": labels_of(event.get("labels")),
        }
