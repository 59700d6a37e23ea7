"""Exactly-once bookkeeping for Iceberg tables, kept in the table's own snapshot history.

No side journal: every commit the target makes carries, in its snapshot summary,

* ``singer.run-id``: the writing process's random run id;
* ``singer.flush``: the commit's number within that run and table (1, 2, ...);
* ``singer.state-index``: how many STATE messages the target had received when the batch was
  flushed (every record in the batch arrived before STATE number ``state-index + 1``);
* ``singer.states-emitted``: the index of the newest STATE the target had written to stdout
  when it committed (0: none yet).

and, at the end of a run that committed (the final STATE written), an end marker: a snapshot with
no data files whose summary has ``singer.run-end`` = ``complete`` or ``open``, plus the final
``singer.states-emitted``. ``complete`` only when the input ended without a stop signal and
either no record arrived after the final STATE (a rerun re-sends nothing of this run) or no run
of the table ever emitted a STATE (``ever_stateful``: a stateless tap, each run a new full sync;
kept as the table property ``singer.stateful`` too, which outlives expired snapshots).
A run cancelled at any moment, or whose tap died before its first STATE, ends ``open``: the next
resume, from the last STATE an earlier run emitted, sends its rows again.

Why that is enough. The orchestrator restarts the tap from the last STATE the target emitted, so
after a crash exactly the records that came after that STATE are sent again. A batch committed
with ``state-index < m`` holds only records that arrived before STATE ``m``; once STATE ``m`` was
emitted none of them can come back. So the rows a rerun may see again are, per run ``R`` that has
no ``complete`` end marker, the rows added by R's commits with ``state-index >= covered(R)``, where
``covered(R)`` is the largest ``states-emitted`` R recorded (a STATE emitted after R's last commit
is not recorded; using the smaller number only loads more rows, never fewer). Those commits are
R's *pending* snapshots.

On its first flush to a table, a run reads the rows its pending snapshots added (the data files
each pending snapshot added, read directly, so a later compaction that rewrote them into other
files changes nothing) into a replay set: per row an identity (the key properties, joined) and a
128-bit digest of the whole row content. A re-delivered record is dropped when its identity AND
digest match a replay row: an unchanged record that is already in the table. A newer version of
an entity (same key, other content) is not in the replay set and lands. Streams with keys: a match
drops every copy (two identical records with one key are one record). Streams without key
properties: the identity is the row's scalar columns and the replay set is a multiset; each replay
row absorbs one re-delivered copy, so a stream that really sends the same row twice keeps the
second copy (exactly once as long as the tap re-sends the same records after the same STATE).

Bounds. Memory and reading are bounded by the rows written after the last recorded emitted STATE
of the runs that did not end complete, usually a few batches. Concurrent writers' in-flight runs
look like unfinished runs too: their pending rows are loaded as well, which is harmless (a row
only drops a record identical to a row already in the table) and bounded the same way. A run that
crashed and is never rerun stays in the candidates: snapshot expiry never removes pending
snapshots (``pending_snapshot_ids``), so a late rerun is still caught.

Crash points (``kill -9``): before the catalog commit, the data files written are unreferenced
(no reader sees them; the records come again and are written anew); after the commit, before the
STATE, the snapshot is pending and the re-sent rows are dropped; after the STATE, before the end
marker, the run looks unfinished and its last rows are loaded needlessly on the next start. An
ambiguous commit (the catalog applied it but the answer was lost) is recognised on retry by the
snapshot's ``(run-id, flush)`` and not committed twice.

Limits: a record whose content changed between the crash and the rerun (a new column filled by a
SCHEMA change, a source edit) is a new version and lands next to the old one; rows deleted from the
table by someone else still absorb their re-delivered copies.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import FileScanTask
from singer_sdk.contrib.msgspec import encoder as _json_encoder

from target_parquet_parts.journal import key_strings

if TYPE_CHECKING:
    from pyiceberg.table import Table, Transaction
    from pyiceberg.table.metadata import TableMetadata
    from pyiceberg.table.snapshots import Snapshot

__all__ = [
    "RUN_END",
    "RUN_ID",
    "ReplaySet",
    "commit_properties",
    "end_properties",
    "ever_stateful",
    "find_commit",
    "mark_stateful",
    "normalize",
    "pending_snapshot_ids",
]

logger = logging.getLogger(__name__)

RUN_ID = "singer.run-id"
FLUSH = "singer.flush"
STATE_INDEX = "singer.state-index"
STATES_EMITTED = "singer.states-emitted"
RUN_END = "singer.run-end"
COMPACTION = "singer.compaction"
# Table property, set by the first commit made after a STATE was emitted: snapshot expiry may
# remove every snapshot that recorded one, the property stays.
STATEFUL = "singer.stateful"


def commit_properties(
    run_id: str, flush: int, state_index: int, states_emitted: int
) -> dict[str, str]:
    """The summary properties of one flush's commit."""
    return {
        RUN_ID: run_id,
        FLUSH: str(flush),
        STATE_INDEX: str(state_index),
        STATES_EMITTED: str(states_emitted),
    }


def end_properties(run_id: str, states_emitted: int, *, complete: bool) -> dict[str, str]:
    """The summary properties of a run's end marker."""
    return {
        RUN_ID: run_id,
        RUN_END: "complete" if complete else "open",
        STATES_EMITTED: str(states_emitted),
    }


def _prop(snapshot: Snapshot, name: str) -> str | None:
    summary = snapshot.summary
    if summary is None:
        return None
    return summary.additional_properties.get(name)


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def ever_stateful(metadata: TableMetadata) -> bool:
    """A run of this table emitted a STATE at some time: its input comes from a stateful tap.

    The table property, or (tables written before it existed) a snapshot that recorded one.
    """
    if metadata.properties.get(STATEFUL) == "true":
        return True
    return any(_int(_prop(snapshot, STATES_EMITTED)) > 0 for snapshot in metadata.snapshots)


def mark_stateful(transaction: Transaction, states_emitted: int) -> None:
    """Stage the ``STATEFUL`` table property with a commit made after a STATE was emitted."""
    if states_emitted > 0 and transaction.table_metadata.properties.get(STATEFUL) != "true":
        transaction.set_properties({STATEFUL: "true"})


def find_commit(snapshots: Iterable[Snapshot], run_id: str, flush: int) -> Snapshot | None:
    """This run's commit number ``flush``, if it landed (a retry after an unknown outcome)."""
    wanted = str(flush)
    for snapshot in snapshots:
        if _prop(snapshot, RUN_ID) == run_id and _prop(snapshot, FLUSH) == wanted:
            return snapshot
    return None


def pending_snapshot_ids(
    snapshots: Iterable[Snapshot], exclude_run: str | None = None
) -> list[int]:
    """Snapshots whose rows a rerun may receive again (see the module docstring)."""
    runs: dict[str, list[Snapshot]] = {}
    for snapshot in snapshots:
        run = _prop(snapshot, RUN_ID)
        if run and run != exclude_run:
            runs.setdefault(run, []).append(snapshot)
    pending: list[int] = []
    for members in runs.values():
        if any(_prop(s, RUN_END) == "complete" for s in members):
            continue
        covered = max(_int(_prop(s, STATES_EMITTED)) for s in members)
        pending.extend(
            s.snapshot_id
            for s in members
            if _prop(s, FLUSH) is not None and _int(_prop(s, STATE_INDEX)) >= covered
        )
    return pending


def added_data_files(table: Table, snapshot_ids: Sequence[int]) -> list[Any]:
    """The data files each of ``snapshot_ids`` added (from its own manifests)."""
    files = []
    for snapshot_id in snapshot_ids:
        snapshot = table.metadata.snapshot_by_id(snapshot_id)
        if snapshot is None:
            continue
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                if entry.status == ManifestEntryStatus.ADDED and entry.snapshot_id == snapshot_id:
                    files.append(entry.data_file)
    return files


def read_rows(table: Table, data_files: Sequence[Any]) -> pa.Table:
    """The rows of ``data_files`` in the table's current schema (a scan restricted to them)."""
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    return scan.to_table([FileScanTask(f) for f in data_files])


def normalize(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the columns and types of ``schema`` (missing columns: nulls)."""
    columns = []
    for field_ in schema:
        if field_.name in table.column_names:
            column = table.column(field_.name)
            if column.type != field_.type:
                try:
                    column = column.cast(field_.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    # The column changed type since: its old rows cannot match new ones.
                    column = pa.nulls(table.num_rows, field_.type)
            columns.append(column)
        else:
            columns.append(pa.nulls(table.num_rows, field_.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _identity_columns(schema: pa.Schema, keys: Sequence[str]) -> list[str]:
    if keys:
        return list(keys)
    return [
        f.name for f in schema if not (pa.types.is_nested(f.type) or pa.types.is_dictionary(f.type))
    ]


def _identities(table: pa.Table, columns: list[str]) -> pa.Array:
    if not columns:
        return pa.array([""] * table.num_rows, pa.string())
    joined = key_strings(table, columns)
    if joined is None:  # pragma: no cover - columns come from the same schema
        msg = f"identity columns {columns} missing"
        raise ValueError(msg)
    return pc.fill_null(joined, "\x00")


def _digests(table: pa.Table) -> list[bytes]:
    return [
        hashlib.blake2b(_json_encoder.encode(row), digest_size=16).digest()
        for row in table.to_pylist()
    ]


@dataclass
class _Prepared:
    identities: pa.Array
    keyed: set[tuple[str, bytes]] = field(default_factory=set)
    counts: Counter[tuple[str, bytes]] = field(default_factory=Counter)


class ReplaySet:
    """Rows of pending snapshots; drops the re-delivered copies of them from new batches."""

    def __init__(self, rows: pa.Table, keys: Sequence[str]) -> None:
        self.rows = rows
        self.keys = list(keys)
        self._prepared: dict[pa.Schema, _Prepared] = {}

    def __len__(self) -> int:
        return self.rows.num_rows

    def _prepare(self, schema: pa.Schema) -> _Prepared:
        prepared = self._prepared.get(schema)
        if prepared is None:
            stored = normalize(self.rows, schema)
            columns = _identity_columns(schema, self.keys)
            identities = _identities(stored, columns)
            pairs = list(zip(identities.to_pylist(), _digests(stored), strict=True))
            prepared = _Prepared(pc.unique(identities))
            if self.keys:
                prepared.keyed = set(pairs)
            else:
                prepared.counts = Counter(pairs)
            self._prepared[schema] = prepared
        return prepared

    def drop_replayed(self, batch: pa.Table) -> tuple[pa.Table, int]:
        """Remove the rows of ``batch`` that are already in the table; (rest, dropped)."""
        if not self.rows.num_rows or not batch.num_rows:
            return batch, 0
        prepared = self._prepare(batch.schema)
        if not self.keys and not prepared.counts:
            return batch, 0  # every replay row was absorbed already
        identities = _identities(batch, _identity_columns(batch.schema, self.keys))
        candidates = pc.indices_nonzero(pc.is_in(identities, value_set=prepared.identities))
        if not len(candidates):
            return batch, 0
        subset = batch.take(candidates)
        drop: list[int] = []
        rows = zip(
            candidates.to_pylist(),
            identities.take(candidates).to_pylist(),
            _digests(subset),
            strict=True,
        )
        for position, identity, digest in rows:
            pair = (identity, digest)
            if self.keys:
                if pair in prepared.keyed:
                    drop.append(position)
            elif prepared.counts.get(pair, 0) > 0:
                prepared.counts[pair] -= 1
                drop.append(position)
        if not drop:
            return batch, 0
        keep = pc.invert(
            pc.is_in(
                pa.array(range(batch.num_rows), pa.int64()), value_set=pa.array(drop, pa.int64())
            )
        )
        return batch.filter(keep), len(drop)


def load_replay_set(table: Table, run_id: str, keys: Sequence[str]) -> ReplaySet | None:
    """The replay set of ``table`` for a run (None when no snapshot is pending)."""
    pending = pending_snapshot_ids(table.metadata.snapshots, exclude_run=run_id)
    if not pending:
        return None
    files = added_data_files(table, pending)
    if not files:
        return None
    rows = read_rows(table, files)
    return ReplaySet(rows, keys)
