"""Streams of tap-rapid7: ``events`` (one partition per log), ``logs``, ``logsets``, ``labels``.

The streams hold no HTTP policy: they ask ``LogSearchClient`` (through the tap) for windows of
records and turn the per-log cursor into SDK state. The cursor is updated right after each
RECORD is written (``advance_state``, called by the SDK right after each RECORD), so any
STATE the SDK emits, periodic or final, never points past what has been written.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, InvalidStreamSortException
from singer_sdk.helpers.conform import TypeConformanceLevel

from plugin_io.log_events import log_event
from tap_rapid7.logsearch.records import (
    EVENTS_KEY_PROPERTIES,
    EVENTS_REPLICATION_KEY,
    EVENTS_SCHEMA,
    events_schema,
)
from tap_rapid7.runner import WindowTask
from tap_rapid7.sdk_hooks import StreamHooks
from tap_rapid7.windows import (
    CURSOR_EMITTED_KEY,
    CURSOR_FLOOR_KEY,
    CURSOR_MILLIS_KEY,
    CURSOR_SEQUENCE_KEY,
    MAX_EMITTED_IN_STATE,
    Cursor,
    add_emitted,
    iso_to_millis,
    plan_windows,
    sync_end_millis,
)

if TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

    from tap_rapid7.tap import TapRapid7

__all__ = ["EventsStream", "LabelsStream", "LogsStream", "LogsetsStream"]

_LINK = th.ObjectType(th.Property("rel", th.StringType), th.Property("href", th.StringType))
_REF = th.ObjectType(
    th.Property("id", th.StringType),
    th.Property("name", th.StringType),
    th.Property("rrn", th.StringType),
    th.Property("links", th.ArrayType(_LINK)),
)


class _TapStream(StreamHooks):
    """A stream that reaches the shared client and settings through its tap."""

    @property
    def rapid7(self) -> TapRapid7:
        return self.parent_tap  # type: ignore[return-value]

    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        """Between two records (the SDK calls this before writing each): stop if a signal came."""
        self.rapid7.stop_if_requested()
        return row


class EventsStream(_TapStream):
    """Log entries, pulled window by window per log, resumable inside a millisecond."""

    name = "events"
    primary_keys = EVENTS_KEY_PROPERTIES
    replication_key = EVENTS_REPLICATION_KEY
    # Records go out in (timestamp, sequence_number) order per log, so the bookmark may advance
    # as they go (resumable) instead of only at the end of a partition.
    is_sorted = True
    # Records are built with the schema's exact types (logsearch.records), so the SDK's
    # per-record conformance pass (a third of the tap's CPU) has nothing to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    schema = EVENTS_SCHEMA  # with kvp_info on, the instance's has the kvp column too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.rapid7.settings.kvp_info:
            self.schema = events_schema(kvp_info=True)
        every = self.rapid7.settings.state_every_records
        if every > 0:  # the SDK's periodic STATE interval (records), per instance
            self.STATE_MSG_FREQUENCY = every
        self._plan: list[WindowTask] | None = None
        self._state_dicts: dict[str, dict] = {}
        self._all_selected: bool | None = None
        self._end_millis: int | None = None
        self._capped_millis: set[int] = set()  # milliseconds whose emitted list was capped

    @property
    def partitions(self) -> None:
        """No SDK partitions: logs read together in one query interleave their records.

        The state is still kept per log, in the same place (``partitions`` in the stream's
        bookmark, one context ``{"log_id": ...}`` each): every record updates its own log's
        cursor (``_increment_stream_state``), so state written by earlier versions resumes.
        """
        return None

    def _resume_cursor(self, log_id: str) -> Cursor:
        """Where ``log_id`` starts: its stored cursor, else ``start_date``.

        The state always wins over ``start_date``: a relative start date ("1 day ago") moves
        forward every run, and letting it pass a stored cursor would silently skip the gap.
        """
        state = self.get_context_state({"log_id": log_id})
        cursor = Cursor.from_state(state)
        if cursor is None and state.get("replication_key_value"):
            # A bookmark without our cursor (older state): re-read its millisecond; the
            # target's key dedupe absorbs the few repeats.
            cursor = Cursor(iso_to_millis(str(state["replication_key_value"])))
        start_date = self.rapid7.settings.start_date
        start_ms = iso_to_millis(start_date) if start_date else None
        if cursor is None:
            if start_ms is None:
                msg = (
                    f"start_date is required when there is no state: log {log_id} has no "
                    f"{CURSOR_MILLIS_KEY} in the state to resume from. Set start_date (e.g. "
                    f"2024-01-31T00:00:00Z or '1 day ago') or pass --state"
                )
                raise ConfigValidationError(msg, errors=[msg])
            return Cursor(start_ms)
        return cursor

    def window_plan(self) -> list[WindowTask]:
        """Every query window of this sync, in the order the records go out.

        Logs are read ``logs_per_query`` at a time: a group shares one query per window (quiet
        logs then cost one query together instead of one each; a group whose first page is
        full goes on log by log, see ``WindowReader.read_group``). A group's windows start at
        its earliest cursor; a log joins the group's windows from the one holding its cursor.
        """
        if self._plan is None:
            settings = self.rapid7.settings
            end_ms = sync_end_millis(
                settings.end_date, time.time_ns() // 1_000_000, settings.lag_seconds
            )
            window_ms = int(settings.window_seconds * 1000)
            per_query = max(1, settings.logs_per_query)
            statement = settings.query or None
            cursors = {log_id: self._resume_cursor(log_id) for log_id in self.rapid7.log_ids}
            log_ids = list(cursors)
            plan: list[WindowTask] = []
            for first in range(0, len(log_ids), per_query):
                group = log_ids[first : first + per_query]
                start = min(cursors[log_id].millis for log_id in group)
                for window in plan_windows(start, end_ms, window_ms):
                    members = tuple(g for g in group if cursors[g].millis < window.to_ms)
                    resumes = tuple(
                        (g, cursors[g]) for g in members if window.contains(cursors[g].millis)
                    )
                    plan.append(WindowTask(members, window, resumes, statement))
            self._end_millis = end_ms
            self._plan = plan
        return self._plan

    def get_records(self, context: Context | None) -> Iterable[dict]:
        """Records of every log, window after window (a group's logs mixed); STATE after each.

        Fetching the next batch is a wait for the API: a stop signal ends it at once.
        """
        tap = self.rapid7
        plan = tap.wait_for_api(self.window_plan)
        runner = tap.wait_for_api(partial(tap.window_runner, plan))
        for task in plan:
            batches = runner.batches(task)
            while True:
                batch = tap.wait_for_api(partial(next, batches, None))
                if batch is None:
                    break
                yield from batch
            self._commit_window_end(task)

    def _commit_window_end(self, task: WindowTask) -> None:
        """The whole window went out: its logs' cursors move to its end, then STATE is written."""
        for log_id in task.log_ids:
            state = self._partition_state(log_id)
            state.pop(CURSOR_EMITTED_KEY, None)  # nothing emitted at the window's end yet
            state.pop(CURSOR_FLOOR_KEY, None)
            state.update(Cursor(task.window.to_ms).state_fields())
        self.write_state_now()

    def plain_records(self) -> bool:
        """Every property selected: pruning is a no-op, and records are already conformed."""
        if self._all_selected is None:
            mask = self.mask
            self._all_selected = all(
                mask.get(("properties", name), True) for name in self.schema["properties"]
            )
        return self._all_selected

    def generate_child_contexts(
        self, record: Record, context: Context | None
    ) -> Iterable[Context | None]:
        """No child streams here: nothing to generate per record."""
        if not self.child_streams:
            return ()
        return super().generate_child_contexts(record, context)

    def _partition_state(self, log_id: str) -> dict:
        """The log's state dict (the same object inside the tap state), looked up once."""
        state = self._state_dicts.get(log_id)
        if state is None:
            state = self._state_dicts[log_id] = self.get_context_state({"log_id": log_id})
        return state

    def advance_state(self, latest_record: Record) -> bool:
        """After the SDK wrote ``latest_record``: advance its log's bookmark and exact cursor.

        Replaces the SDK's sorted-stream bookkeeping (same fields, same sort check, per log)
        with one dict lookup per record: it runs for every event and was a visible share of tap
        CPU, and records of several logs may interleave (logs read in one query).
        """
        log_id = latest_record["log_id"]
        state = self._partition_state(log_id)
        value = latest_record[self.replication_key]
        previous = state.get("replication_key_value")
        if previous is not None and value < previous:
            msg = f"events of log {log_id} out of order: {value} after {previous}"
            raise InvalidStreamSortException(msg)
        state["replication_key"] = self.replication_key
        state["replication_key_value"] = value
        timestamp = latest_record["timestamp"]
        sequence = latest_record["sequence_number_str"]
        current = state.get(CURSOR_MILLIS_KEY)
        if isinstance(current, str):  # a hand-edited state may hold the number as text
            current = int(current)
        if timestamp != current:  # a new millisecond: only this one yet
            state[CURSOR_MILLIS_KEY] = timestamp
            state[CURSOR_EMITTED_KEY] = sequence
            state.pop(CURSOR_FLOOR_KEY, None)
        elif CURSOR_EMITTED_KEY in state or not state.get(CURSOR_SEQUENCE_KEY):
            # one more identity of the same millisecond
            emitted = state.get(CURSOR_EMITTED_KEY, "")
            state[CURSOR_EMITTED_KEY], dropped = add_emitted(emitted, sequence)
            if dropped and timestamp not in self._capped_millis:
                self._capped_millis.add(timestamp)
                log_event(
                    self.logger, logging.WARNING, "tap_cursor_capped", log_id=log_id,
                    millis=timestamp, kept=MAX_EMITTED_IN_STATE,
                )  # fmt: skip
        else:  # a state from before the list, still in its millisecond: its floor is kept
            # beside a new list (CURSOR_FLOOR_KEY), so what follows may come in any order
            state[CURSOR_FLOOR_KEY] = state[CURSOR_SEQUENCE_KEY]
            state[CURSOR_EMITTED_KEY] = sequence
        state[CURSOR_SEQUENCE_KEY] = sequence
        return True

    def log_sync_costs(self) -> None:
        """At the end of the sync, also log what it spent of Rapid7's budgets.

        The SDK calls this once per stream after every stream has synced (``Tap.sync_all`` is
        final), so the summary covers the management streams' requests too.
        """
        super().log_sync_costs()
        if "client" in self.rapid7.__dict__:  # a client was built: requests were made
            self.rapid7.client.pacer.log_summary()

    def get_replication_key_signpost(self, context: Context | None = None) -> dt.datetime | None:
        """No signpost: the bookmark is exact (sorted records), never capped at sync start."""
        return None


class LogsStream(_TapStream):
    """Logs from ``/management/logs``."""

    name = "logs"
    primary_keys = ("id",)
    schema = th.PropertiesList(
        th.Property("id", th.StringType, required=True),
        th.Property("name", th.StringType),
        th.Property("rrn", th.StringType),
        th.Property("source_type", th.StringType),
        th.Property("retention_period", th.StringType),
        th.Property("token_seed", th.StringType),
        th.Property("tokens", th.ArrayType(th.StringType)),
        th.Property("structures", th.ArrayType(th.StringType)),
        th.Property("logsets_info", th.ArrayType(_REF)),
        th.Property("links", th.ArrayType(_LINK)),
        th.Property("user_data", th.ObjectType(additional_properties=th.StringType)),
    ).to_dict()

    def get_records(self, context: Context | None) -> Iterator[dict]:
        """One record per log."""
        yield from self.rapid7.wait_for_api(self.rapid7.client.list_logs)


class LogsetsStream(_TapStream):
    """Log sets from ``/management/logsets``."""

    name = "logsets"
    primary_keys = ("id",)
    schema = th.PropertiesList(
        th.Property("id", th.StringType, required=True),
        th.Property("name", th.StringType),
        th.Property("description", th.StringType),
        th.Property("rrn", th.StringType),
        th.Property("logs_info", th.ArrayType(_REF)),
        th.Property("user_data", th.ObjectType(additional_properties=th.StringType)),
    ).to_dict()

    def get_records(self, context: Context | None) -> Iterator[dict]:
        """One record per log set."""
        yield from self.rapid7.wait_for_api(self.rapid7.client.list_logsets)


class LabelsStream(_TapStream):
    """Labels from ``/management/labels``, the names behind the events' label ids.

    The same read as the events' ``label_names`` (``LabelNames``: once per run). A key that may
    not read labels gives an empty stream and one WARNING, not a failed run.
    """

    name = "labels"
    primary_keys = ("id",)
    schema = th.PropertiesList(
        th.Property("id", th.StringType, required=True),
        th.Property("sn", th.IntegerType),
        th.Property("name", th.StringType),
        th.Property("color", th.StringType, description="Hex colour, as the API names it"),
        th.Property("reserved", th.BooleanType, description="Read-only (Rapid7's own)"),
    ).to_dict()

    def get_records(self, context: Context | None) -> Iterator[dict]:
        """One record per label (one with no usable id is skipped: the key is ``id``)."""
        for label in self.rapid7.wait_for_api(self.rapid7.client.list_labels):
            if isinstance(label.get("id"), str) and label["id"]:
                yield label
