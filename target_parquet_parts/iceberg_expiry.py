"""Snapshot expiry: drop old snapshots and delete the files only they referenced.

Two callers. ``target-parquet-parts-compact`` expires after compacting (``--retain-hours``).
The target itself, when ``iceberg_snapshot_retention_hours`` is set, expires the tables it writes
while it runs (``RunningExpiry``): every commit adds a snapshot, the table's metadata lists every
snapshot, and a writer holds and rewrites that metadata at each commit. A long run committing
every few seconds would grow in memory and slow down with every commit; with a retention it
keeps about (commits per hour x hours) snapshots, however long it runs.

Never expired: the current snapshot and the pending snapshots of unfinished runs (the exactly-once
bookkeeping still needs them, ``iceberg_ledger.pending_snapshot_ids``). Deleted: manifest lists,
manifests and data files that no kept snapshot references (live entries only: a compaction's DELETED
entry keeps nothing alive). Readers that started on a snapshot older than the retention may fail to
read it: keep the retention longer than the longest query.
"""

from __future__ import annotations

import logging
import random
import time
import typing as t
from collections.abc import Callable, Iterable, Iterator, Sequence

from pyiceberg.avro.file import AvroFile
from pyiceberg.manifest import (
    DEFAULT_READ_VERSION,
    MANIFEST_ENTRY_SCHEMAS,
    ManifestEntryStatus,
    ManifestFile,
)
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update.snapshot import ExpireSnapshots
from pyiceberg.typedef import Record

from plugin_io.log_events import log_event
from target_parquet_parts.iceberg_commits import (
    COMMIT_ATTEMPTS,
    CommitConflictError,
    commit_with_retry,
    retryable_commit_errors,
)
from target_parquet_parts.iceberg_ledger import pending_snapshot_ids

__all__ = ["RunningExpiry", "expire_table"]

logger = logging.getLogger("target_parquet_parts.iceberg_expiry")

# In a run, expiry is tried at most every quarter of the retention (a table keeps at most about
# 1.25 x the retention's snapshots), and at least every 15 minutes; never more than once a second.
_MAX_INTERVAL_SECONDS = 900.0
_MIN_INTERVAL_SECONDS = 1.0


# Manifest entries are read as plain records in pyiceberg's own read schema (the one
# ``fetch_manifest_entry`` uses, for every format version): the positions of what the cleanup needs.
_ENTRY_SCHEMA = MANIFEST_ENTRY_SCHEMAS[DEFAULT_READ_VERSION]
_STATUS = _ENTRY_SCHEMA.fields.index(_ENTRY_SCHEMA.find_field(0))
_DATA_FILE = _ENTRY_SCHEMA.fields.index(_ENTRY_SCHEMA.find_field(2))
_FILE_PATH = [f.field_id for f in _ENTRY_SCHEMA.find_type(2).fields].index(100)  # type: ignore[attr-defined]
_DELETED = ManifestEntryStatus.DELETED.value


def _live_paths(table: Table, manifest: ManifestFile) -> Iterator[str]:
    """The data file paths of ``manifest``'s live entries, one entry decoded at a time.

    Live entries only: a DELETED entry (a compaction's record of the files it replaced) is not
    read by anyone reading that snapshot, so it must not keep the file alive.
    """
    with AvroFile[Record](table.io.new_input(manifest.manifest_path), _ENTRY_SCHEMA) as reader:
        for entry in reader:
            if entry[_STATUS] != _DELETED:
                yield entry[_DATA_FILE][_FILE_PATH]


def _manifests_of(table: Table, snapshots: Iterable[Snapshot]) -> dict[str, ManifestFile]:
    """Every manifest the snapshots reference, by path (first seen first)."""
    manifests: dict[str, ManifestFile] = {}
    for snapshot in snapshots:
        for manifest in snapshot.manifests(table.io):
            manifests.setdefault(manifest.manifest_path, manifest)
    return manifests


def _unreferenced(table: Table, kept: Sequence[Snapshot], expired: Sequence[Snapshot]) -> set[str]:
    """The manifest lists, manifests and data files the expired snapshots referenced and no kept
    snapshot does.

    Only a manifest no kept snapshot references can hold such a data file: its live entries
    are the candidates, and the kept manifests are then streamed, the current snapshot's first,
    only until every candidate was found live in one of them (nothing is read when no manifest
    became unreferenced). Memory: the candidates, not the table. Building the set of every
    path of every kept snapshot instead held every live entry of the table, fully decoded, at
    each expiry: a peak that grew with every appended file (about 3 KB each; the long-running
    writer's RSS followed it), and a time that grew with it too.
    """
    current = table.current_snapshot()
    order = sorted(kept, key=lambda s: current is None or s.snapshot_id != current.snapshot_id)
    kept_manifests = _manifests_of(table, order)
    gone_manifests = {
        path: manifest
        for path, manifest in _manifests_of(table, expired).items()
        if path not in kept_manifests
    }
    candidates: set[str] = set()
    for manifest in gone_manifests.values():
        candidates.update(_live_paths(table, manifest))
    for manifest in kept_manifests.values():
        if not candidates:
            break
        candidates.difference_update(_live_paths(table, manifest))
    kept_lists = {s.manifest_list for s in kept}
    lists = {s.manifest_list for s in expired if s.manifest_list not in kept_lists}
    return lists | set(gone_manifests) | candidates


def expire_table(
    table: Table,
    *,
    retain_hours: float,
    rng: random.Random,
    now_ms: int | None = None,
    attempts: int = COMMIT_ATTEMPTS,
) -> tuple[Table, int, int]:
    """Expire old snapshots and delete what only they referenced; (table, expired, deleted).

    Raises ``CommitConflictError`` when other writers committed first in all ``attempts``.
    """
    table = table.refresh()
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    cutoff = now_ms - int(retain_hours * 3600 * 1000)
    current = table.current_snapshot()
    protected = set(pending_snapshot_ids(table.metadata.snapshots))
    if current is not None:
        protected.add(current.snapshot_id)
    expired = [
        s.snapshot_id
        for s in table.metadata.snapshots
        if s.timestamp_ms < cutoff and s.snapshot_id not in protected
    ]
    if not expired:
        return table, 0, 0
    before = {s.snapshot_id: s for s in table.metadata.snapshots}

    def stage(transaction: t.Any) -> None:
        ExpireSnapshots(transaction).by_ids(
            [i for i in expired if transaction.table_metadata.snapshot_by_id(i) is not None]
        ).commit()

    name = ".".join(table.name())
    try:
        table, _ = commit_with_retry(
            table, stage, rng=rng, log=logger, stream=name, attempts=attempts
        )
    except retryable_commit_errors() as exc:
        raise CommitConflictError(name, "expiry", attempts) from exc
    gone = _unreferenced(table, table.metadata.snapshots, [before[i] for i in expired])
    deleted = 0
    for path in sorted(gone):
        try:
            table.io.delete(path)
        except FileNotFoundError:
            continue
        deleted += 1
    log_event(
        logger,
        logging.INFO,
        "iceberg_snapshots_expired",
        table=".".join(table.name()),
        expired=len(expired),
        deleted_files=deleted,
        retain_hours=retain_hours,
    )
    return table, len(expired), deleted


class RunningExpiry:
    """The target's in-run expiry of one table: ``due()`` after each commit, then ``expire``.

    An expiry that fails (other writers won every commit attempt, a file that cannot be deleted)
    is a WARNING, not a failed flush: the data and its STATE are already committed, and the next
    interval tries again.
    """

    def __init__(
        self,
        retain_hours: float,
        *,
        rng: random.Random,
        stream: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retain_hours = retain_hours
        self.interval = min(
            _MAX_INTERVAL_SECONDS, max(_MIN_INTERVAL_SECONDS, retain_hours * 3600 / 4)
        )
        self._rng = rng
        self._stream = stream
        self._clock = clock
        self._next_due = clock()  # the first commit of a run trims what earlier runs left

    def after_commit(self, table: Table) -> Table:
        """Expire ``table``'s old snapshots when an interval has passed; the (refreshed) table."""
        now = self._clock()
        if now < self._next_due:
            return table
        self._next_due = now + self.interval
        try:
            table, _, _ = expire_table(table, retain_hours=self.retain_hours, rng=self._rng)
        except Exception as exc:  # maintenance: the committed data stays, the run goes on
            logger.debug("snapshot expiry failed", exc_info=True)
            log_event(
                logger,
                logging.WARNING,
                "iceberg_expiry_failed",
                stream=self._stream,
                table=".".join(table.name()),
                error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                next_try_seconds=round(self.interval, 1),
            )
        return table
