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

__all__ = ["DatasetCounts", "DuplicateGroup", "StrayRow", "WindowRows", "read_dataset_counts"]

COLUMNS = ["log_id", "timestamp", "sequence_number_str"]
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
        return dict(zip(rows["sequence_number_str"].to_pylist(), rows["timestamp"].to_pylist(),
                        strict=True))


def part_files(stream_dir: Path) -> list[Path]:
    """Complete parts of one stream, in a stable order (partition directories included)."""
    return sorted(stream_dir.rglob("part-*.parquet"))


def _load(files: list[Path], log_ids: set[str] | None) -> pa.Table:
    """Read the key columns of every part, tagged with the part's index."""
    tables = []
    wanted = pa.array(sorted(log_ids)) if log_ids else None
    for index, path in enumerate(files):
        fragment = ds.dataset(path, format="parquet")
        missing = [name for name in COLUMNS if name not in fragment.schema.names]
        if missing:
            raise ValueError(f"{path}: part has no column(s) {', '.join(missing)}")
        expression = pc.field("log_id").isin(wanted) if wanted is not None else None
        table = fragment.to_table(columns=COLUMNS, filter=expression)
        table = table.cast(pa.schema([("log_id", pa.string()), ("timestamp", pa.int64()),
                                      ("sequence_number_str", pa.string())]))
        tables.append(table.append_column("part", pa.array([index] * table.num_rows, pa.int32())))
    if not tables:
        return pa.table({"log_id": pa.array([], pa.string()), "timestamp": pa.array([], pa.int64()),
                         "sequence_number_str": pa.array([], pa.string()),
                         "part": pa.array([], pa.int32())})
    return pa.concat_tables(tables)


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
) -> DatasetCounts:
    """Count rows and distinct keys per (log, aligned window) inside `[from_ms, to_ms)`.

    `from_ms`/`to_ms` of None mean "the dataset's own first and last timestamp" (then nothing can
    be outside). Rows outside the range are counted per log and sampled, not bucketed.
    """
    files = part_files(stream_dir)
    table = _load(files, log_ids)
    names = [str(path) for path in files]
    timestamps = table["timestamp"]
    min_ts = pc.min(timestamps).as_py() if table.num_rows else None
    max_ts = pc.max(timestamps).as_py() if table.num_rows else None
    low = from_ms if from_ms is not None else (min_ts or 0)
    high = to_ms if to_ms is not None else ((max_ts or 0) + 1)

    inside = pc.and_(pc.greater_equal(timestamps, low), pc.less(timestamps, high))
    stray_table = table.filter(pc.invert(inside))
    strays: dict[str, int] = defaultdict(int)
    for log_id in stray_table["log_id"].to_pylist():
        strays[log_id] += 1
    samples = [
        StrayRow(row["log_id"], row["timestamp"], row["sequence_number_str"], names[row["part"]])
        for row in stray_table.slice(0, MAX_SAMPLES).to_pylist()
    ]

    kept = table.filter(inside)
    width = pa.scalar(window_ms, pa.int64())  # integer division truncates: timestamps are > 0
    buckets = pc.multiply(pc.divide(kept["timestamp"], width), width)
    kept = kept.append_column("window", buckets)
    grouped = kept.group_by(["log_id", "window"]).aggregate(
        [("sequence_number_str", "count"), ("sequence_number_str", "count_distinct")]
    )
    windows = {
        (row["log_id"], row["window"]): WindowRows(
            rows=row["sequence_number_str_count"],
            distinct=row["sequence_number_str_count_distinct"],
        )
        for row in grouped.to_pylist()
    }
    return DatasetCounts(
        parts=len(files),
        windows=windows,
        log_ids=set(table["log_id"].unique().to_pylist()),
        strays=dict(strays),
        stray_samples=samples,
        duplicate_groups=_duplicate_groups(table, names),
        min_timestamp=min_ts,
        max_timestamp=max_ts,
        table=table,
    )


def _duplicate_groups(table: pa.Table, names: list[str]) -> list[DuplicateGroup]:
    """Keys written more than once anywhere in the dataset, grouped by the parts holding them."""
    per_key = table.group_by(["log_id", "sequence_number_str"]).aggregate(
        [("part", "count"), ("part", "distinct")]
    )
    repeated = per_key.filter(pc.greater(per_key["part_count"], 1))
    groups: dict[tuple[str, ...], DuplicateGroup] = {}
    for row in repeated.to_pylist():
        parts = tuple(names[index] for index in sorted(row["part_distinct"]))
        group = groups.setdefault(parts, DuplicateGroup(parts=parts, keys=0, rows=0))
        group.keys += 1
        group.rows += row["part_count"]
        if len(group.sample) < 3:
            group.sample.append((row["log_id"], row["sequence_number_str"]))
    return sorted(groups.values(), key=lambda group: -group.keys)
