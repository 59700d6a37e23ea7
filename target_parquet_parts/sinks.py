"""The batch sink: buffer records, then write each batch as new, immutable Parquet part(s)."""

from __future__ import annotations

import itertools
import logging
import operator
import time
import typing as t

import pyarrow as pa
import pyarrow.compute as pc
from singer_sdk.contrib.msgspec import encoder as _json_encoder
from singer_sdk.exceptions import InvalidRecord, MissingKeyPropertiesError
from singer_sdk.singerlib.exceptions import InvalidInputLine

from plugin_io.log_events import log_event
from target_parquet_parts.arrow_schema import Kind, needs_record_validator, stream_spec
from target_parquet_parts.columns import ColumnError, build_table
from target_parquet_parts.errors import UnreadablePartError, explain_os_errors
from target_parquet_parts.journal import ARRIVAL_COLUMN, segments_of
from target_parquet_parts.naming import sanitize_stream_name
from target_parquet_parts.parts import WrittenPart
from target_parquet_parts.reader import decode_line
from target_parquet_parts.record_lines import LineConverter
from target_parquet_parts.sdk_hooks import SinkHooks
from target_parquet_parts.settings import DEFAULT_MAX_BATCH_BYTES

if t.TYPE_CHECKING:
    from singer_sdk.sinks.core import BaseJSONSchemaValidator

    from target_parquet_parts.iceberg import IcebergWriter
    from target_parquet_parts.journal import Journal
    from target_parquet_parts.storage import PartWriterLike
    from target_parquet_parts.target import TargetParquetParts

__all__ = ["ParquetPartsSink"]

HIVE_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def _undecoded(context: dict) -> int:
    """How many of the batch's records are undecoded lines (a BATCH file's are all dicts)."""
    records = context.get("records") or ()
    return len(records) - context.get("decoded", len(records))


class _LineInfo(t.Protocol):
    """What the sink reads from the reader about the current input line."""

    line_number: int | None
    line_bytes: int | None


class _NoLines:
    """Stand-in when a caller swapped in a reader that does not number lines."""

    line_number: int | None = None
    line_bytes: int | None = None


class ParquetPartsSink(SinkHooks):
    """One stream (one schema version): each drain writes new part(s), never touches old ones.

    Thread-safe: the SDK drains sinks in parallel threads; each sink only writes its own new,
    uniquely named files, and the shared journal has its own lock.
    """

    MAX_SIZE_DEFAULT = 10000

    def __init__(
        self,
        target: TargetParquetParts,
        stream_name: str,
        schema: dict,
        key_properties: t.Sequence[str] | None,
    ) -> None:
        self._parts_target = target
        super().__init__(target, stream_name, schema, key_properties)
        self.spec = stream_spec(self.schema)
        self._field_names = frozenset(spec.name for spec in self.spec.fields)
        self._outside_fields_told = False  # one WARNING per stream (schema version)
        self.directory_name = sanitize_stream_name(stream_name)
        reader = target.message_reader
        numbered = hasattr(reader, "line_number") and hasattr(reader, "line_bytes")
        self._reader: _LineInfo = t.cast("_LineInfo", reader) if numbered else _NoLines()
        line = self._reader.line_number
        target.stream_directories.claim(
            stream_name, self.directory_name, f"input line {line}: " if line else ""
        )
        self.flush_count = 0
        self.rows_flushed = 0
        settings = target.settings
        self._max_bytes = settings.max_batch_bytes or DEFAULT_MAX_BATCH_BYTES  # 0: the default
        # Where parts go (a local directory or an object store: storage.py).
        self._writer: PartWriterLike | None = None
        if target.iceberg is None:  # Iceberg writes through its own FileIO (iceberg.py)
            self._writer = target.storage.part_writer(
                settings.compression or "zstd", settings.compression_level
            )
        self._partition_field = self._resolve_partition_field()
        self._max_rows = self.max_size
        # max_batch_bytes counts JSON bytes: on the fast path each record's input line as read
        # (the record plus its envelope; free, no re-encoding), else the record encoded.
        self._batch_bytes = 0
        self.fast_path = False  # set by the target when records bypass the SDK pipeline
        self._fast_uncounted = 0  # fast-path records not yet in the record_count metric
        # RECORD lines buffered undecoded convert in one pass at flush (record_lines.py).
        self._line_converter = LineConverter.for_stream(self.spec, self.key_properties or ())
        target.register_sink(self)

    def _resolve_partition_field(self) -> str | None:
        name = self._parts_target.settings.partition_date_field
        if not name:
            return None
        field = self.spec.field(name)
        if field is None:
            self.logger.info(
                "stream '%s' has no field '%s': its parts are not date-partitioned",
                self.stream_name,
                name,
            )
            return None
        if field.kind not in (Kind.TIMESTAMP, Kind.DATE):
            msg = (
                f"partition_date_field '{name}' of stream '{self.stream_name}' must be a "
                f"string with format date-time or date in the schema, not {field.kind}"
            )
            raise ValueError(msg)
        return name

    # -- validation: bulk at flush time, per record only where the bulk check cannot -------
    def get_validator(self) -> BaseJSONSchemaValidator | None:
        """Skip per-record jsonschema when ``columns.build_table`` enforces the whole schema."""
        if self.validate_schema and needs_record_validator(self.schema):
            return super().get_validator()
        return None

    def parse_timestamps_in_record(self, record: dict, schema: dict, treatment: t.Any) -> None:
        """No per-record parsing: date-time strings become timestamps column-wise at flush.

        Replaces the SDK's private per-record hook (``sdk_hooks.SinkHooks``): the columnar
        cast in ``columns.py`` does the same parse and refuses the same bad strings.
        """

    def after_process_record(self, context: dict) -> None:
        """Skip the SDK's per-record DEBUG line (one per record is too costly at this rate)."""

    # -- buffering ------------------------------------------------------------------------
    def start_batch(self, context: dict) -> None:
        """A new batch: an empty record list, its input line numbers, no bytes yet."""
        context["records"] = []  # decoded records (dicts) and undecoded lines (bytes)
        context["lines"] = []
        context["state_marks"] = []
        context["decoded"] = 0  # how many records are dicts; the rest are lines (record_lines)
        self._batch_bytes = 0
        self._parts_target.on_batch_started()

    def process_record(self, record: dict, context: dict) -> None:
        """SDK path (stream maps, flattening, metadata...): buffer the record."""
        size = len(_json_encoder.encode(record))  # maps and metadata change it: measure it
        if self._batch_bytes and self._batch_bytes + size > self._max_bytes:
            # The SDK has already counted this record into the batch; it starts the next one.
            self.batch_records_read -= 1
            self._write_before(size)
            self.batch_records_read += 1
            context = self.new_batch_context(record)
        self._buffer(record, context, size)

    def buffer_fast(self, record: dict) -> bool:
        """Target's fast path: buffer one record as it came from the reader; True when full.

        Does what the SDK's per-record pipeline would do for a stream without maps,
        flattening, record metadata or per-record validator: count it and buffer it. Types,
        nullability, required and key properties are checked in bulk at flush.
        """
        size = self._size_of(record)
        if self._batch_bytes and self._batch_bytes + size > self._max_bytes:
            self._write_before(size)
        context = self.pending_batch or self.new_batch_context(record)
        self.tally_record_read()  # the SDK's two counters (batch and total), one each
        self._fast_uncounted += 1
        return self._buffer(record, context, size)

    def buffer_line(self, line: bytes) -> bool:
        """Target's line path: buffer one RECORD line undecoded (``record_lines.py``); True
        when full. Counted like ``buffer_fast``; decoded, checked and converted at flush."""
        size = len(line)
        if self._batch_bytes and self._batch_bytes + size > self._max_bytes:
            self._write_before(size)
        context = self.pending_batch or self.new_batch_context({})
        self.tally_record_read()
        self._fast_uncounted += 1
        records = context["records"]  # _buffer, inlined: this runs once per record
        records.append(line)
        context["lines"].append(self._reader.line_number)
        self._batch_bytes += size
        return self._batch_bytes >= self._max_bytes or len(records) >= self._max_rows

    def _size_of(self, record: dict) -> int:
        """The record's input line (it holds the record as buffered), or the record encoded."""
        size = self._reader.line_bytes
        return len(_json_encoder.encode(record)) if size is None else size

    def _write_before(self, size: int) -> None:
        """The next record would take the batch past max_batch_bytes: write the batch first."""
        self.logger.info(
            "Target sink for '%s' is full: %d bytes buffered, the next record's %d would pass "
            "max_batch_bytes (%d). Draining...",
            self.stream_name,
            self._batch_bytes,
            size,
            self._max_bytes,
        )
        self._parts_target.drain_one(self)

    def _buffer(self, record: dict, context: dict, size: int) -> bool:
        records = context["records"]
        records.append(record)
        context["decoded"] += 1
        context["lines"].append(self._reader.line_number)
        self._batch_bytes += size
        return self._batch_bytes >= self._max_bytes or len(records) >= self._max_rows

    def mark_state(self, states_received: int) -> None:
        """A STATE arrives: the records buffered so far arrived after ``states_received`` STATEs.

        Gives each journaled row its arrival label (see ``journal.py``): a STATE emitted later
        covers exactly the rows that arrived before it, not the whole part they went to.
        """
        batch = self.pending_batch
        if not batch or "state_marks" not in batch:
            return
        count = len(batch["records"])
        marks = batch["state_marks"]
        if count and (not marks or marks[-1][0] < count):
            marks.append((count, states_received))

    @staticmethod
    def _arrival_labels(context: dict, rows: int, states_received: int) -> pa.Array:
        """Each row's arrival label, from the batch's STATE marks (later rows: now)."""
        runs: list[pa.Array] = []
        done = 0
        for count, label in [*(context.get("state_marks") or ()), (rows, states_received)]:
            if count > done:
                runs.append(pa.repeat(pa.scalar(label, pa.int64()), count - done))
                done = count
        return pa.concat_arrays(runs) if runs else pa.array([], pa.int64())

    @property
    def is_full(self) -> bool:
        """Full by rows (``batch_size_rows``) or by bytes (``max_batch_bytes``).

        A batch never passes ``max_batch_bytes``: a record that would take it past the limit
        has the batch written first (only a record larger than the limit by itself makes a
        batch, of that one record, larger).
        """
        return self._batch_bytes >= self._max_bytes or self.current_size >= self._max_rows

    # -- writing --------------------------------------------------------------------------
    def _tell_fields_outside_schema(self, records: list[dict]) -> None:
        """Record fields the stream's schema lacks are not written: say so once, naming them.

        A sample of the batch (64 records spread over it) is looked at, so the check costs
        nothing measurable on a batch of 100,000; a field that only a few records carry may be
        named in a later batch, or not at all. Top-level fields only.
        """
        names = self._field_names
        step = max(1, len(records) // 64)
        outside: set[str] = set()
        for record in records[::step]:
            if not names.issuperset(record):
                outside.update(key for key in record if key not in names)
        if not outside:
            return
        self._outside_fields_told = True
        shown = sorted(outside)
        log_event(
            self.logger,
            logging.WARNING,
            "record_fields_not_in_schema",
            stream=self.stream_name,
            fields=shown[:20],
            more=max(len(shown) - 20, 0),
            reason="the stream's SCHEMA does not declare them: they are not written",
        )

    def process_batch(self, context: dict) -> None:
        """Write the batch as new part(s); an OS error names output_dir, path and cause."""
        with explain_os_errors(self._parts_target.settings.output_dir):
            self._write_batch(context)

    def _write_batch(self, context: dict) -> None:
        """Build the batch's table here, hand its write to the part writer (``writes.py``)."""
        records = context.get("records") or []
        if not records:
            return
        target = self._parts_target
        rows_in = len(records)
        started = time.perf_counter()
        log_event(self.logger, logging.INFO, "flush_start", stream=self.stream_name, rows=rows_in)
        if self._converts_on_writer(context):
            self._hand_over_lines(context, started)
            return
        table = self._table_of(context)
        # The Arrow table holds everything now: let the records go before the write.
        context["records"] = []
        context["lines"] = []
        del records
        if target.iceberg is not None:  # table_format: iceberg: one commit per flush
            iceberg = target.iceberg
            state_index = target.states_received
            build_ms = (time.perf_counter() - started) * 1000

            def commit() -> None:
                with explain_os_errors(target.settings.output_dir):
                    self._commit(iceberg, table, state_index, build_ms)

            # On the part writer too: data files written and committed behind the reader.
            target.writes.submit(commit)
            self.count_flush(rows_in)
            return
        journal = target.journal if self.key_properties else None
        dropped = 0
        if journal is not None:
            # Carried through the dedupe and the date split, removed before each part is written.
            arrival = self._arrival_labels(context, table.num_rows, target.states_received)
            table = table.append_column(ARRIVAL_COLUMN, arrival)
            table, dropped = journal.drop_replayed(
                self.stream_name, table, list(self.key_properties)
            )
            if dropped:
                self.tally_duplicate_merged(dropped)
                log_event(
                    self.logger,
                    logging.INFO,
                    "journal_duplicates_dropped",
                    stream=self.stream_name,
                    rows=dropped,
                )
        built = time.perf_counter()
        state_index = target.states_received
        build_ms = (built - started) * 1000

        def write_parts() -> None:
            with explain_os_errors(target.settings.output_dir):
                self._write_parts(table, journal, state_index, build_ms)

        # On the part writer (``writes.py``): encoded, made durable and logged while the next
        # records are read; STATE waits for it (``target.py``).
        target.writes.submit(write_parts)
        self.count_flush(rows_in)

    def _converts_on_writer(self, context: dict) -> bool:
        """Whether the batch's lines convert on the part writer, behind the reader.

        Only a batch of undecoded lines, and no journaled part of the stream to drop replayed
        rows against (that check needs the table on the reading thread, in arrival order; an
        Iceberg table drops its replayed rows inside the commit, on the writer); otherwise the
        conversion runs here first, as ``_table_of`` does.

        And only while the writer is idle: when it is still writing the previous batch, the
        reader would wait for it anyway (one batch in flight), so it converts this batch itself
        meanwhile. Small batches (many parts, each with its fsyncs or uploads) keep the writer
        busy and the conversion moves to the reader; large ones leave it behind the reader.
        """
        target = self._parts_target
        if (
            self._line_converter is None
            or not target.writes.overlap
            or not target.writes.idle
            or _undecoded(context) != len(context["records"])
        ):
            return False
        if target.iceberg is not None or not self.key_properties:
            return True
        return not target.journal.replays(self.stream_name)

    def _hand_over_lines(self, context: dict, started: float) -> None:
        """Hand the batch's lines to the part writer: converted, checked and written there.

        A line the exact path refuses fails the write with the message it gives here (naming
        the line and field); ``writes.py`` raises it on the reading thread before any STATE.
        """
        target = self._parts_target
        records: list = context["records"]
        lines: list = context["lines"]
        rows = len(records)
        joined = [b"".join(records)]  # the job takes it out: freed once converted
        iceberg = target.iceberg
        journal = target.journal if self.key_properties and iceberg is None else None
        state_index = target.states_received
        arrival = self._arrival_labels(context, rows, state_index) if journal else None
        context["records"] = []
        context["lines"] = []
        del records
        handed = time.perf_counter()

        def write_parts() -> None:
            converting = time.perf_counter()
            table = self._table_of_lines(joined.pop(), rows, lines)
            if arrival is not None:
                table = table.append_column(ARRIVAL_COLUMN, arrival)
            build_ms = (handed - started + time.perf_counter() - converting) * 1000
            with explain_os_errors(target.settings.output_dir):
                if iceberg is not None:
                    self._commit(iceberg, table, state_index, build_ms)
                else:
                    self._write_parts(table, journal, state_index, build_ms)

        target.writes.submit(write_parts)
        self.count_flush(rows)

    def _table_of(self, context: dict) -> pa.Table:
        """The batch's Arrow table, built on the reading thread."""
        records: list = context["records"]
        lines: list | None = context.get("lines")
        undecoded = _undecoded(context)
        if undecoded and undecoded == len(records) and self._line_converter is not None:
            joined = [b"".join(records)]
            records.clear()  # the joined bytes hold the lines now: one copy, not two
            return self._table_of_lines(joined.pop(), undecoded, lines)  # it frees them
        if undecoded:
            records = [self._decoded(r, lines, row) for row, r in enumerate(records)]
        return self._table_of_records(records, lines)

    def _table_of_lines(self, data: bytes, rows: int, lines: list | None) -> pa.Table:
        """``rows`` undecoded RECORD lines (joined) in one C++ pass when they convert exactly
        (``record_lines.py``); else decoded and built by the exact path, which names the line
        and field at fault."""
        assert self._line_converter is not None
        table = self._line_converter.convert(data, rows)
        if table is not None:
            return table
        self.logger.debug(
            "stream '%s': a batch of %d lines takes the exact path (%s)",
            self.stream_name,
            rows,
            self._line_converter.last_refusal,
        )
        split = data.split(b"\n")[:rows]
        del data
        records = [self._decoded(line, lines, row) for row, line in enumerate(split)]
        return self._table_of_records(records, lines)

    def _table_of_records(self, records: list[dict], lines: list | None) -> pa.Table:
        """Decoded records checked column-wise and converted (``columns.py``)."""
        if not self._outside_fields_told:
            self._tell_fields_outside_schema(records)
        try:
            table = build_table(records, self.spec)
        except ColumnError as exc:
            raise self._invalid_record(exc, records, lines) from None
        self._check_key_properties(records, table, lines)
        return table

    def _decoded(self, record: dict | bytes, lines: list | None, row: int) -> dict:
        """A buffered record as a dict: an undecoded line decoded, naming it if it is bad."""
        if type(record) is dict:
            return record
        number = lines[row] if lines and row < len(lines) else None
        message = decode_line(t.cast("bytes", record), number)
        if (
            message.get("type") != "RECORD"
            or message.get("stream") != self.stream_name
            or type(message.get("record")) is not dict
        ):
            msg = (
                f"input line {number}: a RECORD line that names its 'type', 'stream' or "
                "'record' more than once: which one counts is ambiguous"
            )
            raise InvalidInputLine(msg)
        return message["record"]

    def _write_parts(
        self, table: pa.Table, journal: Journal | None, state_index: int, build_ms: float
    ) -> None:
        """Write the batch's table as new part(s); return once they are durable and visible.

        Runs on the part writer's thread (or the reading thread without ``overlap_writes``):
        it touches only this batch's table, the sink's writer and the journal (which locks).
        """
        started = time.perf_counter()
        written: list[WrittenPart] = []
        for directory, split_table in self._split(table):
            before = None
            part_table = split_table
            if journal is not None:
                segments = segments_of(split_table.column(ARRIVAL_COLUMN))
                part_table = split_table.drop_columns([ARRIVAL_COLUMN])

                def before(path: str, journal=journal, segments=segments) -> None:
                    journal.record(
                        self.stream_name, path, list(self.key_properties), state_index, segments
                    )

            try:
                assert self._writer is not None  # plain parts (Iceberg returned above)
                part = self._writer.write(part_table, directory, before_publish=before)
            except UnreadablePartError as exc:
                msg = f"stream '{self.stream_name}': {exc}"
                raise UnreadablePartError(msg) from exc
            written.append(part)
            log_event(
                self.logger,
                logging.INFO,
                "parquet_part_write_success",
                stream=self.stream_name,
                path=str(part.path),
                rows=part.rows,
                bytes=part.bytes,
                mode="part",
            )
        write_ms = (time.perf_counter() - started) * 1000
        self._tell_flushed(
            table.num_rows,
            sum(p.bytes for p in written),
            [str(p.path) for p in written],
            build_ms=build_ms,
            write_ms=write_ms,
            total_ms=build_ms + write_ms,
        )

    def _tell_flushed(
        self,
        rows: int,
        size: int,
        paths: list[str],
        *,
        build_ms: float,
        write_ms: float,
        total_ms: float,
        **more: t.Any,
    ) -> None:
        """The ``flush_complete`` event of a batch made durable (parts) or committed (Iceberg:
        ``paths`` are its new data files, ``more`` its table and snapshot)."""
        log_event(
            self.logger,
            logging.INFO,
            "flush_complete",
            stream=self.stream_name,
            rows=rows,
            bytes=size,
            path=paths[0] if len(paths) == 1 else (paths or None),
            dataframe_build_ms=round(build_ms, 3),
            parquet_write_ms=round(write_ms, 3),
            flush_total_ms=round(total_ms, 3),
            **more,
        )

    def _commit(
        self, iceberg: IcebergWriter, batch: pa.Table, state_index: int, build_ms: float
    ) -> None:
        """The batch as one Iceberg commit, on the part writer (``table_format: iceberg``).

        Does for a commit what ``_write_parts`` does for parts: the same ``flush_complete``
        event (``path`` lists the new data files). ``state_index``: the STATEs received when
        the batch was handed over (the reading thread counted the flush then).
        """
        started = time.perf_counter()
        result = iceberg.write_batch(
            self.stream_name,
            batch,
            keys=list(self.key_properties or ()),
            partition_field=self._partition_field,
            state_index=state_index,
        )
        if result["dropped"]:
            self.tally_duplicate_merged(result["dropped"])
            log_event(
                self.logger,
                logging.INFO,
                "iceberg_duplicates_dropped",
                stream=self.stream_name,
                table=result["table"],
                rows=result["dropped"],
            )
        self._tell_flushed(
            result["rows"],
            result["bytes"],
            result["files"],
            build_ms=build_ms,
            write_ms=result["write_ms"],
            total_ms=build_ms + (time.perf_counter() - started) * 1000,
            table=result["table"],
            snapshot_id=result["snapshot_id"],
            commit_ms=result["commit_ms"],
        )

    def count_flush(self, rows_in: int) -> None:
        """A flush is handed to the part writer (or committed, Iceberg): count it, tell.

        ``flush_count`` counts flushes started, in the order the part writer makes them
        durable; a STATE also waits for the writer to finish them (``target.py``).
        """
        if self._fast_uncounted:
            # Only records that bypassed the SDK's per-record counter: BATCH-file records
            # reach process_batch already counted (Sink.process_batch_files).
            self.record_counter_metric.increment(self._fast_uncounted)
            self._fast_uncounted = 0
        self.flush_count += 1
        self.rows_flushed += rows_in
        self._parts_target.on_sink_flushed(self)

    def _check_key_properties(
        self, records: list[dict], table: pa.Table, lines: list | None
    ) -> None:
        """Every record must carry the stream's key properties (the SDK checks per record)."""
        for key in self.key_properties:
            if key in table.column_names and table.column(key).null_count == 0:
                continue  # a missing key would read as null: all present
            present = sum(map(operator.contains, records, itertools.repeat(key)))
            if present != len(records):
                row = next(i for i, r in enumerate(records) if key not in r)
                line = lines[row] if lines and row < len(lines) else None
                where = f"input line {line}" if line else f"record {row + 1} of the batch"
                msg = (
                    f"stream '{self.stream_name}', {where}: record is missing key property "
                    f"'{key}' (key properties: {list(self.key_properties)}; record keys: "
                    f"{list(records[row])})"
                )
                raise MissingKeyPropertiesError(msg)

    def _split(self, table: pa.Table) -> t.Iterator[tuple[tuple[str, ...], pa.Table]]:
        """(directory under output_dir, rows) per part (the storage resolves the directory)."""
        if table.num_rows == 0:
            return
        if self._partition_field is None:
            yield (self.directory_name,), table
            return
        dates = pc.cast(table.column(self._partition_field), pa.date32())
        for day in sorted(pc.unique(dates).to_pylist(), key=lambda d: (d is None, d)):
            if day is None:
                name, rows = f"date={HIVE_NULL_PARTITION}", table.filter(pc.is_null(dates))
            else:
                name, rows = f"date={day.isoformat()}", table.filter(pc.equal(dates, day))
            yield (self.directory_name, name), rows

    def _invalid_record(
        self, exc: ColumnError, records: list[dict], lines: list[int | None] | None
    ) -> InvalidRecord:
        row = exc.row if exc.row is not None else 0
        record = records[row]
        line = lines[row] if lines and row < len(lines) else None
        excerpt = _json_encoder.encode(record).decode(errors="replace")
        if len(excerpt) > 300:
            excerpt = excerpt[:297] + "..."
        where = f"input line {line}" if line else f"record {row + 1} of the batch"
        message = (
            f"stream '{self.stream_name}', {where}, field '{exc.path}': {exc.reason}. "
            f"Record: {excerpt}"
        )
        return InvalidRecord(message, record)
