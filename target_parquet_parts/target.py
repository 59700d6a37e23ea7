"""target-parquet-parts: a Singer target writing immutable Parquet parts, STATE exactly on time.

STATE handling (the SDK only writes STATE from ``drain_all()``: end of input, the 5-minute age
drain, SIGTERM). Here a STATE is emitted as soon as every record received before it is in a
renamed, fsynced part, and never earlier:

* When a STATE arrives, the sinks holding records (all received before it) are noted with their
  flush counters. The STATE is safe once each of them has flushed since. After every flush (a
  full sink, the age drain, end of input) the newest safe STATE is written to stdout.
* When one of those sinks flushes because it is full, the others the newest STATE waits for
  are flushed with it, so a small stream never holds STATE back.
* If no sink holds records, the STATE is written at once.
* ``state_max_lag_seconds`` bounds how long a STATE may wait for not-yet-full sinks: when the
  oldest waiting STATE is older than that (checked at each record and STATE message, and by
  the reader's idle watcher while no input arrives), the sinks holding records are flushed
  early. ``0`` flushes at every STATE (smallest redo after a crash,
  more and smaller parts).

Parts are written behind the reader (``writes.py``, ``overlap_writes``): a flush builds the
batch's Arrow table on the reading thread and hands the rest (encoding, compression, journal
line, fsync and rename, or upload; with Iceberg the data files and the commit) to one part
writer, which runs one batch at a time, in order,
while the next records are read. ``flush_count`` counts flushes handed over; a STATE whose
sinks have all flushed since it arrived waits, in ``_awaiting``, until the writer has made
durable every batch handed over by then (``writes.done``), and is written by the reading thread
(at its next message) or by the idle watcher, which the writer wakes. ``drain_all``'s STATE
waits for the writer first. A failed write raises its own error at the next hand-off, STATE
check or at the end; no STATE goes out after it.

SIGTERM and SIGINT (what Meltano and schedulers send on cancel): the handler only records the
request (``on_stop_signal``). The reader stops between two messages (a flush in progress
always finishes; see ``reader.py``), the idle watcher is stopped, then the end of input is
processed as usual: buffered records are flushed and the latest STATE, now covered by renamed,
fsynced parts, is written. The process then exits with 128 + the signal number (143, 130), with
one WARNING line ``target_stopped_by_signal``. The same signal again (Ctrl-C twice) stops at
once (exit code as above, no further flush): like ``kill -9``, which the journal is built for,
every STATE already written is covered. A different one (Ctrl-C makes the terminal send SIGINT
to the whole group, then Meltano sends SIGTERM) does not cut the graceful stop short.

The SDK's private hooks are overridden in ``sdk_hooks.py`` only, each delegating to a public
method here: ``handle_state_message`` (track instead of only remembering the latest),
``write_state_message`` (Decimal-aware encoding, SDK issue 3787, and no duplicate lines),
``handle_max_record_age`` (the SDK's per-record check; ours adds the safe-STATE and lag checks),
``handle_schema_message`` and ``handle_record_message`` (the fast path), ``on_stop_signal``
(record the signal instead of draining inside the handler), ``prepare_config`` (numbers given
as text); ``process_endofpipe`` is public (close the journal; exit code after a signal).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import os
import secrets
import signal
import threading
import time
import typing as t
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property

from singer_sdk.contrib.msgspec import encoder as _json_encoder
from singer_sdk.exceptions import ConfigValidationError, RecordsWithoutSchemaException
from singer_sdk.mapper import SameRecordTransform

from plugin_io.cli_errors import OneLineFatalErrors
from plugin_io.distribution import DISTRIBUTION, install_hint
from plugin_io.log_events import log_event, redact
from plugin_io.settings_types import secret_paths, secret_texts
from plugin_io.singer_lines import write_line
from target_parquet_parts.errors import DescribedOSError, describe_os_error, explain_os_errors
from target_parquet_parts.journal import Journal
from target_parquet_parts.naming import StreamDirectories
from target_parquet_parts.objectstore import check_lease
from target_parquet_parts.reader import LineNumberingReader
from target_parquet_parts.record_lines import record_line_head, stream_key
from target_parquet_parts.sdk_hooks import TargetHooks
from target_parquet_parts.settings import (
    CONFIG_SCHEMA,
    TargetSettings,
    check_catalog,
    check_retention,
    numbers_from_text,
)
from target_parquet_parts.sinks import ParquetPartsSink
from target_parquet_parts.storage import RunLockLike, Storage, check_output_dir, open_storage
from target_parquet_parts.version import PLUGIN_NAME
from target_parquet_parts.writes import PartWrites

if t.TYPE_CHECKING:
    from types import FrameType

    from target_parquet_parts.iceberg import IcebergWriter

__all__ = ["TargetParquetParts"]

_clock = time.monotonic  # the STATE-lag clock; tests replace it to control time
# Flushes between two young collections of the cycles object-store requests leave
# (on_sink_flushed), as Iceberg's COLLECT_EVERY_COMMITS.
COLLECT_EVERY_FLUSHES = 50


@dataclass
class _PendingState:
    index: int
    value: t.Any
    received_at: float
    blockers: dict[ParquetPartsSink, int] = field(default_factory=dict)

    def is_safe(self) -> bool:
        return all(sink.flush_count > count for sink, count in self.blockers.items())


@contextlib.contextmanager
def _refused_as(setting: str, secrets: Iterable[str] = ()) -> Iterator[None]:
    """A ``ValueError`` raised inside becomes the SDK's config error naming ``setting``.

    ``secrets`` (a catalog's credentials) never appear in the message, whoever wrote it.
    """
    try:
        yield
    except ValueError as exc:
        message = redact(f"{setting}: {exc}", secrets)
        raise ConfigValidationError(message, errors=[message]) from exc


def _iceberg_writer(settings: TargetSettings, run_id: str) -> IcebergWriter:
    try:
        # pyiceberg is an optional extra: imported only when table_format is iceberg
        from target_parquet_parts.iceberg import IcebergWriter  # noqa: PLC0415
    except ImportError as exc:
        msg = f"table_format 'iceberg' needs pyiceberg ({exc}): {install_hint('iceberg')}"
        raise ValueError(msg) from None
    return IcebergWriter(settings, run_id)


class TargetParquetParts(OneLineFatalErrors, TargetHooks):
    """Singer target that writes each batch as new, immutable Parquet part files."""

    name = PLUGIN_NAME
    # --about's version and Python support: the one distribution's metadata (public SDK attribute)
    package_name = DISTRIBUTION
    message_reader_class = LineNumberingReader
    default_sink_class = ParquetPartsSink
    # Set by the signal handler; a class attribute because the SDK installs the handler in
    # PluginBase.__init__, before this class's __init__ body runs.
    _stop_signal: int | None = None

    # a copy: the SDK appends its built-in settings (batch_size_rows, ...) to this dict in place
    config_jsonschema = copy.deepcopy(CONFIG_SCHEMA)
    # pyiceberg catalog properties may hold credentials (keys, tokens, a password in a URI)
    secret_settings: t.ClassVar[tuple[str, ...]] = ("iceberg_catalog",)
    # The latest target's secret values: the CLI's last-resort error line hides them.
    last_hidden_texts: t.ClassVar[list[str]] = []

    def prepare_config(self, config: dict[str, t.Any]) -> dict[str, t.Any]:
        """Numbers given as text (Meltano passes kind-less settings from the environment so)."""
        return numbers_from_text(config)

    @cached_property
    def settings(self) -> TargetSettings:
        """The typed settings of this run (built once, after the config was validated)."""
        return TargetSettings.from_config(self.config)

    @cached_property
    def hidden_texts(self) -> list[str]:
        """Every spelling of a secret setting's value that no message may show."""
        paths = secret_paths(self.config_jsonschema, self.secret_settings)
        return secret_texts(self.config, paths)

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        TargetParquetParts.last_hidden_texts = self.hidden_texts
        self.run_id = secrets.token_hex(8)
        self.states_received = 0
        self._pending: list[_PendingState] = []
        self._sinks: list[ParquetPartsSink] = []
        self._state_check_needed = False
        self._last_state_line: bytes | None = None
        self._records_at_last_state = 0
        self._journal: Journal | None = None
        self._run_lock: RunLockLike | None = None
        self._storage: Storage | None = None
        self._journal_lock = threading.Lock()
        self._fast_sinks: dict[str, ParquetPartsSink] = {}
        self._line_sinks: dict[bytes, ParquetPartsSink] = {}  # by stream_key (record_lines)
        # The head of the last RECORD line taken and its sink: the next lines of the same
        # stream are recognised by one startswith (take_record_line). Reset at every SCHEMA.
        self._line_head: bytes | None = None
        self._line_head_sink: ParquetPartsSink | None = None
        self.stream_directories = StreamDirectories()
        self._records_since_check = 0
        self._flushes_uncollected = 0  # flushes since the last young collection
        # STATEs whose records were all handed to the part writer, each with the number of
        # batches the writer must have made durable first (oldest first; see _emit_safe_states).
        self._awaiting: list[tuple[int, _PendingState]] = []
        self.iceberg: IcebergWriter | None = None
        self._catalog_asked = False  # on_batch_started
        settings = self.settings
        # Settings that cannot work end the run here with one line naming the setting: the
        # SDK's CLI prints a ConfigValidationError's errors without a traceback.
        with _refused_as("table_format", self.hidden_texts):
            if settings.is_iceberg:
                self.iceberg = _iceberg_writer(settings, self.run_id)
        if self.iceberg is not None and settings.batch_size_rows is None:
            rows = self.iceberg.default_batch_size_rows  # fewer, larger commits (iceberg.py)
            self.set_config_value("batch_size_rows", rows)  # what the SDK's sinks read
            self.settings = settings = replace(settings, batch_size_rows=rows)
        with _refused_as("output_dir"):
            if self.iceberg is None and settings.output_dir:
                check_output_dir(settings.output_dir)  # an unknown scheme:// fails at start
        with _refused_as("lock_lease_seconds"):
            check_lease(settings.lock_lease_seconds)
        with _refused_as("iceberg_snapshot_retention_hours"):
            check_retention(settings)
        with _refused_as("iceberg_catalog", self.hidden_texts):
            check_catalog(settings)
        load_method = settings.load_method or "append-only"
        if load_method != "append-only":
            msg = (
                f"load_method: '{load_method}' is not supported by {self.name}: parts are "
                "immutable and only ever added, so only 'append-only' is possible"
            )
            raise ConfigValidationError(msg, errors=[msg])
        self._state_max_lag = settings.state_max_lag_seconds
        self._lag = max(self._state_max_lag, 0.0)
        # Parts are written, and Iceberg batches committed, on a worker while the next records
        # are read (writes.py).
        self.writes = PartWrites(
            overlap=settings.overlap_writes,
            on_done=self._part_durable,
            check=self._check_lease,
        )
        if (self._lag > 0 or self.writes.overlap) and isinstance(
            self.message_reader, LineNumberingReader
        ):
            # A tap can go quiet for minutes (a query still running, a 429 wait): the lag
            # bound must hold then too, not only when the next message arrives; and a STATE
            # whose part the writer finishes then goes out at once (the writer wakes it).
            self.message_reader.idle_callback = self._check_state_lag
            self.message_reader.idle_interval = (
                min(max(self._lag / 4, 0.05), 1.0) if self._lag > 0 else 1.0
            )
        if isinstance(self.message_reader, LineNumberingReader):
            self.message_reader.on_failure = self.release_after_failure
            self.message_reader.take_record_line = self.take_record_line
        if self._stop_signal is not None and isinstance(self.message_reader, LineNumberingReader):
            self.message_reader.stop_signal = self._stop_signal  # a signal during __init__

    # -- sinks and journal ----------------------------------------------------------------
    @property
    def storage(self) -> Storage:
        """Where the dataset lives: a local directory or an object store (``storage.py``)."""
        with self._journal_lock:
            if self._storage is None:
                with explain_os_errors(self.settings.output_dir):
                    self._storage = open_storage(
                        self.settings.output_dir, self.settings.lock_lease_seconds
                    )
            return self._storage

    @property
    def journal(self) -> Journal:
        """The output_dir's exactly-once journal (opened on first use, under the run lock)."""
        storage = self.storage
        with self._journal_lock:
            if self._journal is None:
                with explain_os_errors(self.settings.output_dir):
                    self._journal = Journal(storage, self.run_id, self._lock_output_dir())
            return self._journal

    def _lock_output_dir(self) -> RunLockLike:
        """This run's lock on output_dir (``lock.py``, or the object store's lock object),
        taken at the first stream's SCHEMA."""
        if self._run_lock is None:
            storage = self.storage
            with explain_os_errors(self.settings.output_dir):
                self._run_lock = storage.lock(self.run_id, self.settings.lock_lease_seconds)
        return self._run_lock

    def register_sink(self, sink: ParquetPartsSink) -> None:
        """Every sink ever created (archived ones too: they can hold records)."""
        self._sinks.append(sink)
        if self.iceberg is not None:
            return  # Iceberg: several writers share a table (and output_dir): no lock, no journal
        self._lock_output_dir()  # every run, whatever the streams' keys
        if sink.key_properties:
            # Load the replay keys, and settle parts of earlier runs that may still land, before
            # the stream's first flush.
            self.journal.fence(sink.stream_name, sink.spec.arrow_schema)

    def on_batch_started(self) -> None:
        """A sink started a batch (its first record arrived). With Iceberg, the first one hands
        the catalog's opening (SQLAlchemy's import, the SQL catalog's tables: a fifth to a third
        of a second) to the part writer, while the batch is read, instead of at its flush. No
        STATE waits for it, and its failure is the first flush's to report: a run without
        records never opens the catalog, as before."""
        if self._catalog_asked or self.iceberg is None or not self.writes.overlap:
            return
        self._catalog_asked = True
        self.writes.submit(self.iceberg.open_catalog_ahead, counts=False)

    def on_sink_flushed(self, sink: ParquetPartsSink) -> None:
        """A flush was handed to the part writer (possibly in a drain thread): re-check
        pending STATEs soon; every ``COLLECT_EVERY_FLUSHES`` flushes, collect young cycles.

        Why the collection: an object store's requests (botocore) leave reference cycles that
        only the cyclic collector frees, and the CLI runs it rarely (``gc.freeze()`` and raised
        thresholds, ``invoke``): a flush leaves too few objects to trigger it, so a long run
        flushing at every STATE kept them all (S3 on moto: 0.35 KiB per flush; with Python's
        default thresholds flat). A young collection scans only what was allocated since the
        last one. Iceberg collects after its commits itself (``IcebergWriter._collect_cycles``).
        """
        self._state_check_needed = True
        if self.iceberg is None:
            self._flushes_uncollected += 1
            if self._flushes_uncollected >= COLLECT_EVERY_FLUSHES:
                self._flushes_uncollected = 0
                gc.collect(1)

    def _part_durable(self) -> None:
        """The part writer finished a batch (its thread): STATEs waiting for it may go out.

        Only flags it: the reading thread checks at its next record, and the idle watcher,
        woken here, checks at once when the tap is quiet (STATE is never written from the
        writer's thread, which must not wait for the reader's turn).
        """
        self._state_check_needed = True
        if isinstance(self.message_reader, LineNumberingReader):
            self.message_reader.wake()

    def _check_lease(self) -> None:
        """While waiting for the part writer: an object store's lost lease stops the run."""
        if self._run_lock is not None:
            self._run_lock.check()

    def _records_received(self) -> int:
        return sum(s.rows_flushed + s.current_size for s in self._sinks)

    def _flush_buffered(self) -> None:
        for sink in self._sinks:
            if sink.current_size:
                self.drain_one(sink)

    # -- message handling -----------------------------------------------------------------
    def handle_schema_message(self, message_dict: dict) -> None:
        """SDK's SCHEMA handling, then: archived sinks written now; the fast path chosen."""
        super().handle_schema_message(message_dict)
        # A changed schema archives the stream's sink; write its records now, in their own
        # part with the old schema, instead of holding them until the next full drain.
        archived = [s for s in self.sinks_to_clear if s.current_size]
        for archived_sink in archived:
            self.drain_one(archived_sink)
        if archived:
            self._emit_safe_states()
        stream_name = message_dict["stream"]
        self._line_head = self._line_head_sink = None  # the sinks may change below
        self._fast_sinks.pop(stream_name, None)
        line_key = stream_key(stream_name)
        if line_key is not None:
            self._line_sinks.pop(line_key, None)
        maps = self.mapper.stream_maps.get(stream_name) or []
        if len(maps) != 1 or type(maps[0]) is not SameRecordTransform:
            return
        stream_map = maps[0]
        sink = self.sinks_active.get(stream_map.stream_alias)
        if (
            stream_map.stream_alias == stream_name
            and not stream_map.flattening_enabled
            and isinstance(sink, ParquetPartsSink)
            and sink.record_validator is None  # bulk validation covers the whole schema
            and not sink.include_sdc_metadata_properties
        ):
            sink.fast_path = True
            self._fast_sinks[stream_name] = sink
            if line_key is not None:
                self._line_sinks[line_key] = sink

    def take_record_line(self, line: bytes) -> bool:
        """The reader's line path: a RECORD line of a fast-path stream, buffered undecoded.

        Why: decoding is most of a record's cost; ``record_lines.py`` converts a whole batch
        of lines in C++ at flush. False: not such a line, the reader decodes it as usual.
        """
        head = self._line_head
        if head is not None and line.startswith(head):
            sink = self._line_head_sink
        else:
            found = record_line_head(line)
            if found is None:
                return False
            sink = self._line_sinks.get(found[0])
            if sink is None:
                return False
            self._line_head, self._line_head_sink = found[1], sink
        assert sink is not None
        full = sink.buffer_line(line)
        self._records_since_check += 1
        if (
            full
            or self._state_check_needed
            or not self._records_since_check & 255  # the SDK's 5-minute age check
            or (self._pending and _clock() - self._pending[0].received_at >= self._lag)
        ):
            self._after_fast_record(sink, full, counted=True)
        return True

    def handle_record_message(self, message_dict: dict) -> None:
        """A RECORD: the fast path when its stream has one, else the SDK's pipeline."""
        # Fast path, why: the SDK's per-record pipeline (copy, map, metadata strip, validate,
        # parse timestamps, key check, counters) costs ~10 us per record. For a stream with no
        # stream map, no flattening, no record metadata and no per-record validator, all of
        # that is either identity or done column-wise at flush (sinks.py, columns.py).
        sink = self._fast_sinks.get(message_dict.get("stream"))  # type: ignore[arg-type]
        record = message_dict.get("record")
        if sink is not None and type(record) is dict:
            self._after_fast_record(sink, sink.buffer_fast(record))
            return
        try:
            super().handle_record_message(message_dict)
        except RecordsWithoutSchemaException as exc:
            line = getattr(self.message_reader, "line_number", None)
            msg = f"input line {line}: {exc}" if line else str(exc)
            raise RecordsWithoutSchemaException(msg) from None

    def _after_fast_record(
        self, sink: ParquetPartsSink, full: bool, *, counted: bool = False
    ) -> None:
        """After a fast-path record: drain a full sink; the STATE and record-age checks."""
        if full:
            self.logger.info(
                "Target sink for '%s' is full. Current size is '%s'. Draining...",
                sink.stream_name,
                sink.current_size,
            )
            self.drain_one(sink)
        if not counted:
            self._records_since_check += 1
        if (
            self._state_check_needed
            or not self._records_since_check & 255  # the SDK's 5-minute age check
            or (self._pending and _clock() - self._pending[0].received_at >= self._lag)
        ):
            self.handle_max_record_age()

    def handle_state_message(self, message_dict: dict) -> None:
        """A STATE: tracked until every record received before it is durable, then emitted."""
        self.assert_line_requires(message_dict, requires={"value"})
        state = message_dict["value"]
        if self.latest_state == state:
            return
        now = _clock()
        if self._state_max_lag <= 0 or (
            self._pending and now - self._pending[0].received_at >= self._state_max_lag
        ):
            # Everything buffered arrived before this STATE: flush it, then emit right away.
            self._flush_buffered()
        for sink in self._sinks:
            if sink.current_size:
                sink.mark_state(self.states_received)  # arrival labels for the journal
        self.states_received += 1
        self.latest_state = state
        self._records_at_last_state = self._records_received()
        blockers = {s: s.flush_count for s in self._sinks if s.current_size}
        self._pending.append(_PendingState(self.states_received, state, now, blockers))
        self._emit_safe_states()

    def _check_state_lag(self) -> None:
        """Idle-time check (reader's watcher thread, holding the reader's turn lock)."""
        if self._state_check_needed or (
            self._pending and _clock() - self._pending[0].received_at >= self._lag
        ):
            self.handle_max_record_age()

    def handle_max_record_age(self) -> None:
        """The SDK's per-record age check, after the safe-STATE and STATE-lag checks."""
        if self._state_check_needed:
            self._emit_safe_states()
        if self._pending and _clock() - self._pending[0].received_at >= self._lag:
            self._flush_buffered()
            self._emit_safe_states()
        super().handle_max_record_age()

    def _emit_safe_states(self) -> None:
        # A failed write (a batch converted on the part writer refused, say) ends the run here,
        # at the next STATE or check after it, not at the next hand-over or the end of input.
        self.writes.raise_if_failed()
        if self._pending:
            # Piggyback: once one sink the newest STATE waits for has flushed (it was full),
            # flush the others it waits for too, so a small or slow stream never holds the
            # STATE back until the lag limit or the end of input.
            newest = self._pending[-1]
            if any(s.flush_count > c for s, c in newest.blockers.items()):
                for sink, count in newest.blockers.items():
                    if sink.flush_count == count and sink.current_size:
                        self.drain_one(sink)
        self._state_check_needed = False
        safe = -1
        for position, pending in enumerate(self._pending):
            if not pending.is_safe():
                break  # a later STATE cannot be safe while an earlier one is not
            safe = position
        if safe >= 0:
            # Every record before it is handed to the part writer: it goes out once the writer
            # has made durable every batch handed over so far (in order, so its own too).
            chosen = self._pending[safe]
            del self._pending[: safe + 1]
            needed = self.writes.submitted
            if self._awaiting and self._awaiting[-1][0] == needed:
                self._awaiting[-1] = (needed, chosen)  # the newer STATE says the same, and more
            else:
                self._awaiting.append((needed, chosen))
        self._emit_durable_states()

    def _emit_durable_states(self) -> None:
        """Emit the newest STATE whose batches the part writer has all made durable."""
        done = self.writes.done
        ready = -1
        for position, (needed, _) in enumerate(self._awaiting):
            if needed > done:
                break
            ready = position
        if ready >= 0:
            chosen = self._awaiting[ready][1]
            del self._awaiting[: ready + 1]
            self._emit(chosen.value, chosen.index)

    def write_state_message(self, state: dict) -> None:
        """Called by ``drain_all`` after every sink was drained: the latest STATE is safe once
        the part writer has finished (bounded: see ``writes.py``)."""
        self.writes.wait()
        self._pending.clear()
        self._awaiting.clear()
        self._emit(state, self.states_received)

    def _emit(self, state: t.Any, index: int) -> None:
        self.writes.raise_if_failed()  # a part write failed: no STATE after it, ever
        line = _json_encoder.encode(state)  # Decimal-aware (SDK issue 3787)

        def write_state() -> None:
            if line == self._last_state_line:
                return
            if self._run_lock is not None:
                self._run_lock.check()  # an object-store lease lost: no STATE, stop
            self.logger.debug("Emitting completed target state %s", line.decode())
            try:
                write_line(line + b"\n", flush=True)  # whole, even cut short by a signal
            except OSError as exc:  # not output_dir's fault: say where it failed
                msg = f"cannot write STATE to standard output: {describe_os_error(exc)}"
                raise DescribedOSError(msg) from exc
            self._last_state_line = line

        if self._journal is not None:
            self._journal.emit_covered(index, write_state)
        else:
            write_state()
        if self.iceberg is not None:
            self.iceberg.states_emitted = index

    @classmethod
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:
        """CLI entry: tune the garbage collector for a stream of short-lived dicts, then run.

        Every decoded record is a container object, so CPython's default collector (a young
        collection every 700 allocations, full ones as the heap grows) spends about a third
        of the run scanning buffered records that are never cyclic garbage. Fewer, larger
        young collections and freezing the startup objects remove most of that; memory stays
        bounded by the batch limits. Only the CLI process does this, not library users.
        """
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)
        super().invoke(*args, **kwargs)

    @classmethod
    def fatal_error_secrets(cls) -> list[str]:
        """The latest target's secret setting values (hidden in the fatal line and traceback)."""
        return TargetParquetParts.last_hidden_texts

    def on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: only record the request (see the module docstring).

        Replaces the SDK's handler (``sdk_hooks.TargetHooks._handle_termination``), which
        drains every sink and writes STATE inside the handler, while the flush it interrupted
        never finishes (and with the idle watcher flushing, two flushes run at once), then
        exits 0.
        """
        if self._stop_signal == signum:
            # The same signal again: stop now. Nothing is half-visible (parts are renamed only
            # when complete) and every STATE already written is covered.
            name = signal.Signals(signum).name
            os.write(2, f"target_stopped_by_signal signal={name} at_once=true\n".encode())
            os._exit(128 + signum)
        if self._stop_signal is not None:
            return  # already stopping gracefully (see the module docstring)
        self._stop_signal = signum
        reader = getattr(self, "message_reader", None)  # unset while __init__ runs
        if isinstance(reader, LineNumberingReader):
            reader.request_stop(signum, frame)  # may raise, ending the read loop

    def process_endofpipe(self) -> None:
        """Drain and emit the final STATE (SDK), then settle and unlock the journal.

        After a stop request (SIGTERM, SIGINT) this is where the run ends: the buffered records
        are flushed and their STATE written as at a normal end, then the process exits with
        128 + the signal number so a scheduler sees the cancel.
        """
        rows_before = sum(s.rows_flushed for s in self._sinks)
        try:
            self._settle()
        except BaseException:
            self.release_after_failure()
            raise
        if self._stop_signal is not None:
            self._exit_after_signal(self._stop_signal, rows_before)

    def release_after_failure(self) -> None:
        """A failed run: unlock output_dir now, the journal kept as it is.

        The process may live on (an in-process caller, the SDK's test runners; the SDK's signal
        handler keeps this instance alive, so no finalizer would ever unlock). Nothing is
        settled: the next run resumes from the last emitted STATE and needs every entry.
        """
        self.writes.close()  # the part in flight lands (journaled) before the journal closes
        journal, self._journal = self._journal, None
        lock, self._run_lock = self._run_lock, None
        try:
            if journal is not None:
                journal.close()
        finally:
            if lock is not None:
                lock.release()

    def _settle(self) -> None:
        """Drain and emit the final STATE, then settle the bookkeeping and unlock."""
        with explain_os_errors(self.settings.output_dir):
            super().process_endofpipe()
            self.writes.wait()  # drain_all emits no STATE when none came: wait here too
            self.writes.close()
            # What may come again is kept unless this run completed (journal.py, iceberg_ledger.py)
            completed = self._stop_signal is None
            all_covered = (
                self.states_received > 0 and self._records_received() == self._records_at_last_state
            )
            if self.iceberg is not None:
                self.iceberg.finish(completed=completed, all_covered=all_covered)
            if self._journal is not None:
                self._journal.finish(completed=completed, all_covered=all_covered)
                self._journal = None
            if self._run_lock is not None:
                self._run_lock.release()
                self._run_lock = None

    def _exit_after_signal(self, signum: int, rows_before: int) -> t.NoReturn:
        rows_written = sum(s.rows_flushed for s in self._sinks)
        last_state = self._last_state_line.decode() if self._last_state_line else None
        if last_state is not None and len(last_state) > 500:
            last_state = last_state[:497] + "..."
        code = 128 + signum
        log_event(
            self.logger,
            logging.WARNING,
            "target_stopped_by_signal",
            signal=signal.Signals(signum).name,
            exit_code=code,
            rows_flushed_at_stop=rows_written - rows_before,
            rows_written=rows_written,
            rows_after_last_state=self._records_received() - self._records_at_last_state,
            last_state_emitted=last_state,
        )
        raise SystemExit(code)


if __name__ == "__main__":
    TargetParquetParts.cli()
