"""Exactly-once journal: the parts written after the last STATE the target emitted.

Lives at ``{output_dir}/_journal/journal.jsonl`` (``_``-prefixed: pyarrow, Spark and ``*.parquet``
globs ignore it). One JSON line per part: its path relative to ``output_dir``, the stream, the
stream's key properties, ``state_index`` (how many STATE messages the target had received when the
part was written) and the run id. A run lock (``fcntl.lockf`` on ``_journal/lock``) makes this run
the only writer of ``output_dir``.

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
  again: the parts are read back, and a re-delivered record is dropped at flush only when it is
  the same record, same key and same content (``row_digests``), logged as
  ``journal_duplicates_dropped``. A newer version of a row (same key, other content) is written.
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

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from singer_eventlog import log_event
from target_parquet_parts.parts import fsync_dir

__all__ = ["Journal", "JournalEntry", "OutputDirInUseError", "key_strings", "row_digests"]

logger = logging.getLogger(__name__)

JOURNAL_DIR = "_journal"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "lock"
_KEY_SEP = "\x1f"
COMPACT_AFTER_LINES = 1000


class OutputDirInUseError(RuntimeError):
    """Another process holds the output_dir's journal lock."""


@dataclass(frozen=True)
class JournalEntry:
    """One part written after the last emitted STATE."""

    part: str
    stream: str
    keys: list[str]
    state_index: int
    run: str


_DIGEST_ENCODER = msgspec.json.Encoder(order="sorted")


def row_digests(table: pa.Table) -> list[bytes]:
    """One 128-bit digest per row of its whole content: what makes it "the same record".

    Why a content hash rather than key + replication value: the target does not know a
    stream's replication key (it is not in the SCHEMA message; full-table streams such as
    ``logs`` and ``logsets`` have none), and a source can change a row without moving its
    replication value. A digest of every column needs neither; a changed row always differs,
    so a newer version is never taken for a duplicate.

    Computed from the Arrow rows, so the table built at flush and the part read back give the
    same digest. Null and absent are the same (a column added to the schema later does not
    change old rows' digests); ``_sdc_*`` columns are left out (their times differ each run).
    Key order inside objects does not matter (sorted). Collisions: 2**-128 per pair.
    """
    names = [name for name in table.column_names if not name.startswith("_sdc_")]
    encode = _DIGEST_ENCODER.encode
    return [
        hashlib.blake2b(
            encode({k: v for k, v in row.items() if v is not None}), digest_size=16
        ).digest()
        for row in table.select(names).to_pylist()
    ]


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


class _Replay:
    """One stream's journaled rows: key -> digests of the rows with that key."""

    def __init__(self) -> None:
        self.digests: dict[str, set[bytes]] = {}
        self.count = 0
        self._keys: pa.Array | None = None

    def add(self, keys: pa.Array, digests: list[bytes]) -> None:
        for key, digest in zip(keys.to_pylist(), digests, strict=True):
            self.digests.setdefault(key, set()).add(digest)
        self.count += len(digests)
        self._keys = None

    def keys(self) -> pa.Array:
        """The distinct keys, as an Arrow array for ``is_in``."""
        if self._keys is None:
            self._keys = pa.array(list(self.digests), pa.string())
        return self._keys


class Journal:
    """The journal of one ``output_dir`` (thread-safe; sinks flush in parallel)."""

    def __init__(self, output_dir: Path, run_id: str) -> None:
        output_dir = Path(os.path.abspath(output_dir))
        self.output_dir = output_dir
        self.run_id = run_id
        self.directory = output_dir / JOURNAL_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / JOURNAL_FILE
        self._lock = threading.Lock()
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            msg = (
                f"output_dir {output_dir} is in use by another target-parquet-parts process "
                f"(lock {self.directory / LOCK_FILE}); give each concurrent run its own output_dir"
            )
            raise OutputDirInUseError(msg) from exc
        self._lines = 0
        self._append_fd: int | None = None
        self._torn = False
        self._entries = self._load()
        if self._torn:
            # Rewrite without the torn line, or the next append would be glued onto it.
            self._rewrite(self._entries)
        self._replay = self._load_replay_keys()

    # -- loading -------------------------------------------------------------------------
    def _load(self) -> list[JournalEntry]:
        if not self.path.exists():
            return []
        entries: list[JournalEntry] = []
        lines = self.path.read_text(encoding="utf-8").splitlines()
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
                self._torn = True
        return entries

    def _load_replay_keys(self) -> dict[str, _Replay]:
        replay: dict[str, _Replay] = {}
        for entry in self._entries:
            part = self.output_dir / entry.part
            if not entry.keys or not part.exists():
                continue
            try:
                # ParquetFile: the part alone, no hive columns taken from its directory names.
                table = pq.ParquetFile(part).read()
                keys = key_strings(table, entry.keys)
                digests = row_digests(table) if keys is not None else []
            except (OSError, pa.ArrowException, KeyError, RecursionError, TypeError) as exc:
                logger.warning("journal: cannot read the rows of %s: %s", part, exc)
                continue
            if keys is not None:
                replay.setdefault(entry.stream, _Replay()).add(keys, digests)
        for stream, rows in replay.items():
            log_event(
                logger,
                logging.INFO,
                "journal_loaded",
                stream=stream,
                parts=sum(1 for e in self._entries if e.stream == stream),
                keys=rows.count,
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
        replay = self._replay.get(stream)
        return None if replay is None else replay.keys()

    def drop_replayed(self, stream: str, table: pa.Table, keys: list[str]) -> tuple[pa.Table, int]:
        """Remove rows already in a journaled part (same key and content); (table, dropped).

        Keys are matched column-wise first (``is_in``); only the rows whose key is journaled
        are digested, so a run with nothing to replay pays nothing per row.
        """
        replay = self._replay.get(stream)
        if replay is None or not keys:
            return table, 0
        row_keys = key_strings(table, keys)
        if row_keys is None:
            return table, 0
        candidates = pc.indices_nonzero(pc.is_in(row_keys, value_set=replay.keys()))
        if not len(candidates):
            return table, 0
        digests = row_digests(table.take(candidates))
        candidate_keys = row_keys.take(candidates).to_pylist()
        drop = [False] * table.num_rows
        dropped = 0
        for position, key, digest in zip(
            candidates.to_pylist(), candidate_keys, digests, strict=True
        ):
            if digest in replay.digests.get(key, ()):
                drop[position] = True
                dropped += 1
        if dropped:
            table = table.filter(pc.invert(pa.array(drop)))
        return table, dropped

    def record(self, stream: str, part: Path, keys: list[str], state_index: int) -> None:
        """Durably add a part (called before the part is renamed into place)."""
        entry = JournalEntry(
            part=part.relative_to(self.output_dir).as_posix(),
            stream=stream,
            keys=list(keys),
            state_index=state_index,
            run=self.run_id,
        )
        with self._lock:
            self._append(asdict(entry), sync=True)
            self._entries.append(entry)

    def _append(self, data: dict, *, sync: bool) -> None:
        line = (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")
        if self._append_fd is None:
            self._append_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fsync_dir(self.directory)
        os.write(self._append_fd, line)
        if sync:
            os.fdatasync(self._append_fd)
        self._lines += 1

    def covered(self, state_index: int) -> None:
        """STATE number ``state_index`` was emitted: forget this run's parts it covers."""
        with self._lock:
            keep = [
                e for e in self._entries if e.run != self.run_id or e.state_index >= state_index
            ]
            if len(keep) == len(self._entries):
                return
            if self._lines >= COMPACT_AFTER_LINES:
                self._rewrite(keep)
            else:
                self._append({"covered": state_index, "run": self.run_id}, sync=False)
                self._entries = keep

    def finish(self, *, clear: bool) -> None:
        """End of a clean run: empty the journal if nothing is left to resume, then unlock."""
        with self._lock:
            if clear and (self._entries or self._lines):
                self._rewrite([])
        self.close()

    def close(self) -> None:
        """Release the file handles and the run lock."""
        with self._lock:
            if self._append_fd is not None:
                os.close(self._append_fd)
                self._append_fd = None
            if self._lock_fd >= 0:
                with contextlib.suppress(OSError):
                    fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _rewrite(self, entries: list[JournalEntry]) -> None:
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None
        temp = self.directory / (JOURNAL_FILE + ".tmp")
        data = "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in entries)
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        fsync_dir(self.directory)
        self._entries = entries
        self._lines = len(entries)
