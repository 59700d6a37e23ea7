"""Committing to an Iceberg table: one transaction per snapshot, and the one retry loop.

Concurrency. Commits are optimistic: the catalog accepts a commit only on top of the snapshot it
was built on. On ``CommitFailedException`` (another writer committed first) or an unknown outcome
the writer waits a jittered, growing time (``random.Random`` seeded by the run id, so a run's
waits are reproducible from its log), refreshes the table, checks whether its own commit
(``run-id``, ``flush``) landed after all, and re-stages the same data files on the new head;
each retry is an ``iceberg_commit_retry`` event, and it gives up after ``COMMIT_ATTEMPTS``.
pyiceberg's own retry inside ``commit_transaction`` is not used (the producer is staged without
registering for it): one loop, ours, with the landed check and the log events.

Manifests. An append that adds one manifest per commit makes every later commit and every
reader's planning read one more manifest, forever: a target flushing every few seconds lists
thousands. So appends are merge appends: they merge manifests when the table's
``commit.manifest-merge.enabled`` is true (``MANIFEST_TABLE_PROPERTIES``; Java Iceberg's
default, pyiceberg's is false), once there are ``commit.manifest.min-count-to-merge`` (100) of them.
A table whose owner set it false keeps one manifest per commit.

Bounded per commit. With Iceberg's default ``commit.manifest.target-size-bytes`` (8 MiB) every
merge rewrites one manifest holding every data file of the table (about 40,000 of them before it
reaches 8 MiB): each merge read and decoded all of them at once (about 3 KB of Python objects
each), so a writer's peak memory, and the RSS a long run kept from it, grew with every appended
file, as did the time of a merge. ``MANIFEST_TARGET_BYTES`` caps what one merge reads; a full
manifest is left as it is and the table gains one manifest per that many bytes of entries.
And pyiceberg writes a new metadata file at every commit and deletes none unless
``write.metadata.delete-after-commit.enabled``: one file per commit (each listing every kept
snapshot) forever; with it, the newest ``write.metadata.previous-versions-max`` (100) stay.

``MANIFEST_TABLE_PROPERTIES`` is set on every table the target creates, and on an existing table
each one it does not have yet (``StreamTable``): a value the table's owner set is kept.
"""

from __future__ import annotations

import importlib
import logging
import random
import time
import typing as t
from collections.abc import Callable

from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import UpdateTableMetadata

from plugin_io.log_events import log_event

__all__ = [
    "COMMIT_ATTEMPTS",
    "MANIFEST_TABLE_PROPERTIES",
    "MANIFEST_TARGET_BYTES",
    "CommitConflictError",
    "commit_with_retry",
    "module_errors",
    "new_transaction",
    "retryable_commit_errors",
    "sqlalchemy_errors",
    "stage_snapshot",
]

COMMIT_ATTEMPTS = 12
# What one manifest merge may rewrite (see "Bounded per commit" above): about 1,300 entries of a
# narrow table's manifest, a few MB of Python objects while merging.
MANIFEST_TARGET_BYTES = 256 * 1024
# Set on the tables the target creates, and when missing on the tables it writes (see above).
MANIFEST_TABLE_PROPERTIES = {
    TableProperties.MANIFEST_MERGE_ENABLED: "true",
    TableProperties.MANIFEST_TARGET_SIZE_BYTES: str(MANIFEST_TARGET_BYTES),
    TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true",
}
_RETRY_BASE_SECONDS = 0.02
_RETRY_CAP_SECONDS = 2.0


class CommitConflictError(Exception):
    """Other writers committed first in every attempt: this step of ``table`` did not commit."""

    def __init__(self, table: str, step: t.Literal["compaction", "expiry"], attempts: int) -> None:
        super().__init__(f"{table}: {step} lost the commit race in all {attempts} attempts")
        self.table = table
        self.step = step
        self.attempts = attempts


def sqlalchemy_errors(*names: str) -> tuple[type[BaseException], ...]:
    """These ``sqlalchemy.exc`` classes, when the SQL catalog's extra is installed (else none)."""
    return module_errors("sqlalchemy.exc", *names)


def module_errors(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """These exception classes of an optional module (none when it is not installed)."""
    try:
        loaded = importlib.import_module(module)
    except ImportError:  # pragma: no cover - optional dependency missing
        return ()
    return tuple(getattr(loaded, name) for name in names)


class _CachingTransaction(Transaction):
    """A transaction that builds its staged table metadata once per staged state.

    pyiceberg 0.12 rebuilds (deep-copies) the whole table metadata on every read of
    ``Transaction.table_metadata``, about fifteen times per append, each O(snapshots): a table
    with a few hundred snapshots spent most of a flush copying. The metadata models are frozen,
    so one copy per (base metadata, staged updates) pair is enough.
    """

    _cache: tuple[object, object, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        """The metadata with the staged updates applied (cached)."""
        cache = self._cache
        if cache is None or cache[0] is not self._table.metadata or cache[1] is not self._updates:
            cache = (self._table.metadata, self._updates, super().table_metadata)
            self._cache = cache
        return cache[2]


def new_transaction(table: Table) -> Transaction:
    """A transaction on ``table`` (with the metadata cache above)."""
    return _CachingTransaction(table)


def stage_snapshot(
    transaction: Transaction,
    properties: dict[str, str],
    added: t.Sequence[t.Any] = (),
    deleted: t.Sequence[t.Any] = (),
) -> None:
    """Stage one snapshot adding (and for compaction deleting) data files, in one transaction.

    The producer is applied without registering it for pyiceberg's internal commit retry:
    ``commit_with_retry`` is the only retry loop.
    """
    update = transaction.update_snapshot(snapshot_properties=properties)
    # merge_append merges only when the table's commit.manifest-merge.enabled is true
    producer: t.Any = update.overwrite() if deleted else update.merge_append()
    for data_file in deleted:
        producer.delete_data_file(data_file)
    for data_file in added:
        producer.append_data_file(data_file)
    UpdateTableMetadata.commit(producer)


def retryable_commit_errors() -> tuple[type[BaseException], ...]:
    # OperationalError: SQLite's "database is locked"
    return (
        CommitFailedException,
        CommitStateUnknownException,
        *sqlalchemy_errors("OperationalError"),
    )


def commit_with_retry(
    table: Table,
    stage: Callable[[Transaction], None],
    *,
    rng: random.Random,
    log: logging.Logger,
    stream: str,
    landed: Callable[[Table], Snapshot | None] | None = None,
    attempts: int = COMMIT_ATTEMPTS,
) -> tuple[Table, int]:
    """Stage and commit until the catalog accepts it; return (table, attempts used).

    ``stage`` builds the changes on a fresh transaction of the refreshed table each attempt.
    ``landed`` recognises an earlier attempt that the catalog applied although it reported an
    error (then nothing is committed again).
    """
    retryable = retryable_commit_errors()
    for attempt in range(1, attempts + 1):
        transaction = new_transaction(table)
        stage(transaction)
        try:
            transaction.commit_transaction()
        except retryable as exc:
            if attempt == attempts:
                raise
            wait = rng.uniform(0, min(_RETRY_CAP_SECONDS, _RETRY_BASE_SECONDS * 2**attempt))
            log_event(
                log,
                logging.WARNING,
                "iceberg_commit_retry",
                stream=stream,
                table=".".join(table.name()),
                attempt=attempt,
                wait_ms=round(wait * 1000, 1),
                reason=type(exc).__name__,
                error=str(exc)[:200],
            )
            time.sleep(wait)
            table = table.refresh()
            if landed is not None and landed(table) is not None:
                return table, attempt
            continue
        return table, attempt
    raise AssertionError("unreachable")  # pragma: no cover
