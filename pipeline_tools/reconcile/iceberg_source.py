"""The reconciliation's dataset side for an Iceberg table (`--table-format iceberg`).

`target-parquet-parts` with `table_format: iceberg` writes one Iceberg table per stream,
`{iceberg_namespace}.{stream}`, through a pyiceberg catalog: with no `iceberg_catalog`, the
embedded SQLite catalog `{output_dir}/catalog.db` (warehouse `output_dir`). This module finds
the table from the same settings (`--dataset` is the target's `output_dir`, `--iceberg-namespace`
and `--iceberg-catalog` its two Iceberg settings) and produces exactly what `dataset.py` produces
for plain parts, `DatasetCounts` and `EventClocks`, through the same counting code
(`_count_windows`, `_duplicate_groups`, `_add_part`), so both formats are judged alike.

One snapshot is pinned when the table is opened: jobs still committing to the table do not move
the ground under a check. Each data file of that snapshot plays the part of a part file: rows
are read one file at a time (pyiceberg's `ArrowScan` on one `FileScanTask`, projected to the
columns needed and filtered by log and time range; files whose column statistics rule the range
out are not opened), so a key written twice names the data files that hold it. Projection goes
by Iceberg field ids, so data files written before a schema evolution read their missing
columns as nulls (an `event_time` added later counts as "no event time" there).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline_tools.reconcile.dataset import (
    COLUMNS,
    INT_KEY,
    MAX_SAMPLES,
    ClockCounts,
    DatasetCounts,
    EventClocks,
    StrayRow,
    _add_part,
    _ClockLimits,
    _count_windows,
    _duplicate_groups,
    _no_event_time_reason,
    _one_chunk,
    event_time_kind,
)
from plugin_io.distribution import install_hint
from tap_rapid7.logsearch.records import (
    EVENT_TIME,
    LOG_ID,
    SEQUENCE_NUMBER_STR,
    TIMESTAMP,
)

__all__ = [
    "CATALOG_FILE",
    "IcebergSource",
    "IcebergSourceError",
    "catalog_setting",
    "detect_table_format",
]

CATALOG_FILE = "catalog.db"  # the target's embedded SQLite catalog, in output_dir
_LOG_ID = pa.dictionary(pa.int32(), pa.string())
_MICROS = pa.timestamp("us", tz="UTC")


class IcebergSourceError(ValueError):
    """The table cannot be found or read as a reconcilable events table (exit status 2)."""


def detect_table_format(dataset: str, stream_dir_name: str, requested: str) -> str:
    """`parquet` or `iceberg`: `requested` unless `auto`, else what `dataset` holds.

    `auto` means Iceberg when the dataset has the target's `catalog.db` and no plain-parts
    directory for the stream; both present is ambiguous and must be named.
    """
    if requested != "auto":
        return requested
    root = Path(dataset)
    has_catalog = (root / CATALOG_FILE).is_file()
    has_parts = (root / stream_dir_name).is_dir()
    if has_catalog and has_parts:
        raise IcebergSourceError(
            f"--dataset {dataset} holds both {CATALOG_FILE} (Iceberg) and {stream_dir_name}/ "
            "(plain parts): pass --table-format iceberg or --table-format parquet"
        )
    return "iceberg" if has_catalog else "parquet"


def catalog_setting(text: str | None) -> dict[str, Any] | None:
    """`--iceberg-catalog`: pyiceberg catalog properties as JSON text or `@file.json`."""
    if not text:
        return None
    try:
        raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
        value = json.loads(raw)
    except (OSError, json.JSONDecodeError) as exc:
        raise IcebergSourceError(f"--iceberg-catalog: {exc}") from exc
    if not isinstance(value, dict):
        raise IcebergSourceError("--iceberg-catalog: expected a JSON object of properties")
    return value


class IcebergSource:
    """One stream's Iceberg table at one snapshot, read like a set of parts."""

    def __init__(self, catalog: Any, table: Any, dataset: str) -> None:
        self._catalog = catalog
        self.table = table
        self.dataset = dataset
        self.name = ".".join(table.name())
        snapshot = table.current_snapshot()
        self.snapshot_id: int | None = snapshot.snapshot_id if snapshot is not None else None
        schema_id = snapshot.schema_id if snapshot is not None else None
        self.schema = (
            table.schemas().get(schema_id, table.schema())
            if schema_id is not None
            else table.schema()
        )
        self._files: list[str] = []
        if self.snapshot_id is not None:
            self._files = sorted(
                task.file.file_path
                for task in table.scan(snapshot_id=self.snapshot_id).plan_files()
            )
        self._index = {path: index for index, path in enumerate(self._files)}
        self.names = [self._display(path) for path in self._files]
        missing = [name for name in COLUMNS if name not in self.schema.column_names]
        if self._files and missing:
            raise IcebergSourceError(f"table {self.name} has no column(s) {', '.join(missing)}")

    @classmethod
    def open(
        cls,
        dataset: str,
        *,
        stream: str,
        namespace: str | None = None,
        catalog: Mapping[str, Any] | None = None,
    ) -> IcebergSource:
        """The stream's table, found the way the target finds it (module docstring)."""
        try:
            from pyiceberg.exceptions import NoSuchTableError  # noqa: PLC0415  (fast --help)
        except ImportError:
            raise IcebergSourceError(
                f"reading an Iceberg table needs pyiceberg: {install_hint('iceberg')}"
            ) from None

        from target_parquet_parts.iceberg import (  # noqa: PLC0415
            load_iceberg_catalog,
            table_identifier,
        )
        from target_parquet_parts.settings import TargetSettings  # noqa: PLC0415

        settings = TargetSettings.from_config(
            {"output_dir": dataset, "iceberg_namespace": namespace, "iceberg_catalog": catalog}
        )
        if not catalog and not (Path(dataset) / CATALOG_FILE).is_file():
            # The target's loader would create an empty catalog here; a check must not.
            raise IcebergSourceError(
                f"--dataset {dataset}: no {CATALOG_FILE} (the embedded catalog of "
                "table_format: iceberg); pass --iceberg-catalog for another catalog"
            )
        identifier = table_identifier(settings, stream)
        loaded = load_iceberg_catalog(settings)
        try:
            table = loaded.load_table(identifier)
        except NoSuchTableError:
            _close(loaded)
            raise IcebergSourceError(
                f"no Iceberg table {'.'.join(identifier)} in the catalog of {dataset} "
                "(is --iceberg-namespace the target's iceberg_namespace?)"
            ) from None
        except BaseException:
            _close(loaded)
            raise
        return cls(loaded, table, dataset)

    def close(self) -> None:
        """Release the catalog's connections."""
        _close(self._catalog)

    def __enter__(self) -> IcebergSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def description(self) -> str:
        """What the report's header names: the table and the snapshot read."""
        return f"Iceberg table {self.name}, snapshot {self.snapshot_id}"

    @property
    def data_files(self) -> int:
        """Data files of the pinned snapshot (the report's "parts")."""
        return len(self._files)

    def _display(self, uri: str) -> str:
        """A data file's name as the report shows it: under `dataset` when it is there."""
        path = uri.removeprefix("file://") if uri.startswith("file:///") else uri
        root = os.path.abspath(self.dataset)
        if path.startswith(root + os.sep):
            return str(Path(self.dataset) / os.path.relpath(path, root))
        return path

    def _scan(self, columns: Sequence[str], where: Any) -> Iterator[tuple[int, pa.Table]]:
        """(data file index, its rows `where` selects, `columns` only), file by file."""
        if self.snapshot_id is None:
            return
        from pyiceberg.io.pyarrow import ArrowScan  # noqa: PLC0415

        scan = self.table.scan(
            row_filter=where, selected_fields=tuple(columns), snapshot_id=self.snapshot_id
        )
        reader = ArrowScan(scan.table_metadata, scan.io, scan.projection(), scan.row_filter)
        tasks = sorted(scan.plan_files(), key=lambda task: task.file.file_path)
        for task in tasks:
            yield self._index[task.file.file_path], reader.to_table([task]).select(list(columns))

    def _where(
        self, log_ids: set[str] | None, low: int | None = None, high: int | None = None
    ) -> Any:
        from pyiceberg.expressions import (  # noqa: PLC0415
            AlwaysTrue,
            And,
            GreaterThanOrEqual,
            In,
            LessThan,
        )

        where: Any = _predicate(In, LOG_ID, sorted(log_ids)) if log_ids else AlwaysTrue()
        if low is not None:
            where = And(where, _predicate(GreaterThanOrEqual, TIMESTAMP, low))
        if high is not None:
            where = And(where, _predicate(LessThan, TIMESTAMP, high))
        return where

    def _outside(self, log_ids: set[str] | None, low: int, high: int) -> Any:
        from pyiceberg.expressions import (  # noqa: PLC0415
            And,
            GreaterThanOrEqual,
            LessThan,
            Or,
        )

        before = _predicate(LessThan, TIMESTAMP, low)
        return And(
            self._where(log_ids), Or(before, _predicate(GreaterThanOrEqual, TIMESTAMP, high))
        )

    def log_ids(self) -> set[str]:
        """Every log the pinned snapshot holds rows of."""
        found: set[str] = set()
        for _, rows in self._scan([LOG_ID], self._where(None)):
            found.update(str(value) for value in pc.unique(rows[LOG_ID]).to_pylist())
        return found

    def counts(
        self,
        *,
        from_ms: int | None,
        to_ms: int | None,
        window_ms: int,
        log_ids: set[str] | None = None,
        subset: bool = False,
    ) -> DatasetCounts:
        """`dataset.read_dataset_counts` for the table (same figures, data files as parts)."""
        min_ts = max_ts = None
        if from_ms is None or to_ms is None:
            for _, rows in self._scan([TIMESTAMP], self._where(log_ids)):
                stamps = rows[TIMESTAMP].drop_null()
                if len(stamps):
                    low_high = pc.min_max(stamps).as_py()
                    min_ts = low_high["min"] if min_ts is None else min(min_ts, low_high["min"])
                    max_ts = low_high["max"] if max_ts is None else max(max_ts, low_high["max"])
        low = from_ms if from_ms is not None else (min_ts or 0)
        high = to_ms if to_ms is not None else ((max_ts or 0) + 1)
        inside = self._where(log_ids, low, high)

        table = None
        if INT_KEY in self.schema.column_names:
            table = self._read_keys(INT_KEY, inside)
        if table is None:  # no int64 column, or a null in it: the exact string instead
            table = self._read_keys(SEQUENCE_NUMBER_STR, inside)
        assert table is not None  # the string key never has to give way

        strays: dict[str, int] = defaultdict(int)
        samples: list[StrayRow] = []
        if not subset:
            for index, rows in self._scan(COLUMNS, self._outside(log_ids, low, high)):
                for entry in pc.value_counts(rows[LOG_ID]).to_pylist():
                    strays[str(entry["values"])] += entry["counts"]
                for row in rows.slice(0, max(0, MAX_SAMPLES - len(samples))).to_pylist():
                    samples.append(
                        StrayRow(
                            str(row[LOG_ID]),
                            row[TIMESTAMP],
                            str(row[SEQUENCE_NUMBER_STR]),
                            self.names[index],
                        )
                    )

        windows, duplicated = _count_windows(table, window_ms)
        return DatasetCounts(
            parts=len(self._files),
            windows=windows,
            log_ids={str(value) for value in table[LOG_ID].unique().to_pylist()} | set(strays),
            strays=dict(strays),
            stray_samples=samples,
            duplicate_groups=_duplicate_groups(duplicated, self.names),
            min_timestamp=min_ts,
            max_timestamp=max_ts,
            table=table,
        )

    def _read_keys(self, key: str, where: Any) -> pa.Table | None:
        """`log_id` (dictionary), `timestamp`, `key`, `part` (data file index): as dataset.py.

        None when `key` is the int64 column and some row has no value there (the caller then
        reads the string, so rows without `sequence_number` never merge keys by accident).
        """
        key_type = pa.int64() if key == INT_KEY else pa.string()
        schema = pa.schema([(LOG_ID, _LOG_ID), (TIMESTAMP, pa.int64()), ("key", key_type)])
        tables = []
        for index, rows in self._scan([LOG_ID, TIMESTAMP, key], where):
            if key == INT_KEY and rows[key].null_count:
                return None
            tables.append(
                pa.table(
                    {
                        LOG_ID: _dictionary(rows[LOG_ID]),
                        TIMESTAMP: rows[TIMESTAMP].cast(pa.int64()),
                        "key": rows[key].cast(key_type),
                        "part": pa.array([index] * rows.num_rows, pa.int32()),
                    }
                )
            )
        if not tables:
            return schema.empty_table().append_column("part", pa.array([], pa.int32()))
        return pa.concat_tables(tables).unify_dictionaries()

    def clocks(
        self,
        *,
        from_ms: int,
        to_ms: int,
        window_ms: int,
        log_ids: set[str] | None,
        late_after_ms: int,
        margin_ms: int,
    ) -> EventClocks:
        """`dataset.read_event_clocks` for the table (same figures and margins)."""
        clocks = EventClocks.unread(from_ms, to_ms, late_after_ms, margin_ms)
        schema = self.schema
        kind = event_time_kind(schema.column_names, schema.find_type) if self._files else ""
        if kind != "event":
            clocks.reason = _no_event_time_reason([kind] if kind else [])
            return clocks
        clocks.available = True
        limits = _ClockLimits(from_ms, to_ms, window_ms, late_after_ms)
        where = self._where(log_ids, clocks.read_from, clocks.read_to)
        windows: dict[tuple[str, int], ClockCounts] = clocks.windows
        for _, rows in self._scan([LOG_ID, TIMESTAMP, EVENT_TIME], where):
            event_us = pc.cast(pc.cast(rows[EVENT_TIME], _MICROS, safe=False), pa.int64())
            clocks.rows_read += rows.num_rows
            clocks.rows_with_event_time += rows.num_rows - event_us.null_count
            if rows.num_rows:
                _add_part(
                    windows,
                    _dictionary(rows[LOG_ID]),
                    _one_chunk(rows[TIMESTAMP].cast(pa.int64())),
                    _one_chunk(event_us),
                    limits,
                )
        return clocks


def _dictionary(values: pa.ChunkedArray) -> pa.Array:
    """`log_id` dictionary-encoded, as the parts reader has it (pyiceberg may give large types)."""
    return pc.dictionary_encode(values.cast(pa.string()).combine_chunks()).cast(_LOG_ID)


def _predicate(kind: Any, column: str, value: Any) -> Any:
    """A pyiceberg predicate on a column name (its pydantic signature hides the positional form)."""
    return kind(column, value)


def _close(catalog: Any) -> None:
    close = getattr(catalog, "close", None)
    if close is not None:
        close()
