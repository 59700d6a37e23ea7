"""What the dataset holds, per log and time window: rows, distinct keys, duplicates, strays.

Part of `tap-rapid7-reconcile`. Reads only the three columns it needs (`log_id`, `timestamp`,
`sequence_number_str`) from the complete parts (`part-*.parquet`; temporary files and the
target's `_journal/` are never read), one part at a time so that every row keeps the name of the
part it came from: that is what lets the report name a duplicated part or a stray row's file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

__all__ = [
    "DICTIONARY_LOG_ID", "DatasetCounts", "DuplicateGroup", "StrayRow", "WindowRows",
    "part_files", "read_dataset_counts", "window_start",
]

COLUMNS = ["log_id", "timestamp", "sequence_number_str"]
# The key is hashed as the exact int64 `sequence_number` when every part has it (the same value
# as `sequence_number_str`, 8 bytes instead of ~19 and an integer hash); else as the string.
INT_KEY = "sequence_number"
MAX_SAMPLES = 10


@dataclass
class WindowRows:
    """The dataset's view of one (log, window)."""

    rows: int = 0
    distinct: int = 0

    @property
    def duplicates(self) -> int:
        """Rows beyond the first for each key (a key written twice counts once here)."""
        return self.rows - self.distinct


@dataclass
class StrayRow:
    """A row whose `timestamp` lies outside the range being reconciled."""

    log_id: str
    timestamp: int
    sequence_number_str: str
    part: str


@dataclass
class DuplicateGroup:
    """Keys that occur more than once, grouped by the set of parts that hold them."""

    parts: tuple[str, ...]
    keys: int
    rows: int
    sample: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DatasetCounts:
    """Everything the reconciliation needs from the dataset."""

    parts: int
    windows: dict[tuple[str, int], WindowRows]
    log_ids: set[str]
    strays: dict[str, int]
    stray_samples: list[StrayRow]
    duplicate_groups: list[DuplicateGroup]
    min_timestamp: int | None
    max_timestamp: int | None
    table: pa.Table | None = None  # the key columns read, kept for a key-level diff

    def keys_in(self, log_id: str, from_ms: int, to_ms: int) -> dict[str, int]:
        """`sequence_number_str -> timestamp` of one log's rows in `[from_ms, to_ms)`."""
        if self.table is None:
            return {}
        ts = self.table["timestamp"]
        mask = pc.and_(pc.equal(self.table["log_id"], log_id),
                       pc.and_(pc.greater_equal(ts, from_ms), pc.less(ts, to_ms)))
        rows = self.table.filter(mask)
        return dict(zip(map(str, rows["key"].to_pylist()), rows["timestamp"].to_pylist(),
                        strict=True))


def part_files(stream_dir: Path) -> list[Path]:
    """Complete parts of one stream, in a stable order (partition directories included)."""
    return sorted(stream_dir.rglob("part-*.parquet"))


_LOG_ID = pa.dictionary(pa.int32(), pa.string())
# log_id read dictionary-encoded: counting rows per log outside the range costs almost nothing.
DICTIONARY_LOG_ID = ds.ParquetFileFormat(
    read_options=ds.ParquetReadOptions(dictionary_columns=["log_id"]))


def _open(path: Path) -> ds.Dataset:
    part = ds.dataset(path, format=DICTIONARY_LOG_ID)
    missing = [name for name in COLUMNS if name not in part.schema.names]
    if missing:
        raise ValueError(f"{path}: part has no column(s) {', '.join(missing)}")
    return part


def _both(left: ds.Expression | None, right: ds.Expression) -> ds.Expression:
    return right if left is None else (left & right)


def window_start(timestamp_ms: int, window_ms: int) -> int:
    """Start of the aligned window (multiples of the window length since the epoch, UTC)."""
    return timestamp_ms - timestamp_ms % window_ms


def read_dataset_counts(
    stream_dir: Path,
    *,
    from_ms: int | None,
    to_ms: int | None,
    window_ms: int,
    log_ids: set[str] | None = None,
    subset: bool = False,
) -> DatasetCounts:
    """Count rows and distinct keys per (log, aligned window) inside `[from_ms, to_ms)`.

    `from_ms`/`to_ms` of None mean "the dataset's own first and last timestamp" (then nothing can
    be outside). Only rows inside the range are materialized (the range filter is pushed down to
    the parquet reader, so row groups outside it are skipped); rows outside are only counted per
    log and sampled, and with `subset` not even read.
    """
    files = part_files(stream_dir)
    names = [str(path) for path in files]
    parts = [_open(path) for path in files]
    key = INT_KEY if all(INT_KEY in part.schema.names for part in parts) else COLUMNS[2]
    key_type = pa.int64() if key == INT_KEY else pa.string()
    schema = pa.schema([("log_id", _LOG_ID), ("timestamp", pa.int64()), ("key", key_type)])
    by_log = pc.field("log_id").isin(pa.array(sorted(log_ids))) if log_ids else None

    min_ts = max_ts = None
    if from_ms is None or to_ms is None:
        for part in parts:
            stamps = part.to_table(columns=["timestamp"], filter=by_log)["timestamp"]
            if len(stamps):
                low_high = pc.min_max(stamps).as_py()
                min_ts = low_high["min"] if min_ts is None else min(min_ts, low_high["min"])
                max_ts = low_high["max"] if max_ts is None else max(max_ts, low_high["max"])
    low = from_ms if from_ms is not None else (min_ts or 0)
    high = to_ms if to_ms is not None else ((max_ts or 0) + 1)
    in_range = (pc.field("timestamp") >= low) & (pc.field("timestamp") < high)

    tables = []
    strays: dict[str, int] = defaultdict(int)
    samples: list[StrayRow] = []
    for index, part in enumerate(parts):
        table = part.to_table(columns=["log_id", "timestamp", key],
                              filter=_both(by_log, in_range)).rename_columns(schema.names)
        table = table.cast(schema)
        tables.append(table.append_column("part", pa.array([index] * table.num_rows, pa.int32())))
        if subset:
            continue
        outside = _both(by_log, ~in_range)
        logs = part.to_table(columns=["log_id"], filter=outside)["log_id"]
        for entry in pc.value_counts(logs).to_pylist():
            strays[str(entry["values"])] += entry["counts"]
        if len(logs) and len(samples) < MAX_SAMPLES:
            head = part.head(MAX_SAMPLES - len(samples), columns=COLUMNS, filter=outside)
            samples.extend(
                StrayRow(row["log_id"], row["timestamp"], row["sequence_number_str"], names[index])
                for row in head.to_pylist()
            )
    table = pa.concat_tables(tables).unify_dictionaries() if tables else (
        schema.empty_table().append_column("part", pa.array([], pa.int32())))

    windows, repeated = _count_windows(table, window_ms)
    return DatasetCounts(
        parts=len(files),
        windows=windows,
        log_ids=set(table["log_id"].unique().to_pylist()) | set(strays),
        strays=dict(strays),
        stray_samples=samples,
        duplicate_groups=_duplicate_groups(table, repeated, names) if len(repeated) else [],
        min_timestamp=min_ts,
        max_timestamp=max_ts,
        table=table,
    )


def _count_windows(table: pa.Table, window_ms: int
                   ) -> tuple[dict[tuple[str, int], WindowRows], pa.Array]:
    """Rows and distinct keys per (log, window), and the keys that occur more than once.

    Sort-based rather than a hash over every key: sort by (log, key), mark each row that starts a
    new key, then count per (log, window), a handful of groups. A key's timestamp (hence window)
    never changes, so a key's first row stands for it in its window.
    """
    if table.num_rows == 0:
        return {}, pa.array([], table.schema.field("key").type)
    logs = table["log_id"].combine_chunks()
    flat = pa.table({"log": logs.indices, "key": table["key"].combine_chunks(),
                     "timestamp": table["timestamp"].combine_chunks()})
    flat = flat.take(pc.sort_indices(flat, sort_keys=[("log", "ascending"), ("key", "ascending")]))
    log, key = flat["log"].combine_chunks(), flat["key"].combine_chunks()
    changed = pc.or_(pc.not_equal(log.slice(1), log.slice(0, len(log) - 1)),
                     pc.not_equal(key.slice(1), key.slice(0, len(key) - 1)))
    first = pa.concat_arrays([pa.array([True]), changed.combine_chunks()
                              if isinstance(changed, pa.ChunkedArray) else changed])
    width = pa.scalar(window_ms, pa.int64())  # integer division truncates: timestamps are > 0
    counted = pa.table({
        "log": log, "window": pc.multiply(pc.divide(flat["timestamp"], width), width),
        "first": pc.cast(first, pa.int64()),
    }).group_by(["log", "window"]).aggregate([("first", "sum"), ("first", "count")])
    names = logs.dictionary
    windows = {
        (names[row["log"]].as_py(), row["window"]): WindowRows(
            rows=row["first_count"], distinct=row["first_sum"])
        for row in counted.to_pylist()
    }
    return windows, pc.unique(key.filter(pc.invert(first)))


def _duplicate_groups(table: pa.Table, repeated: pa.Array, names: list[str]
                      ) -> list[DuplicateGroup]:
    """Keys written more than once in the range, grouped by the parts holding them.

    Only the rows of the `repeated` keys are looked at again, to find which parts hold them.
    """
    rows = table.filter(pc.is_in(table["key"], value_set=repeated))
    per_key = rows.group_by(["log_id", "key"]).aggregate(
        [("part", "count"), ("part", "distinct")]
    )
    groups: dict[tuple[str, ...], DuplicateGroup] = {}
    for row in per_key.filter(pc.greater(per_key["part_count"], 1)).to_pylist():
        parts = tuple(names[index] for index in sorted(row["part_distinct"]))
        group = groups.setdefault(parts, DuplicateGroup(parts=parts, keys=0, rows=0))
        group.keys += 1
        group.rows += row["part_count"]
        if len(group.sample) < 3:
            group.sample.append((row["log_id"], str(row["key"])))
    return sorted(groups.values(), key=lambda group: -group.keys)
