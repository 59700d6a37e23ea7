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

A message above ``max_message_bytes`` (UTF-8) is either cut to the limit, ending with a marker
that says so and how large it was (``oversized_messages: truncate``: the record and its identity
stay, the schema does not change, a WARNING tells), or ends the run naming the event
(``fail``). Rapid7 does not publish its largest entry; the default limit (1 MiB) is far above
what its inputs ingest (64 KiB assumed), so it is only ever reached by a broken or hostile server,
and one record of hundreds of megabytes would otherwise travel whole to the target.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Mapping
from typing import Any

import msgspec
from singer_sdk import typing as th
from singer_sdk.exceptions import FatalAPIError

from plugin_io.log_events import log_event
from tap_rapid7.logsearch.event_time import EventTimeExtractor
from tap_rapid7.logsearch.labels import LabelNames
from tap_rapid7.windows import millis_to_iso

__all__ = [
    "EVENTS_KEY_PROPERTIES",
    "EVENTS_REPLICATION_KEY",
    "EVENTS_SCHEMA",
    "EVENTS_STREAM",
    "EVENT_TIME",
    "KVP",
    "KVP_PROPERTY",
    "LOG_ID",
    "MAX_MESSAGE_BYTES",
    "OVERSIZED_MESSAGES",
    "RECEIVED_AT",
    "SEQUENCE_NUMBER",
    "SEQUENCE_NUMBER_STR",
    "TIMESTAMP",
    "OversizedMessageError",
    "OversizedTally",
    "RecordBuilder",
    "events_schema",
    "kvp_of",
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

# Defaults of the settings max_message_bytes and oversized_messages (settings.py keeps them equal).
MAX_MESSAGE_BYTES = 1024 * 1024
MIN_MESSAGE_BYTES = 1024  # room for the marker and a useful start of the message
OVERSIZED_MESSAGES = ("truncate", "fail")

logger = logging.getLogger("tap_rapid7.logsearch")

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
    th.Property(
        "label_names", th.ArrayType(th.StringType(nullable=True)),
        description=(
            "Names of `labels`, in the same order (/management/labels); null where a name "
            "cannot be had"
        ),
    ),
).to_dict()  # fmt: skip

# The column `kvp`, only in the schema (and the records) when the setting kvp_info is on.
KVP = "kvp"
KVP_PROPERTY: dict[str, Any] = th.Property(
    KVP,
    th.ArrayType(
        th.ObjectType(th.Property("key", th.StringType), th.Property("value", th.StringType))
    ),
    description=(
        "Key/value pairs Rapid7 parsed from the entry (kvp_info), as texts; null when the API "
        "sent none"
    ),
).to_dict()  # fmt: skip


def events_schema(*, kvp_info: bool = False) -> dict[str, Any]:
    """The ``events`` schema: ``EVENTS_SCHEMA`` itself when ``kvp_info`` is off (nothing
    changes for a user who does not ask for it), else a copy with the ``kvp`` column."""
    if not kvp_info:
        return EVENTS_SCHEMA
    schema = copy.deepcopy(EVENTS_SCHEMA)
    schema["properties"].update(copy.deepcopy(KVP_PROPERTY))
    return schema


def labels_of(labels: Any) -> list[dict]:
    """Labels as the schema declares them (``[{"id": ...}]``); usually empty."""
    if not labels or not isinstance(labels, list):
        return []
    return [{"id": label.get("id")} for label in labels if isinstance(label, dict)]


def _span_text(span: Any) -> str | None:
    """A kvp span's ``text`` as a string: Rapid7's own examples send numbers (``text: 899``)."""
    text = span.get("text") if isinstance(span, Mapping) else None
    if isinstance(text, str):
        return text
    if isinstance(text, bool):
        return "true" if text else "false"  # as the message spells it (JSON)
    if isinstance(text, int | float):
        return str(text)
    return None


def kvp_of(kvp_info: Any) -> tuple[list[dict] | None, int, str | None]:
    """``(kvp, items dropped, first problem)`` of an event's ``kvp_info``.

    Each item is ``{"key": {"text", "start", "end"}, "value": {...}}``; Rapid7's OpenAPI example
    also nests ``value`` inside ``key``, and both readings are taken. An item without a key or
    value text is dropped and counted, not fatal: the pairs are Rapid7's parse of the message,
    which the record keeps whole, and never part of the event's identity. No ``kvp_info`` at all
    is null (the API sent none), an empty list is an empty list.
    """
    if kvp_info is None:
        return None, 0, None
    if not isinstance(kvp_info, list):
        return None, 1, f"kvp_info is a {type(kvp_info).__name__}, not a list"
    pairs: list[dict] = []
    dropped = 0
    problem: str | None = None
    for index, item in enumerate(kvp_info):
        try:  # the well-formed case, in as few steps as possible (it runs per pair)
            key = item["key"]
            key_text, value_text = key["text"], item["value"]["text"]
            if type(key_text) is str and type(value_text) is str:
                pairs.append({"key": key_text, "value": value_text})
                continue
        except (TypeError, KeyError):
            pass
        key = item.get("key") if isinstance(item, Mapping) else None
        value = item.get("value") if isinstance(item, Mapping) else None
        if value is None and isinstance(key, Mapping):
            value = key.get("value")
        key_text, value_text = _span_text(key), _span_text(value)
        if key_text is None or value_text is None:
            dropped += 1
            if problem is None:
                missing = "key.text" if key_text is None else "value.text"
                problem = f"kvp_info[{index}] has no usable {missing}"
            continue
        pairs.append({"key": key_text, "value": value_text})
    return pairs, dropped, problem


class OversizedMessageError(FatalAPIError):
    """A message above ``max_message_bytes`` with ``oversized_messages: fail``."""


class OversizedTally:
    """Messages truncated so far, per log, for the whole run (builders are per window).

    The WARNING goes out for the 1st, 10th, 100th, ... truncation of a log: visible at once, its
    running count readable, and never a line per event.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, log_id: str) -> int:
        """Count one more truncation in ``log_id``; return the log's count so far."""
        with self._lock:
            count = self._counts.get(log_id, 0) + 1
            self._counts[log_id] = count
            return count

    def count(self, log_id: str) -> int:
        """Truncations counted in ``log_id``."""
        with self._lock:
            return self._counts.get(log_id, 0)


_RUN_TALLY = OversizedTally()  # one process is one run


def _marker(size: int, limit: int) -> str:
    return f" [tap-rapid7: message truncated, {size} bytes > max_message_bytes {limit}]"


def _cut_utf8(message: str, encoded: bytes, keep: int) -> str:
    """The longest start of ``message`` within ``keep`` UTF-8 bytes (never half a character)."""
    for end in range(keep, max(keep - 4, -1), -1):
        try:
            return encoded[:end].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            continue
    return message[: keep // 4]  # not reached: a character is at most 4 bytes


class RecordBuilder:
    """Builds ``events`` records; one per window reader (the extractor's counts are per window).

    ``max_message_bytes``, ``oversized_messages`` and ``kvp_info`` are the settings of the same
    names; their defaults are the settings' defaults. ``tally`` counts truncations per log across
    builders (default: one for the process, i.e. the run). ``label_names`` names the labels
    (shared by the run's builders); without it ``label_names`` holds nulls.
    """

    def __init__(
        self,
        event_time_fields: tuple[str, ...] = (),
        *,
        event_time_zone: str = "UTC",
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        oversized_messages: str = "truncate",
        tally: OversizedTally | None = None,
        label_names: LabelNames | None = None,
        kvp_info: bool = False,
    ) -> None:
        if oversized_messages not in OVERSIZED_MESSAGES:
            msg = (
                f"oversized_messages must be one of {', '.join(OVERSIZED_MESSAGES)}, "
                f"got {oversized_messages!r}"
            )
            raise ValueError(msg)
        if max_message_bytes < MIN_MESSAGE_BYTES:
            msg = f"max_message_bytes must be at least {MIN_MESSAGE_BYTES}, got {max_message_bytes}"
            raise ValueError(msg)
        self.event_time = EventTimeExtractor(event_time_fields, event_time_zone)
        self.max_message_bytes = max_message_bytes
        self.oversized_messages = oversized_messages
        self.tally = tally or _RUN_TALLY
        self.truncated = 0  # by this builder (its window)
        self.label_names = label_names
        self.kvp_info = kvp_info
        self.kvp_dropped = 0  # malformed kvp_info items dropped by this builder (its window)

    def __call__(
        self, event: Mapping[str, Any], log_id: str, timestamp: int, seq: int, seq_str: str
    ) -> dict:
        """The record of one validated event (identity already checked by the reader)."""
        message = event.get("message")
        if message is not None and not isinstance(message, str):
            message = msgspec.json.encode(message).decode()
        event_time = None
        if self.event_time.enabled:  # from the whole message, before any cut
            event_time = self.event_time.extract(message)
        # A character is at most 4 UTF-8 bytes: only long messages are encoded to be measured.
        if message is not None and len(message) * 4 > self.max_message_bytes:
            message = self._bounded(message, log_id, timestamp, seq_str)
        labels = labels_of(event.get("labels"))
        record = {
            "log_id": log_id,
            "timestamp": timestamp,
            "received_at": millis_to_iso(timestamp),
            "event_time": event_time,
            "sequence_number": seq,
            "sequence_number_str": seq_str,
            "message": message,
            "labels": labels,
            "label_names": self._label_names(labels) if labels else [],
        }
        if self.kvp_info:
            record[KVP] = self._kvp(event.get("kvp_info"), log_id, timestamp, seq_str)
        return record

    def _label_names(self, labels: list[dict]) -> list[str | None]:
        ids = [label["id"] for label in labels]
        if self.label_names is None:
            return [None] * len(ids)
        return self.label_names.names(ids)

    def _kvp(self, kvp_info: Any, log_id: str, timestamp: int, seq_str: str) -> list[dict] | None:
        """The event's ``kvp``; malformed items dropped, counted, the window's first one warned."""
        pairs, dropped, problem = kvp_of(kvp_info)
        if dropped:
            if not self.kvp_dropped:
                log_event(
                    logger, logging.WARNING, "logsearch_kvp_malformed", log_id=log_id,
                    timestamp=timestamp, sequence_number=seq_str, problem=problem,
                    effect="dropped from kvp; counted in kvp_dropped of the window",
                )  # fmt: skip
            self.kvp_dropped += dropped
        return pairs

    def _bounded(self, message: str, log_id: str, timestamp: int, seq_str: str) -> str:
        """``message``, or its start plus a marker when above ``max_message_bytes``."""
        encoded = message.encode("utf-8", "surrogatepass")
        size, limit = len(encoded), self.max_message_bytes
        if size <= limit:
            return message
        if self.oversized_messages == "fail":
            msg = (
                f"Log Search sent a message of {size} bytes in log {log_id!r} (timestamp "
                f"{timestamp} = {millis_to_iso(timestamp)}, sequence number {seq_str}), above "
                f"max_message_bytes ({limit}) with oversized_messages 'fail': set "
                "oversized_messages to 'truncate' to keep such events cut to the limit, or "
                "raise max_message_bytes"
            )
            raise OversizedMessageError(msg)
        marker = _marker(size, limit)
        cut = _cut_utf8(message, encoded, limit - len(marker.encode()))
        self.truncated += 1
        count = self.tally.add(log_id)
        if _power_of_ten(count):
            log_event(
                logger, logging.WARNING, "logsearch_message_truncated", log_id=log_id,
                timestamp=timestamp, sequence_number=seq_str, bytes=size,
                max_message_bytes=limit, truncated_in_log=count,
            )  # fmt: skip
        return cut + marker


def _power_of_ten(count: int) -> bool:
    while count % 10 == 0:
        count //= 10
    return count == 1
