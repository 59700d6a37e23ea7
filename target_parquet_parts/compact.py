"""Iceberg compaction: rewrite the small files of closed partitions, atomically.

For each Iceberg table of the target's catalog (``--config``, the target's own config file):

1. Plan on the current snapshot: the data files of *closed* partitions (day before ``--before``,
   default today UTC; unpartitioned tables count as closed; the null-date partition never
   closes) that are smaller than 3/4 of ``--target-file-mb``, bin-packed per partition into
   groups of about ``--target-file-mb``; a group needs at least two files. Files that have
   delete files (this target writes none; another engine may) are left alone.
2. Read each group (a scan restricted to its files, in the table's current schema) and write it
   as new data files. Nothing is visible yet.
3. Commit ONE snapshot that deletes exactly the planned files and adds the new ones (pyiceberg's
   overwrite producer with explicit ``delete_data_file``; no row filter). A reader sees either the
   old snapshot or the new one, never both sets of files and never neither: every row exactly
   once at any moment. Appends committed meanwhile by writers (also to the same partition) are
   kept: on a conflict the same change is re-staged on the new head (``commit_with_retry``); if
   one of the planned files vanished (another compaction won), the commit is refused
   (``ValidationException``) and this table is skipped, its new files deleted. If writers win
   every one of the ``attempts`` (``--commit-attempts``), the new files are deleted too and
   ``CommitConflictError`` says so: nothing is committed.
4. Expire snapshots older than ``--retain-hours`` (never the current one, nor the pending
   snapshots of unfinished runs that the exactly-once bookkeeping still needs, see
   ``iceberg_ledger.py``), then delete the data files, manifests and manifest lists that only
   expired snapshots referenced. Readers that started before the retention window may still be
   reading old snapshots: keep the window longer than your longest query.

Nothing to compact is an error the command reports with one line: ``MissingTablesError`` names
the namespace or the tables of ``--stream`` that do not exist and the catalog looked in
(``require_catalog`` reports an embedded catalog that does not exist yet without creating it).

The command (arguments, settings, the refusal of plain parts) is ``compact_cli.py``, which imports
this module, and with it pyiceberg, only for an Iceberg dataset.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchNamespaceError,
    NoSuchTableError,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.transforms import DayTransform

from plugin_io.log_events import log_event
from target_parquet_parts.iceberg import namespace_of, table_identifier
from target_parquet_parts.iceberg_commits import (
    COMMIT_ATTEMPTS,
    CommitConflictError,
    commit_with_retry,
    stage_snapshot,
)
from target_parquet_parts.iceberg_ledger import COMPACTION
from target_parquet_parts.settings import TargetSettings

__all__ = [
    "CompactionResult",
    "MissingTablesError",
    "compact_table",
    "require_catalog",
    "tables_of",
]

logger = logging.getLogger("target_parquet_parts.compact")

_EPOCH = datetime.date(1970, 1, 1)
_LISTED_TABLES = 10  # the existing tables a missing-table message lists, against typos


class MissingTablesError(LookupError):
    """The namespace, or a table of an asked stream, does not exist; ``str()`` says which."""


@dataclass
class CompactionResult:
    """What one table's compaction did (also printed as one JSON line)."""

    table: str
    files_before: int = 0
    files_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    partitions: int = 0
    rewritten_files: int = 0
    written_files: int = 0
    snapshot_id: int | None = None
    expired_snapshots: int = 0
    deleted_files: int = 0
    skipped: str | None = None
    groups: list[list[str]] = field(default_factory=list, repr=False)


def _day_position(table: Table) -> int | None:
    for position, partition_field in enumerate(table.spec().fields):
        if isinstance(partition_field.transform, DayTransform):
            return position
    return None


def _closed(table: Table, data_file: DataFile, before: datetime.date) -> bool:
    if table.spec().is_unpartitioned():
        return True
    position = _day_position(table)
    if position is None or data_file.spec_id != table.spec().spec_id:
        return False
    value = data_file.partition[position]
    if value is None:
        return False  # the null-date partition keeps receiving rows: never closed
    return _EPOCH + datetime.timedelta(days=int(value)) < before


def plan(
    table: Table, before: datetime.date, target_bytes: int
) -> tuple[list[DataFile], list[list[DataFile]]]:
    """(every live data file, groups of small files of closed partitions to merge)."""
    tasks = list(table.scan().plan_files())
    live = [task.file for task in tasks]
    small = int(target_bytes * 0.75)
    by_partition: dict[tuple[int, str], list[DataFile]] = {}
    for task in tasks:
        data_file = task.file
        if task.delete_files:
            continue  # rows deleted by another engine's delete files: left to that engine
        if data_file.file_size_in_bytes < small and _closed(table, data_file, before):
            key = (data_file.spec_id, repr(data_file.partition))
            by_partition.setdefault(key, []).append(data_file)
    groups: list[list[DataFile]] = []
    for files in by_partition.values():
        files.sort(key=lambda f: f.file_path)
        group: list[DataFile] = []
        size = 0
        for data_file in files:
            if group and size + data_file.file_size_in_bytes > target_bytes:
                groups.append(group)
                group, size = [], 0
            group.append(data_file)
            size += data_file.file_size_in_bytes
        groups.append(group)
    return live, [g for g in groups if len(g) >= 2]


def compact_table(
    table: Table,
    *,
    before: datetime.date,
    target_bytes: int,
    rng: random.Random,
    dry_run: bool = False,
    attempts: int = COMMIT_ATTEMPTS,
) -> tuple[Table, CompactionResult]:
    """Rewrite the small files of closed partitions in one commit (module docstring).

    Raises ``CommitConflictError`` when other writers committed first in all ``attempts``.
    """
    table = table.refresh()
    result = CompactionResult(table=".".join(table.name()))
    live, groups = plan(table, before, target_bytes)
    result.files_before = len(live)
    result.rows_before = sum(f.record_count for f in live)
    result.groups = [[f.file_path for f in g] for g in groups]
    result.partitions = len(groups)
    if not groups or dry_run:
        result.files_after, result.rows_after = result.files_before, result.rows_before
        result.skipped = "dry run" if dry_run and groups else (None if groups else "nothing to do")
        return table, result
    started = time.perf_counter()
    removed = [f for g in groups for f in g]
    added: list[DataFile] = []
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    for group in groups:
        rows = scan.to_table([FileScanTask(f) for f in group])
        added.extend(_dataframe_to_data_files(table.metadata, rows, table.io))
    properties = {
        COMPACTION: "true",
        "singer.compaction-before": before.isoformat(),
        "singer.compaction-rewritten-files": str(len(removed)),
    }
    try:
        table, _ = commit_with_retry(
            table,
            lambda tx: stage_snapshot(tx, properties, added, removed),
            rng=rng,
            log=logger,
            stream=result.table,
            attempts=attempts,
        )
    except CommitFailedException as exc:
        # Lost every race. An earlier attempt whose outcome was unknown may have landed after all
        # (then its files are live and the compaction is done); else nobody references them.
        table = table.refresh()
        if not _any_live(table, added):
            for data_file in added:
                table.io.delete(data_file.file_path)
            raise CommitConflictError(result.table, "compaction", attempts) from exc
    except ValidationException as exc:
        for data_file in added:  # never committed: nobody references them
            table.io.delete(data_file.file_path)
        result.skipped = f"concurrent change to the planned files: {exc}"
        log_event(
            logger,
            logging.WARNING,
            "iceberg_compaction_skipped",
            table=result.table,
            reason=result.skipped[:200],
        )
        return table, result
    current = table.current_snapshot()
    result.snapshot_id = current.snapshot_id if current is not None else None
    after = [task.file for task in table.scan().plan_files()]
    result.files_after = len(after)
    result.rows_after = sum(f.record_count for f in after)
    result.rewritten_files = len(removed)
    result.written_files = len(added)
    log_event(
        logger,
        logging.INFO,
        "iceberg_compaction",
        table=result.table,
        partitions=result.partitions,
        files_before=result.files_before,
        files_after=result.files_after,
        rewritten_files=len(removed),
        written_files=len(added),
        rows=result.rows_after,
        snapshot_id=result.snapshot_id,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return table, result


def _any_live(table: Table, data_files: Sequence[DataFile]) -> bool:
    paths = {data_file.file_path for data_file in data_files}
    return any(task.file.file_path in paths for task in table.scan().plan_files())


def _catalog_described(settings: TargetSettings) -> str:
    """The catalog the tables were looked up in, for a message (no URI: it may hold a password)."""
    if settings.iceberg_catalog:
        kind = settings.iceberg_catalog.get("type", "rest")
        warehouse = settings.iceberg_catalog.get("warehouse") or settings.output_dir
        return f"the iceberg_catalog (type {kind}, warehouse {warehouse})"
    return f"the SQLite catalog of output_dir {settings.output_dir}"


def _no_namespace(settings: TargetSettings, streams: Sequence[str], where: str) -> str:
    namespace = ".".join(namespace_of(settings))
    if streams:
        tables = ", ".join(".".join(table_identifier(settings, s)) for s in streams)
        return f"no table {tables}: namespace {namespace} does not exist in {where}"
    return (
        f"namespace {namespace} does not exist in {where}: the target has written no Iceberg "
        "table there yet (or iceberg_namespace/output_dir are not the target's)"
    )


def require_catalog(settings: TargetSettings, streams: Sequence[str]) -> None:
    """``MissingTablesError`` when the embedded catalog does not exist yet (creating nothing)."""
    if settings.iceberg_catalog or "://" in settings.output_dir:
        return  # a configured catalog, or a warehouse URI: the catalog itself answers
    catalog_db = Path(settings.output_dir) / "catalog.db"
    if not catalog_db.exists():
        where = f"output_dir {settings.output_dir} (no catalog.db there)"
        raise MissingTablesError(_no_namespace(settings, streams, where))


def tables_of(catalog: Catalog, settings: TargetSettings, streams: Sequence[str]) -> list[Table]:
    """The tables of ``streams`` (all of the namespace's when none), or ``MissingTablesError``.

    Every table is looked up before any is compacted: one missing table compacts none.
    """
    where = _catalog_described(settings)
    try:
        existing = catalog.list_tables(namespace_of(settings))
    except NoSuchNamespaceError:
        raise MissingTablesError(_no_namespace(settings, streams, where)) from None
    if not streams:
        return [catalog.load_table(identifier) for identifier in existing]
    tables: list[Table] = []
    missing: list[str] = []
    for stream in streams:
        identifier = table_identifier(settings, stream)
        try:
            tables.append(catalog.load_table(identifier))
        except NoSuchTableError:
            missing.append(f"{'.'.join(identifier)} (--stream {stream})")
    if missing:
        names = sorted(".".join(identifier) for identifier in existing)
        listed = ", ".join(names[:_LISTED_TABLES]) or "none"
        if len(names) > _LISTED_TABLES:
            listed += f" and {len(names) - _LISTED_TABLES} more"
        msg = f"no table {', '.join(missing)} in {where} (tables there: {listed})"
        raise MissingTablesError(msg)
    return tables
