"""Exactly-once journal: the parts written after the last STATE the target emitted.

On disk it lives at ``{output_dir}/_journal/journal.jsonl`` (``_``-prefixed: pyarrow, Spark and
``*.parquet`` globs ignore it); on object storage it is one small object per entry under
``{output_dir}/_journal/`` (``objectstore.py``: the same lifecycle, kept in the bucket). One JSON
line per part: its path relative to ``output_dir``, the stream, the stream's key properties,
``state_index`` (how many STATE messages the target had received when the part was written) and
the run id. The run lock (``lock.py``, on ``_journal/lock``) makes this run the only writer of
``output_dir``; every run takes it, with or without key properties. The journal's files are
opened without following symbolic links, and a journaled path that leads outside ``output_dir``
is ignored.

Lifecycle:

* A flush appends the entry and fsyncs the journal **before** the part is renamed into place.
* When STATE number ``m`` is emitted, the entries of this run with ``state_index < m`` are
  covered (every record in them arrived before that STATE): a ``{"covered": m, "run": ...}``
  line is appended (no fsync needed: losing it only keeps covered keys a little longer, and
  those keys only ever drop records that really are in a part). Once the file has grown past
  ``COMPACT_AFTER_LINES`` it is rewritten with the live entries only (temp file, fsync,
  ``os.replace``, directory fsync).
* On start, entries left by an earlier run describe parts holding records *after* the last STATE
  that run emitted. The orchestrator restarts the tap from that STATE, so those records come
  again: their keys are read back from the parts (key columns only) and re-delivered records with
  those keys are dropped at flush (columnar ``is_in``), logged as ``journal_duplicates_dropped``.
  Memory is bounded by the rows written after one STATE, not by the input.
* These inherited entries stay until this run ends cleanly with no record after its last STATE
  (or the tap sent no STATE at all, so there is nothing to resume): then the journal is emptied.

Crash points (``kill -9`` at any instant):

1. While the temporary file is written or fsynced: no journal entry, no part; the records are
   re-delivered and written. The hidden temp file is removed by the next run that writes there.
2. After the journal entry, before the rename: the entry names a part that does not exist; it
   contributes no keys. The records are re-delivered and written.
3. After the rename, before the STATE is emitted: the part exists and is in the journal; the
   re-delivered records are dropped.
4. After the STATE is written to stdout, before the ``covered`` line: the entries stay
   (harmless: their keys only drop records that really are in a part already).
5. During a journal append: a torn last line is ignored on load (and the journal rewritten
   without it); its part was not renamed yet (the rename happens after the append's fsync), so
   nothing is lost.
6. During a journal rewrite: ``os.replace`` is atomic; either the old or the new journal is seen.

Streams without key properties are at least once across crashes: nothing identifies a
re-delivered record, so they are not journaled.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import typing as t
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from logfmt_events import log_event
from target_parquet_parts.lock import OutputDirInUseError
from target_parquet_parts.naming import JOURNAL_DIR, open_no_follow, resolve_inside
from target_parquet_parts.parts import fsync_dir

if t.TYPE_CHECKING:
    from target_parquet_parts.storage import RunLockLike, Storage

__all__ = [
    "Journal",
    "JournalEntry",
    "JournalLog",
    "LocalJournalLog",
    "OutputDirInUseError",
    "key_strings",
]

logger = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"
_KEY_SEP = "\x1f"
COMPACT_AFTER_LINES = 1000


@dataclass(frozen=True)
class JournalEntry:
    """One part written after the last emitted STATE."""

    part: str
    stream: str
    keys: list[str]
    state_index: int
    run: str


def key_strings(table: pa.Table, keys: list[str]) -> pa.Array | None:
    """One string per row identifying its key (None if the table lacks a key column)."""
    if not keys or any(k not in table.column_names for k in keys):
        return None
    columns = []
    for key in keys:
        column = table.column(key)
        if not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        columns.append(column)
    if len(columns) == 1:
        joined = columns[0]
    else:
        joined = pc.binary_join_element_wise(
            *columns, _KEY_SEP, null_handling="replace", null_replacement="\x00"
        )
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    return joined


class JournalLog(t.Protocol):
    """Where the entries are kept: a file on disk, or objects in a bucket.

    Called under the journal's lock (one call at a time).
    """

    def load(self) -> list[JournalEntry]:
        """The live entries left by earlier runs (covered ones already removed)."""
        ...

    def append(self, entry: JournalEntry) -> None:
        """Add an entry durably: it survives ``kill -9`` and a power cut once this returns."""
        ...

    def covered(self, run: str, state_index: int, keep: list[JournalEntry]) -> None:
        """Entries of ``run`` below ``state_index`` are covered; ``keep`` are the live ones."""
        ...

    def clear(self) -> None:
        """Forget every entry (end of a clean run with nothing to resume)."""
        ...

    def close(self) -> None:
        """Release handles (idempotent)."""
        ...


class LocalJournalLog:
    """``_journal/journal.jsonl``: one JSON line per entry, ``covered`` lines, compaction."""

    def __init__(self, output_dir: Path) -> None:
        self.directory = resolve_inside(output_dir, JOURNAL_DIR)
        self.path = self.directory / JOURNAL_FILE
        self._lines = 0
        self._append_fd: int | None = None

    def load(self) -> list[JournalEntry]:
        torn = False
        try:
            fd = open_no_follow(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        with open(fd, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        entries: list[JournalEntry] = []
        self._lines = len(lines)
        for line in lines:
            try:
                data = json.loads(line)
                if "covered" in data:
                    entries = [
                        e
                        for e in entries
                        if e.run != data["run"] or e.state_index >= data["covered"]
                    ]
                else:
                    entries.append(JournalEntry(**data))
            except (ValueError, TypeError, KeyError):
                logger.warning("ignoring a torn journal line in %s", self.path)
                torn = True
        if torn:
            # Rewrite without the torn line, or the next append would be glued onto it.
            self._rewrite(entries)
        return entries

    def append(self, entry: JournalEntry) -> None:
        self._append(asdict(entry), sync=True)

    def covered(self, run: str, state_index: int, keep: list[JournalEntry]) -> None:
        if self._lines >= COMPACT_AFTER_LINES:
            self._rewrite(keep)
        else:
            # No fsync: losing this line only keeps covered keys a little longer.
            self._append({"covered": state_index, "run": run}, sync=False)

    def clear(self) -> None:
        if self._lines:
            self._rewrite([])

    def close(self) -> None:
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None

    def _append(self, data: dict, *, sync: bool) -> None:
        line = (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")
        if self._append_fd is None:
            self._append_fd = open_no_follow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            fsync_dir(self.directory)
        os.write(self._append_fd, line)
        if sync:
            os.fdatasync(self._append_fd)
        self._lines += 1

    def _rewrite(self, entries: list[JournalEntry]) -> None:
        self.close()
        temp = self.directory / (JOURNAL_FILE + ".tmp")
        data = "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in entries)
        fd = open_no_follow(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        fsync_dir(self.directory)
        self._lines = len(entries)


class Journal:
    """The journal of one ``output_dir`` (thread-safe; sinks flush in parallel)."""

    def __init__(
        self, output: Path | Storage, run_id: str, run_lock: RunLockLike | None = None
    ) -> None:
        """Open output_dir's journal, under ``run_lock`` (taken here when not given).

        ``output`` is a local directory or a ``storage.Storage`` (local or object storage).
        """
        from target_parquet_parts.storage import LocalStorage  # noqa: PLC0415  (storage imports this module)

        self.storage = LocalStorage(output) if isinstance(output, Path) else output
        self.output_dir = self.storage.display
        self.run_id = run_id
        self._own_run_lock = run_lock is None
        self._run_lock = run_lock or self.storage.lock(run_id)
        self._lock = threading.Lock()
        self._log: JournalLog | None = None
        try:
            self._log = self.storage.journal_log()
            self._entries = self._log.load()
            self._replay = self._load_replay_keys()
        except BaseException:
            self.close()  # a journal that cannot be loaded must not keep output_dir locked
            raise

    # -- loading -------------------------------------------------------------------------
    def _load_replay_keys(self) -> dict[str, pa.Array]:
        per_stream: dict[str, list[pa.Array]] = {}
        for entry in self._entries:
            if not entry.keys:
                continue
            table = self.storage.read_part_columns(entry.part, entry.keys)
            if table is None:
                continue
            keys = key_strings(table, entry.keys)
            if keys is not None:
                per_stream.setdefault(entry.stream, []).append(keys)
        replay = {s: pa.concat_arrays(arrays) for s, arrays in per_stream.items()}
        for stream, keys in replay.items():
            log_event(
                logger,
                logging.INFO,
                "journal_loaded",
                stream=stream,
                parts=sum(1 for e in self._entries if e.stream == stream),
                keys=len(keys),
            )
        return replay

    # -- use -----------------------------------------------------------------------------
    @property
    def entries(self) -> list[JournalEntry]:
        """A copy of the current entries."""
        with self._lock:
            return list(self._entries)

    def replay_keys(self, stream: str) -> pa.Array | None:
        """Keys of records of ``stream`` already in parts written after the last STATE."""
        return self._replay.get(stream)

    def drop_replayed(self, stream: str, table: pa.Table, keys: list[str]) -> tuple[pa.Table, int]:
        """Remove rows whose key is already in a journaled part; return (table, dropped)."""
        replay = self._replay.get(stream)
        if replay is None or not keys:
            return table, 0
        row_keys = key_strings(table, keys)
        if row_keys is None:
            return table, 0
        seen = pc.is_in(row_keys, value_set=replay)
        dropped = pc.sum(seen).as_py() or 0
        if dropped:
            table = table.filter(pc.invert(seen))
        return table, dropped

    def record(self, stream: str, part: Path | str, keys: list[str], state_index: int) -> None:
        """Durably add a part (called before the part is published).

        ``part``: its path relative to output_dir (``events/part-....parquet``), or a local
        path under output_dir.
        """
        entry = JournalEntry(
            part=self.storage.relative(part),
            stream=stream,
            keys=list(keys),
            state_index=state_index,
            run=self.run_id,
        )
        with self._lock:
            assert self._log is not None
            self._log.append(entry)
            self._entries.append(entry)

    def covered(self, state_index: int) -> None:
        """STATE number ``state_index`` was emitted: forget this run's parts it covers."""
        with self._lock:
            keep = [
                e for e in self._entries if e.run != self.run_id or e.state_index >= state_index
            ]
            if len(keep) == len(self._entries):
                return
            assert self._log is not None
            self._log.covered(self.run_id, state_index, keep)
            self._entries = keep

    def finish(self, *, clear: bool) -> None:
        """End of a clean run: empty the journal if nothing is left to resume, then unlock."""
        with self._lock:
            if clear and self._log is not None:
                self._log.clear()
                self._entries = []
        self.close()

    def close(self) -> None:
        """Release the file handles and the run lock."""
        with self._lock:
            if self._log is not None:
                self._log.close()
            if self._own_run_lock:
                self._run_lock.release()
