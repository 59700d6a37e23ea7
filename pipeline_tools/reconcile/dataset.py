"""What the dataset holds, per log and time window: rows, distinct keys, duplicates, strays.

Part of `tap-rapid7-reconcile`. Reads only the columns it needs (`log_id`, `timestamp` and the
sequence number) from the complete parts (`part-*.parquet`; temporary files and the target's
`_journal/` are never read), one part at a time so that every row keeps the name of the part it
came from: that is what lets the report name a duplicated part or a stray row's file. The
dataset may be a local directory or an object-store URI (`s3://bucket/prefix`, ...): `StreamDir`
reads it through pyarrow's filesystem for it, configured from the environment as the target is.

A damaged dataset never passes (`DatasetError`, one line naming the part or path, exit status 2):

- every column reconcile reports on is read in full from every part before anything is counted
  (`IDENTITY_COLUMNS`; with the clocks also `CLOCK_COLUMNS`): every row group, every page
  decompressed and decoded, whatever the range, `--subset` or the row-group statistics would let
  the counting reads skip. A part or column that cannot be read or decoded is named with its
  row group and the reader's cause. `message` is never read (it is not reported on);
- each part's type for those columns is checked against what the target writes
  (`TARGET_SCHEMA`, from the stream's own schema), naming the column, the expected and the found
  type; the same values in another width (a dictionary, large strings, another time unit) pass;
- walking a local dataset never enters one directory twice: see `StreamDir.parts`.

An entry's identity is `(log_id, timestamp, sequence_number)` (Rapid7's spec: sequence numbers
are unique only within one millisecond), so every count of distinct keys, every duplicate and
every key-level diff here is on that triple, never on the sequence number alone.

The second job, `read_event_clocks`, counts the same windows by the other clock: the event's own
`event_time` (from the message) next to the receipt time `timestamp` that the API counts by.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tap_rapid7.logsearch.records import (
    EVENT_TIME,
    EVENTS_KEY_PROPERTIES,
    EVENTS_SCHEMA,
    LOG_ID,
    RECEIVED_AT,
    SEQUENCE_NUMBER,
    SEQUENCE_NUMBER_STR,
    TIMESTAMP,
)
from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.naming import PART_GLOB
from target_parquet_parts.storage import arrow_filesystem, parse_location

__all__ = [
    "CLOCK_COLUMNS",
    "DICTIONARY_LOG_ID",
    "IDENTITY_COLUMNS",
    "TARGET_SCHEMA",
    "ClockCounts",
    "DatasetCounts",
    "DatasetError",
    "DuplicateGroup",
    "EventClocks",
    "PartFile",
    "StrayRow",
    "StreamDir",
    "WindowRows",
    "open_part",
    "part_files",
    "read_dataset_counts",
    "read_event_clocks",
    "read_log_ids",
    "window_start",
]

COLUMNS = list(EVENTS_KEY_PROPERTIES)
# The sequence number is hashed and sorted as the exact int64 `sequence_number` when every part
# has it without nulls (the same value as `sequence_number_str`, 8 bytes instead of ~19 and an
# integer comparison); else as the string. Either way it is one half of the (timestamp, seq) pair.
INT_KEY = SEQUENCE_NUMBER
MAX_SAMPLES = 10
# The columns each part is read in full for before counting: the entry's identity (the int64
# sequence number too, where a part has it: the counts key on it), and with the clocks the two
# date-times (wherever a part has them).
IDENTITY_COLUMNS = (*EVENTS_KEY_PROPERTIES, SEQUENCE_NUMBER)
CLOCK_COLUMNS = (RECEIVED_AT, EVENT_TIME)
# What the target writes for the `events` stream: the types those columns are checked against.
TARGET_SCHEMA = stream_spec(EVENTS_SCHEMA).arrow_schema


class DatasetError(ValueError):
    """The dataset cannot be reconciled as it stands: one line naming the part or path at fault.

    A part that cannot be read or decoded, a column of another type than the target writes, a
    directory reached twice through a symbolic link. Never counted around (a count that skips a
    damaged part, or counts a directory twice, is a count of another dataset): the command stops
    with exit status 2, as for any check that could not run.
    """


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
    """Keys that occur more than once, grouped by the set of parts that hold them.

    `sample` holds a few keys as `(log_id, timestamp, sequence_number_str)`.
    """

    parts: tuple[str, ...]
    keys: int
    rows: int
    sample: list[tuple[str, int, str]] = field(default_factory=list)


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

    def keys_in(self, log_id: str, from_ms: int, to_ms: int) -> set[tuple[int, str]]:
        """`(timestamp, sequence_number_str)` of one log's rows in `[from_ms, to_ms)`."""
        if self.table is None:
            return set()
        ts = self.table[TIMESTAMP]
        mask = pc.and_(
            pc.equal(self.table[LOG_ID], log_id),
            pc.and_(pc.greater_equal(ts, from_ms), pc.less(ts, to_ms)),
        )
        rows = self.table.filter(mask)
        return set(zip(rows[TIMESTAMP].to_pylist(), map(str, rows["key"].to_pylist()), strict=True))


class PartFile(NamedTuple):
    """One complete part: its path in the filesystem, and its name as the user knows it."""

    path: str
    name: str


@dataclass(frozen=True)
class StreamDir:
    """One stream's directory of the dataset, local or on object storage."""

    filesystem: pafs.FileSystem
    path: str  # in `filesystem`
    display: str  # as the user names it: a local path, or s3://bucket/prefix/stream

    @classmethod
    def of(cls, dataset: str | Path, stream_dir_name: str) -> StreamDir:
        """The directory `stream_dir_name` of the dataset at `dataset` (path or URI)."""
        if parse_location(str(dataset)) is None:
            path = str(Path(dataset) / stream_dir_name)
            return cls(pafs.LocalFileSystem(), path, path)
        filesystem, root = arrow_filesystem(dataset)
        display = f"{str(dataset).rstrip('/')}/{stream_dir_name}"
        return cls(filesystem, f"{root}/{stream_dir_name}", display)

    def is_dir(self) -> bool:
        """Whether the directory exists (on object storage: whether objects are under it)."""
        return self.filesystem.get_file_info(self.path).type == pafs.FileType.Directory

    def parts(self) -> list[PartFile]:
        """Complete parts, in a stable order (partition directories included).

        A local directory is walked here rather than by pyarrow, whose recursive listing follows
        every symbolic link: a link back up the tree listed each part ~40 times (until the OS
        gave up), and reconcile reported them as duplicates. Here a symbolic link to a directory
        is followed only the first time that directory is reached; one that leads to a directory
        already read (a loop, or a second name for a partition) is refused with `DatasetError`
        naming the link. Why not refuse every link to a directory: linking in a partition kept
        on another volume is a layout readers of the dataset (pyarrow, DuckDB, Spark) read
        once, and refusing it would stop a check on a healthy dataset; what readers read twice
        or forever is exactly what is refused, so what reconcile counts is never silently more
        than the parts. Real directories are walked before any link is followed, so the link is
        the path named, never the directory it duplicates. A `part-*.parquet` link to nothing is
        a part that cannot be read: refused too. Object stores have no links: listed as before.
        """
        base = self.path.rstrip("/") or "/"

        def display(path: str) -> str:
            return self.display + path[len(base) :]

        if isinstance(self.filesystem, pafs.LocalFileSystem):
            found = _local_files(base, display)
        else:
            selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
            found = [
                info.path
                for info in self.filesystem.get_file_info(selector)
                if info.type == pafs.FileType.File
                and fnmatch.fnmatchcase(info.base_name, PART_GLOB)
            ]
        found.sort(key=lambda path: path.split("/"))
        return [PartFile(path, display(path)) for path in found]


def _local_files(root: str, display: Callable[[str], str]) -> list[str]:
    """Paths of the parts under the local directory `root`, each directory entered once.

    See `StreamDir.parts` for the policy on symbolic links. A directory is known by its device
    and inode, so a loop is caught at its first repeat, whatever the path it is reached by.
    """
    try:
        top = os.stat(root)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(top.st_mode):
        return []
    read: dict[tuple[int, int], str] = {(top.st_dev, top.st_ino): root}
    directories = [root]
    links: list[str] = []
    found: list[str] = []
    while directories or links:
        if not directories:  # every real directory so far is read: follow the next link
            links.sort(reverse=True)
            link = links.pop()
            info = os.stat(link)
            first = read.get((info.st_dev, info.st_ino))
            if first is not None:
                raise DatasetError(
                    f"cannot list the dataset: {display(link)} is a symbolic link to "
                    f"{display(first)}, a directory already read (a loop, or a second name for "
                    "it): its parts would be counted twice; remove the link"
                )
            read[(info.st_dev, info.st_ino)] = link
            directories.append(link)
            continue
        directory = directories.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise DatasetError(f"cannot list the dataset: {_cause(exc)}") from exc
        for entry in entries:
            is_part = fnmatch.fnmatchcase(entry.name, PART_GLOB)
            if entry.is_symlink():
                if entry.is_dir():
                    links.append(entry.path)
                elif entry.is_file() and is_part:
                    found.append(entry.path)
                elif is_part and not os.path.exists(entry.path):
                    raise DatasetError(
                        f"cannot read part {display(entry.path)}: a symbolic link to "
                        f"{os.readlink(entry.path)}, which does not exist"
                    )
            elif entry.is_dir(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                first = read.get((info.st_dev, info.st_ino))
                if first is not None:  # the same directory mounted twice (no link involved)
                    raise DatasetError(
                        f"cannot list the dataset: {display(entry.path)} is the directory "
                        f"{display(first)}, already read: its parts would be counted twice"
                    )
                read[(info.st_dev, info.st_ino)] = entry.path
                directories.append(entry.path)
            elif is_part and entry.is_file(follow_symlinks=False):
                found.append(entry.path)
    return found


def _as_stream_dir(stream_dir: Path | StreamDir) -> StreamDir:
    if isinstance(stream_dir, StreamDir):
        return stream_dir
    return StreamDir(pafs.LocalFileSystem(), str(stream_dir), str(stream_dir))


def part_files(stream_dir: Path | StreamDir) -> list[PartFile]:
    """Complete parts of one stream, in a stable order (partition directories included)."""
    return _as_stream_dir(stream_dir).parts()


_LOG_ID = pa.dictionary(pa.int32(), pa.string())
# log_id read dictionary-encoded: counting rows per log outside the range costs almost nothing.
DICTIONARY_LOG_ID = ds.ParquetFileFormat(
    read_options=ds.ParquetReadOptions(dictionary_columns=[LOG_ID])
)


def open_part(stream_dir: StreamDir, part_file: PartFile) -> ds.Dataset:
    """One part as a dataset (log_id read dictionary-encoded)."""
    return ds.dataset(part_file.path, filesystem=stream_dir.filesystem, format=DICTIONARY_LOG_ID)


def _cause(exc: BaseException) -> str:
    """The reader's error on one line: its type and message (whitespace folded)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


@contextmanager
def _reading(part_file: PartFile, what: str = "") -> Iterator[None]:
    """Turn a failure to read `part_file` (`what`: which column, ...) into a `DatasetError`."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"cannot read part {part_file.name}: {what}{_cause(exc)}") from exc


def _same_kind(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type `found` holds what the target writes as `expected`.

    The same values in another width count: a dictionary of them, large or view strings, a
    smaller signed integer, date-times in another unit or zone (all read exactly as before).
    """
    if pa.types.is_timestamp(expected):
        return bool(pa.types.is_timestamp(found))
    if pa.types.is_string(expected):
        return bool(
            pa.types.is_string(found)
            or pa.types.is_large_string(found)
            or pa.types.is_string_view(found)
        )
    if pa.types.is_integer(expected):
        return bool(pa.types.is_signed_integer(found) and found.bit_width <= expected.bit_width)
    return bool(found == expected)


def _check_types(part_file: PartFile, schema: pa.Schema, columns: Collection[str]) -> None:
    """Each of `columns` the part has must be of the type the target writes (`TARGET_SCHEMA`)."""
    for name in columns:
        if name not in schema.names:
            continue
        found = schema.field(name).type
        if pa.types.is_dictionary(found):
            found = found.value_type
        expected = TARGET_SCHEMA.field(name).type
        if not _same_kind(found, expected):
            raise DatasetError(
                f"cannot read part {part_file.name}: column {name} has type {found}, "
                f"expected {expected}"
            )


def _row_groups(
    stream_dir: StreamDir, part_file: PartFile, columns: Sequence[str]
) -> Iterator[pa.Table]:
    """`columns` of each row group of the part in turn, in full (no filter, no statistics).

    One row group at a time, so memory stays at that. When a row group cannot be read, its
    columns are read again one by one to name the column at fault with the row group. Page
    checksums are verified where the writer wrote them.
    """
    with _reading(part_file):
        source = stream_dir.filesystem.open_input_file(part_file.path)
    with source:
        with _reading(part_file):
            reader = pq.ParquetFile(
                source, read_dictionary=[LOG_ID], page_checksum_verification=True
            )
        for index in range(reader.num_row_groups):
            try:
                table = reader.read_row_group(index, columns=list(columns))
            except (OSError, pa.ArrowException) as exc:
                for name in columns:
                    with _reading(part_file, f"column {name}, row group {index}: "):
                        reader.read_row_group(index, columns=[name])
                what = f"row group {index}: {_cause(exc)}"  # no one column fails alone
                raise DatasetError(f"cannot read part {part_file.name}: {what}") from exc
            yield table


def _decode(stream_dir: StreamDir, part_file: PartFile, columns: Collection[str]) -> None:
    """Read and decode `columns` of every row group of the part, keeping nothing."""
    for _ in _row_groups(stream_dir, part_file, list(columns)):
        pass


def _open(stream_dir: StreamDir, part_file: PartFile, decode: Collection[str] = ()) -> ds.Dataset:
    """One part, checked: the key columns there, the types right, `decode` readable in full.

    Every column of `IDENTITY_COLUMNS` and `decode` that the part has is type-checked; those of
    `decode` it has are then read in full (`_row_groups`). Raises `DatasetError` naming the part.
    """
    with _reading(part_file):
        part = open_part(stream_dir, part_file)
    missing = [name for name in COLUMNS if name not in part.schema.names]
    if missing:
        raise DatasetError(f"cannot read part {part_file.name}: no column(s) {', '.join(missing)}")
    _check_types(part_file, part.schema, [*IDENTITY_COLUMNS, *decode])
    _decode(stream_dir, part_file, [name for name in decode if name in part.schema.names])
    return part


def read_log_ids(stream_dir: Path | StreamDir) -> set[str]:
    """Logs present in the dataset: `log_id` of every part, read in full (dictionary-encoded)."""
    where = _as_stream_dir(stream_dir)
    found: set[str] = set()
    for part_file in where.parts():
        _open(where, part_file)
        for table in _row_groups(where, part_file, [LOG_ID]):
            found.update(pc.unique(table[LOG_ID]).to_pylist())
    return found


def _both(left: ds.Expression | None, right: ds.Expression) -> ds.Expression:
    return right if left is None else (left & right)


def _log_filter(log_ids: set[str] | None) -> ds.Expression | None:
    return pc.field(LOG_ID).isin(pa.array(sorted(log_ids))) if log_ids else None


def _received_in(low: int, high: int) -> ds.Expression:
    return (pc.field(TIMESTAMP) >= low) & (pc.field(TIMESTAMP) < high)


def window_start(timestamp_ms: int, window_ms: int) -> int:
    """Start of the aligned window (multiples of the window length since the epoch, UTC)."""
    return timestamp_ms - timestamp_ms % window_ms


def _aligned(values: pa.Array | pa.ChunkedArray, width: int) -> pa.Array | pa.ChunkedArray:
    """Aligned window starts of non-negative values (integer division truncates: floors here)."""
    scalar = pa.scalar(width, pa.int64())
    return pc.multiply(pc.divide(values, scalar), scalar)


def read_dataset_counts(
    stream_dir: Path | StreamDir,
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
    log and sampled, and with `subset` not even read. Before any of that, every part's
    `IDENTITY_COLUMNS` are read in full and their types checked (`DatasetError` if one cannot).
    """
    where = _as_stream_dir(stream_dir)
    files = where.parts()
    names = [part_file.name for part_file in files]
    parts = [_open(where, part_file, IDENTITY_COLUMNS) for part_file in files]
    by_log = _log_filter(log_ids)

    min_ts = max_ts = None
    if from_ms is None or to_ms is None:
        for part, part_file in zip(parts, files, strict=True):
            with _reading(part_file):
                stamps = part.to_table(columns=[TIMESTAMP], filter=by_log)[TIMESTAMP]
            if len(stamps):
                low_high = pc.min_max(stamps).as_py()
                min_ts = low_high["min"] if min_ts is None else min(min_ts, low_high["min"])
                max_ts = low_high["max"] if max_ts is None else max(max_ts, low_high["max"])
    low = from_ms if from_ms is not None else (min_ts or 0)
    high = to_ms if to_ms is not None else ((max_ts or 0) + 1)
    in_range = _received_in(low, high)

    table = None
    if all(INT_KEY in part.schema.names for part in parts):
        table = _read_keys(parts, files, INT_KEY, _both(by_log, in_range))
    if table is None:  # no int64 column everywhere, or a null in it: the exact string instead
        table = _read_keys(parts, files, COLUMNS[2], _both(by_log, in_range))
    assert table is not None  # the string key never has to give way

    strays: dict[str, int] = defaultdict(int)
    samples: list[StrayRow] = []
    if not subset:
        outside = _both(by_log, ~in_range)
        for index, part in enumerate(parts):
            with _reading(files[index]):
                logs = part.to_table(columns=[LOG_ID], filter=outside)[LOG_ID]
            for entry in pc.value_counts(logs).to_pylist():
                strays[str(entry["values"])] += entry["counts"]
            if len(logs) and len(samples) < MAX_SAMPLES:
                with _reading(files[index]):
                    head = part.head(MAX_SAMPLES - len(samples), columns=COLUMNS, filter=outside)
                samples.extend(
                    StrayRow(row[LOG_ID], row[TIMESTAMP], row[SEQUENCE_NUMBER_STR], names[index])
                    for row in head.to_pylist()
                )

    windows, duplicated = _count_windows(table, window_ms)
    return DatasetCounts(
        parts=len(files),
        windows=windows,
        log_ids=set(table[LOG_ID].unique().to_pylist()) | set(strays),
        strays=dict(strays),
        stray_samples=samples,
        duplicate_groups=_duplicate_groups(duplicated, names),
        min_timestamp=min_ts,
        max_timestamp=max_ts,
        table=table,
    )


def _read_keys(
    parts: list[ds.Dataset], files: list[PartFile], key: str, where: ds.Expression
) -> pa.Table | None:
    """`log_id` (dictionary), `timestamp`, `key`, `part` (index) of the rows `where` selects.

    None when `key` is the int64 column and some row has no value there: the caller then reads
    the string, so a part written without `sequence_number` never merges keys by accident.
    """
    key_type = pa.int64() if key == INT_KEY else pa.string()
    schema = pa.schema([(LOG_ID, _LOG_ID), (TIMESTAMP, pa.int64()), ("key", key_type)])
    tables = []
    for index, part in enumerate(parts):
        with _reading(files[index]):
            table = part.to_table(columns=[LOG_ID, TIMESTAMP, key], filter=where)
            table = table.rename_columns(schema.names).cast(schema)
        if key == INT_KEY and table["key"].null_count:
            return None
        tables.append(table.append_column("part", pa.array([index] * table.num_rows, pa.int32())))
    if not tables:
        return schema.empty_table().append_column("part", pa.array([], pa.int32()))
    return pa.concat_tables(tables).unify_dictionaries()


def _count_windows(
    table: pa.Table, window_ms: int
) -> tuple[dict[tuple[str, int], WindowRows], pa.Table]:
    """Rows and distinct keys per (log, window), and the rows of keys that occur more than once.

    Sort-based rather than a hash over every key: sort by (log, timestamp, sequence number), mark
    each row that starts a new key, then count per (log, window), a handful of groups. The
    timestamp is part of the key, so a key never spans two windows and its first row stands for
    it. Returned with the counts: `log_id`, `timestamp`, `key`, `part` of every row whose key is
    written more than once (usually none: only those rows are looked at again).
    """
    empty = pa.table(
        {
            LOG_ID: pa.array([], pa.string()),
            TIMESTAMP: pa.array([], pa.int64()),
            "key": pa.array([], table.schema.field("key").type),
            "part": pa.array([], pa.int32()),
        }
    )
    if table.num_rows == 0:
        return {}, empty
    logs = table[LOG_ID].combine_chunks()
    flat = pa.table(
        {
            "log": logs.indices,
            TIMESTAMP: table[TIMESTAMP].combine_chunks(),
            "key": table["key"].combine_chunks(),
        }
    )
    order = pc.sort_indices(
        flat, sort_keys=[("log", "ascending"), (TIMESTAMP, "ascending"), ("key", "ascending")]
    )
    flat = flat.take(order)
    columns = [flat[name].combine_chunks() for name in ("log", TIMESTAMP, "key")]
    size = flat.num_rows
    changed = [pc.not_equal(column.slice(1), column.slice(0, size - 1)) for column in columns]
    new_key = pc.or_(pc.or_(changed[0], changed[1]), changed[2])
    first = pa.concat_arrays([pa.array([True]), new_key])
    counted = (
        pa.table(
            {
                "log": columns[0],
                "window": _aligned(columns[1], window_ms),
                "first": pc.cast(first, pa.int64()),
            }
        )
        .group_by(["log", "window"])
        .aggregate([("first", "sum"), ("first", "count")])
    )
    names = logs.dictionary
    windows = {
        (names[row["log"]].as_py(), row["window"]): WindowRows(
            rows=row["first_count"], distinct=row["first_sum"]
        )
        for row in counted.to_pylist()
    }
    # A row is in a repeated key when it is not its key's first row, or the next row is not.
    repeat = pc.invert(first)
    if not pc.any(repeat).as_py():
        return windows, empty
    in_repeated = pc.or_(repeat, pa.concat_arrays([repeat.slice(1), pa.array([False])]))
    rows = flat.filter(in_repeated)
    rows = rows.set_column(0, LOG_ID, pc.take(names, rows["log"]))
    # The part of each such row, looked up only for them (no sorted copy of the whole column).
    return windows, rows.append_column("part", pc.take(table["part"], order.filter(in_repeated)))


def _duplicate_groups(rows: pa.Table, names: list[str]) -> list[DuplicateGroup]:
    """Keys written more than once in the range, grouped by the parts holding them.

    `rows` holds only the rows of repeated keys (from `_count_windows`), so this stays small.
    """
    if rows.num_rows == 0:
        return []
    per_key = rows.group_by([LOG_ID, TIMESTAMP, "key"]).aggregate(
        [("part", "count"), ("part", "distinct")]
    )
    groups: dict[tuple[str, ...], DuplicateGroup] = {}
    for row in per_key.to_pylist():
        parts = tuple(names[index] for index in sorted(row["part_distinct"]))
        group = groups.setdefault(parts, DuplicateGroup(parts=parts, keys=0, rows=0))
        group.keys += 1
        group.rows += row["part_count"]
        if len(group.sample) < 3:
            group.sample.append((row[LOG_ID], row[TIMESTAMP], str(row["key"])))
    return sorted(groups.values(), key=lambda group: -group.keys)


@dataclass
class ClockCounts:
    """One (log, window) counted by the event's own time as well as by the receipt time.

    `by_event_time` counts rows whose `event_time` is in the window, whenever they were received
    (within the margin read); the other figures are about the rows *received* in the window.
    """

    by_event_time: int = 0
    both: int = 0  # received in the window and with their event time in it too
    no_event_time: int = 0
    late: int = 0  # received more than `late_after_ms` after their event time
    early: int = 0  # received more than `late_after_ms` before their event time


@dataclass
class EventClocks:
    """The dataset counted by both clocks, or why it cannot be (`reason` when not `available`).

    Rows are read by receipt time over `[read_from, read_to)`: the checked range widened by
    `margin_ms` on both sides, so that an event received late (after its window) is still
    counted in its event-time window. Events received beyond the margin are not seen.
    """

    available: bool
    reason: str
    late_after_ms: int
    margin_ms: int
    read_from: int
    read_to: int
    windows: dict[tuple[str, int], ClockCounts] = field(default_factory=dict)
    rows_read: int = 0
    rows_with_event_time: int = 0
    parts_without_event_time: int = 0  # older parts: `event_time` there is the receipt time

    @classmethod
    def unread(cls, from_ms: int, to_ms: int, late_after_ms: int, margin_ms: int) -> EventClocks:
        """Nothing read yet: the checked range widened by the margin, not available (yet)."""
        return cls(
            available=False,
            reason="",
            late_after_ms=late_after_ms,
            margin_ms=margin_ms,
            read_from=max(from_ms - margin_ms, 0),
            read_to=to_ms + margin_ms,
        )


_MICROS = pa.timestamp("us", tz="UTC")


def event_time_kind(names: Collection[str], type_of: Callable[[str], object]) -> str:
    """`event` when a part's (or table's) `event_time` is the event's own time, else why not.

    ``names`` are its columns, ``type_of(name)`` a column's type (Arrow's or Iceberg's: both
    spell timestamps ``timestamp...``). Parts written before the tap had `received_at` hold the
    receipt time in `event_time` (the same clock as `timestamp`): counting it as the event's
    time would hide the very difference this is about, so they count as having no event time.
    """
    if EVENT_TIME not in names:
        return "no event_time column"
    if RECEIVED_AT not in names:
        return "receipt time"
    kind = str(type_of(EVENT_TIME))
    if not kind.startswith("timestamp"):
        return f"event_time is {kind}, not a timestamp"
    return "event"


def _event_time_kind(part: ds.Dataset) -> str:
    schema = part.schema
    return event_time_kind(schema.names, lambda name: schema.field(name).type)


def read_event_clocks(
    stream_dir: Path | StreamDir,
    *,
    from_ms: int,
    to_ms: int,
    window_ms: int,
    log_ids: set[str] | None,
    late_after_ms: int,
    margin_ms: int,
) -> EventClocks:
    """Per (log, aligned window of `[from_ms, to_ms)`): rows by event time, late, early, none.

    Reads `log_id` (dictionary-encoded), `timestamp` and `event_time` of the rows received in
    the range plus the margin, one part at a time, and keeps only per-window sums. Event times
    are compared in microseconds (the column's own unit), so window edges are exact: an event at
    `to - 1 µs` is in, one at `to` is not. Every part's `CLOCK_COLUMNS` (those it has) are read
    in full and their types checked first (`DatasetError` if one cannot).
    """
    clocks = EventClocks.unread(from_ms, to_ms, late_after_ms, margin_ms)
    where_dir = _as_stream_dir(stream_dir)
    files = where_dir.parts()
    parts = [_open(where_dir, part_file, CLOCK_COLUMNS) for part_file in files]
    kinds = [_event_time_kind(part) for part in parts]
    if "event" not in kinds:
        clocks.reason = _no_event_time_reason(kinds)
        return clocks
    clocks.available = True
    where = _both(_log_filter(log_ids), _received_in(clocks.read_from, clocks.read_to))
    limits = _ClockLimits(from_ms, to_ms, window_ms, late_after_ms)
    for part, part_file, kind in zip(parts, files, kinds, strict=True):
        if kind == "event":
            with _reading(part_file):
                table = part.to_table(columns=[LOG_ID, TIMESTAMP, EVENT_TIME], filter=where)
                event_us = pc.cast(pc.cast(table[EVENT_TIME], _MICROS, safe=False), pa.int64())
        else:
            clocks.parts_without_event_time += 1
            with _reading(part_file):
                table = part.to_table(columns=[LOG_ID, TIMESTAMP], filter=where)
            event_us = pa.nulls(table.num_rows, pa.int64())
        clocks.rows_read += table.num_rows
        clocks.rows_with_event_time += table.num_rows - event_us.null_count
        if table.num_rows:
            table = table.unify_dictionaries().combine_chunks()
            _add_part(
                clocks.windows,
                table[LOG_ID].chunk(0),
                table[TIMESTAMP].chunk(0),
                _one_chunk(event_us),
                limits,
            )
    return clocks


def _no_event_time_reason(kinds: list[str]) -> str:
    if not kinds:
        return "the dataset has no parts"
    if "receipt time" in kinds:
        return (
            "the dataset has no event time: its parts have no received_at column, so they "
            "were written by an older tap whose event_time is the receipt time (the same "
            "clock as timestamp); re-load with the current tap and event_time_fields set"
        )
    if "no event_time column" in kinds:
        return "the dataset has no event time: its parts have no event_time column"
    return f"the dataset has no event time: {kinds[0]}"


@dataclass(frozen=True)
class _ClockLimits:
    from_ms: int
    to_ms: int
    window_ms: int
    late_after_ms: int


def _one_chunk(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _add_part(
    windows: dict[tuple[str, int], ClockCounts],
    log_ids: pa.Array,
    received_ms: pa.Array,
    event_us: pa.Array,
    limits: _ClockLimits,
) -> None:
    """Add one part's rows to the per-window sums (see `ClockCounts` for each figure)."""
    received_us = pc.multiply(received_ms, pa.scalar(1000, pa.int64()))
    threshold = pa.scalar(limits.late_after_ms * 1000, pa.int64())
    width_us = pa.scalar(limits.window_ms * 1000, pa.int64())
    received = pc.and_(
        pc.greater_equal(received_ms, limits.from_ms), pc.less(received_ms, limits.to_ms)
    )
    in_event = pc.fill_null(
        pc.and_(
            pc.greater_equal(event_us, limits.from_ms * 1000),
            pc.less(event_us, limits.to_ms * 1000),
        ),
        False,
    )
    received_window = _aligned(received_ms, limits.window_ms)
    # Event times before the epoch never reach the division (they are outside the range).
    event_window = pc.multiply(
        pc.divide(pc.if_else(in_event, event_us, 0), width_us),
        pa.scalar(limits.window_ms, pa.int64()),
    )
    flags = pa.table(
        {
            LOG_ID: log_ids,
            "window": received_window,
            "no_event_time": pc.cast(pc.is_null(event_us), pa.int64()),
            "late": _flag(pc.greater(pc.subtract(received_us, event_us), threshold)),
            "early": _flag(pc.greater(pc.subtract(event_us, received_us), threshold)),
            "both": _flag(pc.and_(in_event, pc.equal(event_window, received_window))),
        }
    ).filter(received)
    sums = flags.group_by([LOG_ID, "window"]).aggregate(
        [(name, "sum") for name in ("no_event_time", "late", "early", "both")]
    )
    for row in sums.to_pylist():
        counts = windows.setdefault((str(row[LOG_ID]), row["window"]), ClockCounts())
        counts.no_event_time += row["no_event_time_sum"]
        counts.late += row["late_sum"]
        counts.early += row["early_sum"]
        counts.both += row["both_sum"]
    by_event = pa.table({LOG_ID: log_ids, "window": event_window}).filter(in_event)
    for row in by_event.group_by([LOG_ID, "window"]).aggregate([([], "count_all")]).to_pylist():
        counts = windows.setdefault((str(row[LOG_ID]), row["window"]), ClockCounts())
        counts.by_event_time += row["count_all"]


def _flag(condition: pa.Array) -> pa.Array:
    """1 where `condition` holds, 0 where it does not or is unknown (no event time)."""
    return pc.cast(pc.fill_null(condition, False), pa.int64())
