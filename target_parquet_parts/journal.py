"""Exactly-once journal: the rows written after the last STATE the target emitted.

On disk it lives at ``{output_dir}/_journal/journal.jsonl`` (``_``-prefixed: pyarrow, Spark and
``*.parquet`` globs ignore it); on object storage the same lines are small objects under
``{output_dir}/_journal/`` in the bucket (``objectstore.ObjectJournalLog``). One JSON line per part:
its path relative to ``output_dir``, the stream, the stream's key properties, the run id, and
``segments``: ``[[label, rows], ...]`` in row order, where a row's label is how many STATE messages
the target had received when the row arrived (labels never decrease along a part). ``state_index``
is the largest label (the only one in the format before segments: such an entry counts as one
segment, so old journals load). The run lock (``lock.py``, on ``_journal/lock``) makes this run the
only writer of ``output_dir``; every run takes it, with or without key properties. The journal's
files are opened without following symbolic links, and a journaled path that leads outside
``output_dir`` is ignored.

Lifecycle:

* A flush appends the entry and fsyncs the journal **before** the part is renamed into place.
* When STATE number ``m`` is emitted, this run's rows with a label ``< m`` are covered (they
  arrived before that STATE, so a rerun from it never sends them again): a
  ``{"covered": m, "run": ...}`` line is appended (no fsync needed: losing it only keeps covered
  rows a little longer, and those only ever drop records that really are in a part). Covered
  rows are a prefix of each part; a part with none left is forgotten.
* On start, entries left by earlier runs describe rows *after* the last STATE those runs emitted.
  The orchestrator restarts the tap from that STATE, so those records come again: the parts are
  read back, and a re-delivered record is dropped at flush only when it is the same record, same
  key and same content (``row_digests``), logged as ``journal_duplicates_dropped``. A newer
  version of a row (same key, other content) is written. A journaled row whose key came again
  is *consumed*: ``{"consumed": part, "rows": [[start, end], ...], "state_index": label, ...}``
  (the label of the re-delivered record). Once this run emits a STATE after that label, the
  consumed rows are gone for good (the tap is past them) and leave the journal.
* So the journal only holds rows after the last emitted STATE, however many runs crashed before:
  on load, covered and consumed rows (and entries whose part never got its final name) are
  dropped and the journal is rewritten compactly; during a run it is rewritten once it has
  grown past ``COMPACT_AFTER_LINES`` lines (temp file, fsync, ``os.replace``, directory fsync).
  Memory is bounded by the rows written after one STATE, not by the input or the crash history.
* Only a run that *completed* may empty the journal: its input ended (no stop signal), and
  either every record it received came before the last STATE it emitted (the tap sent everything
  from its resume point, so rows of earlier runs that did not come again never will), or no
  STATE ever reached this ``output_dir`` (a stateless tap: each run is a new full sync, and the
  journal stays bounded). Every other end keeps the live entries, earlier runs' included: a run
  cancelled (a signal, however early: before its first record or its first STATE) or one whose
  tap died before its first STATE resumes from the last STATE an earlier run emitted, so those
  rows come again. The first emitted STATE writes ``{"stateful": true}`` (kept by rewrites),
  which is how a later run with no STATE of its own tells the two cases apart.

On object storage a journaled part that is not there may still land: its run lost its lock (a
VM pause, a stalled proxy) with the PUT in flight. Such entries are kept, not dropped, and
settled when their stream's SCHEMA arrives (``fence``): the name is claimed with an empty part
(``If-None-Match: *``), so the late PUT fails (412); a part that landed first is replayed.

Crash points (``kill -9`` at any instant):

1. While the temporary file is written or fsynced: no journal entry, no part; the records are
   re-delivered and written. The hidden temp file is removed by the next run that writes there.
2. After the journal entry, before the rename: the entry names a part that does not exist; it
   contributes no rows and is dropped on load. The records are re-delivered and written.
3. After the rename, before the STATE is emitted: the part exists and is in the journal; the
   re-delivered records are dropped.
4. After the STATE is written to stdout, before the ``covered`` line: the rows stay. Harmless
   for correctness (they only drop records that really are in a part), but the rerun starts
   after them, so they stay until a run ends cleanly: the one case (a window of microseconds
   per STATE on disk; on object storage until the next part's entry, which carries the
   ``covered`` line in its object: ``objectstore.ObjectJournalLog``) where the journal keeps
   rows from before the last STATE. Writing ``covered`` first would be worse: a crash before
   the STATE line would forget rows that come again.
5. During a journal append: a torn last line is ignored on load (and the journal rewritten
   without it); its part was not renamed yet (the rename happens after the append's fsync), so
   nothing is lost.
6. During a journal rewrite: ``os.replace`` is atomic; either the old or the new journal is seen.

Streams without key properties are at least once across crashes: nothing identifies a
re-delivered record, so they are not journaled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from plugin_io.log_events import log_event
from target_parquet_parts.lock import OutputDirInUseError
from target_parquet_parts.naming import JOURNAL_DIR, open_no_follow, resolve_inside
from target_parquet_parts.parts import fsync_dir

if TYPE_CHECKING:
    from target_parquet_parts.storage import RunLockLike, Storage

__all__ = [
    "ARRIVAL_COLUMN",
    "Journal",
    "JournalEntry",
    "JournalLog",
    "LocalJournalLog",
    "OutputDirInUseError",
    "key_strings",
    "row_digests",
    "segments_of",
]

logger = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"
_KEY_SEP = "\x1f"
COMPACT_AFTER_LINES = 1000
# A column the sink adds to a batch's table while it is journaled (never written to a part):
# each row's label, the number of STATEs received when it arrived.
ARRIVAL_COLUMN = "\x00arrival"

Ranges = list[list[int]]  # sorted, disjoint [start, end) row ranges


def _ranges(rows: Iterable[int]) -> Ranges:
    result: Ranges = []
    for row in sorted(set(rows)):
        if result and result[-1][1] == row:
            result[-1][1] = row + 1
        else:
            result.append([row, row + 1])
    return result


def _subtract(live: Ranges, dead: Ranges) -> Ranges:
    result: Ranges = []
    for start, end in live:
        cursor = start
        for dead_start, dead_end in dead:
            if dead_end <= cursor or dead_start >= end:
                continue
            if dead_start > cursor:
                result.append([cursor, dead_start])
            cursor = max(cursor, dead_end)
        if cursor < end:
            result.append([cursor, end])
    return result


def _rows_of(ranges: Ranges) -> list[int]:
    return [row for start, end in ranges for row in range(start, end)]


def segments_of(labels: pa.Array | pa.ChunkedArray) -> list[list[int]]:
    """Run lengths of a part's arrival labels: ``[[label, rows], ...]`` in row order."""
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    if not len(labels):
        return []
    encoded = pc.run_end_encode(labels)
    ends = encoded.run_ends.to_pylist()
    starts = [0, *ends[:-1]]
    return [
        [label, end - start]
        for label, start, end in zip(encoded.values.to_pylist(), starts, ends, strict=True)
    ]


@dataclass
class JournalEntry:
    """One part holding rows written after the last emitted STATE."""

    part: str
    stream: str
    keys: list[str]
    state_index: int
    run: str
    segments: list[list[int]] | None = None  # [[label, rows], ...]; None: one unknown-size run
    live: Ranges | None = None  # rows still needed; None: all of them

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JournalEntry:
        """An entry line, in this format or the one before segments (same keys, fewer)."""
        return cls(
            part=str(data["part"]),
            stream=str(data["stream"]),
            keys=list(data["keys"]),
            state_index=int(data["state_index"]),
            run=str(data["run"]),
            segments=data.get("segments"),
            live=data.get("live"),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry's journal line (``segments`` and ``live`` only when known / partial)."""
        data: dict[str, Any] = {
            "part": self.part,
            "stream": self.stream,
            "keys": self.keys,
            "state_index": self.state_index,
            "run": self.run,
        }
        if self.segments is not None:
            data["segments"] = self.segments
        if self.live is not None:
            data["live"] = self.live
        return data

    @property
    def dead(self) -> bool:
        """No row left that a rerun could send again."""
        return self.live == []

    def live_ranges(self) -> Ranges | None:
        """The rows still needed (None if the part's size is unknown and all are needed)."""
        if self.live is not None:
            return self.live
        if self.segments is None:
            return None
        return [[0, sum(count for _, count in self.segments)]]

    def cover(self, state_index: int) -> bool:
        """STATE ``state_index`` was emitted by this entry's run: drop the rows before it."""
        if self.segments is None:
            if self.state_index < state_index and not self.dead:
                self.live = []
                return True
            return False
        prefix = 0
        for label, count in self.segments:
            if label >= state_index:
                break
            prefix += count
        return self._remove([[0, prefix]]) if prefix else False

    def consume(self, rows: Ranges) -> bool:
        """These rows came again and a later STATE was emitted: the tap is past them."""
        return self._remove(rows)

    def _remove(self, rows: Ranges) -> bool:
        live = self.live_ranges()
        if live is None:
            return False
        remaining = _subtract(live, rows)
        if remaining == live:
            return False
        self.live = remaining
        return True


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
    names = [
        name
        for name in table.column_names
        if not name.startswith("_sdc_") and name != ARRIVAL_COLUMN
    ]
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
    """One stream's journaled rows, by key: (entry, row number in its part, digest)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[JournalEntry, int, bytes]]] = {}
        self.count = 0
        self._keys: pa.Array | None = None

    def add(self, entry: JournalEntry, rows: list[int], keys: pa.Array, digests: list[bytes]):
        for row, key, digest in zip(rows, keys.to_pylist(), digests, strict=True):
            self.rows.setdefault(key, []).append((entry, row, digest))
        self.count += len(digests)
        self._keys = None

    def keys(self) -> pa.Array:
        """The distinct keys, as an Arrow array for ``is_in``."""
        if self._keys is None:
            self._keys = pa.array(list(self.rows), pa.string())
        return self._keys


class JournalLog(Protocol):
    """Where the journal's lines are kept: a file on disk, or objects in a bucket.

    Called under the journal's lock, one call at a time.
    """

    where: str  # for messages

    def read(self) -> str:
        """Every line kept so far (a torn last line included, if any)."""
        ...

    def append(self, line: str, *, sync: bool) -> None:
        """Add one line; with ``sync`` it survives a power cut once this returns.

        Without ``sync`` a crash may lose the line (a file's write not fsynced; on object
        storage it waits for the next synced line or ``close``: ``objectstore.py``).
        """
        ...

    def rewrite(self, text: str) -> None:
        """Replace every line by ``text``, atomically."""
        ...

    def close(self) -> None:
        """Release handles (idempotent)."""
        ...


class LocalJournalLog:
    """``{output_dir}/_journal/journal.jsonl``: appended (fdatasync when asked), rewritten
    through a temp file, fsync, ``os.replace`` and a directory fsync; no symbolic links."""

    def __init__(self, output_dir: Path) -> None:
        self.directory = resolve_inside(output_dir, JOURNAL_DIR)
        self.path = self.directory / JOURNAL_FILE
        self.where = str(self.path)
        self._append_fd: int | None = None

    def read(self) -> str:
        try:
            fd = open_no_follow(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return ""
        with open(fd, encoding="utf-8") as handle:
            return handle.read()

    def append(self, line: str, *, sync: bool) -> None:
        if self._append_fd is None:
            self._append_fd = open_no_follow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            fsync_dir(self.directory)
        os.write(self._append_fd, line.encode("utf-8"))
        if sync:
            os.fdatasync(self._append_fd)

    def rewrite(self, text: str) -> None:
        self.close()
        temp = self.directory / (JOURNAL_FILE + ".tmp")
        fd = open_no_follow(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        fsync_dir(self.directory)

    def close(self) -> None:
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None


class Journal:
    """The journal of one ``output_dir`` (thread-safe; sinks flush in parallel)."""

    def __init__(
        self, output: Path | Storage, run_id: str, run_lock: RunLockLike | None = None
    ) -> None:
        """Open output_dir's journal, under ``run_lock`` (taken here when not given).

        ``output``: a local directory, or a ``storage.Storage`` (local or object storage).
        """
        from target_parquet_parts.storage import LocalStorage  # noqa: PLC0415  (a cycle)

        self.storage = LocalStorage(output) if isinstance(output, Path) else output
        self.output_dir = self.storage.display
        self.run_id = run_id
        self._own_run_lock = run_lock is None
        self._run_lock = run_lock or self.storage.lock(run_id)
        self._lock = threading.Lock()
        self._lines = 0
        self._log: JournalLog | None = None
        # This run's consumed rows, not yet covered by an emitted STATE: (label, part, rows).
        self._consumed: list[tuple[int, str, Ranges]] = []
        # A STATE was emitted into this output_dir at some time (see ``finish``).
        self.stateful = False
        # Earlier runs' entries whose part is not there yet but may still land (object stores:
        # ``Storage.late_parts_possible``), until ``fence`` settles them per stream.
        self._unfenced: list[JournalEntry] = []
        try:
            self._log = self.storage.journal_log(run_id)
            text = self._log.read()
            self._entries = self._load(text)
            compact = self._lines_of(self._entries)
            self._lines = len(compact)
            if "".join(compact) != text:
                # Covered and consumed rows, dead entries, a torn line: keep only what is live.
                self._rewrite(self._entries)
            self._replay = self._load_replay()
        except BaseException:
            self.close()  # a journal that cannot be loaded must not keep output_dir locked
            raise

    # -- loading -------------------------------------------------------------------------
    def _load(self, text: str) -> list[JournalEntry]:
        lines: list[dict[str, Any]] = []
        for line in text.splitlines():
            try:
                data = json.loads(line)
                if "stateful" in data:
                    self.stateful = True
                    continue
                if "covered" in data:
                    data = {"covered": int(data["covered"]), "run": str(data["run"])}
                elif "consumed" in data:
                    rows = [[int(start), int(end)] for start, end in data["rows"]]
                    data = {
                        "consumed": str(data["consumed"]),
                        "rows": rows,
                        "state_index": int(data["state_index"]),
                        "run": str(data["run"]),
                    }
                else:
                    data = {"entry": JournalEntry.from_json(data)}
                lines.append(data)
            except (ValueError, TypeError, KeyError):
                logger.warning("ignoring a torn journal line in %s", self._where)
        entries: list[JournalEntry] = []
        pending: dict[str, list[tuple[int, str, Ranges]]] = {}
        for data in lines:
            if "entry" in data:
                entry = data["entry"]
                if self.storage.part_exists(entry.part):
                    self._size_old_entry(entry)
                    entries.append(entry)
                elif self.storage.late_parts_possible:
                    self._unfenced.append(entry)  # its upload may still land: see ``fence``
                # else: unsafe, or crash point 2 on a disk (the part can never appear)
            elif "consumed" in data:
                consumed = (data["state_index"], data["consumed"], data["rows"])
                pending.setdefault(data["run"], []).append(consumed)
            else:
                run, covered = data["run"], data["covered"]
                for entry in entries:
                    if entry.run == run:
                        entry.cover(covered)
                still = []
                for label, part, rows in pending.get(run, []):
                    if label < covered:
                        for entry in entries:
                            if entry.part == part:
                                entry.consume(rows)
                    else:
                        still.append((label, part, rows))
                pending[run] = still
                entries = [e for e in entries if not e.dead]
        # Consumed rows of earlier runs that no STATE of theirs covered stay live.
        return [e for e in entries if not e.dead]

    @property
    def _where(self) -> str:
        return self._log.where if self._log is not None else self.output_dir

    def _size_old_entry(self, entry: JournalEntry) -> None:
        """An entry in the format before segments: one segment, sized from the part."""
        if entry.segments is not None:
            return
        try:
            rows = self.storage.read_part(entry.part).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            logger.warning("journal: cannot read %s: %s", entry.part, exc)
            return
        entry.segments = [[entry.state_index, rows]]

    def _load_replay(self) -> dict[str, _Replay]:
        replay: dict[str, _Replay] = {}
        for entry in self._entries:
            self._add_replay(replay, entry)
        for stream, journaled in replay.items():
            log_event(
                logger,
                logging.INFO,
                "journal_loaded",
                stream=stream,
                parts=sum(1 for e in self._entries if e.stream == stream),
                keys=journaled.count,
            )
        return replay

    def _add_replay(self, replay: dict[str, _Replay], entry: JournalEntry) -> None:
        """Read the live rows of ``entry``'s part into ``replay`` (keys and digests)."""
        if not entry.keys:
            return
        try:
            # ParquetFile: the part alone, no hive columns taken from its directory names.
            table = self.storage.read_part(entry.part).read()
            live = entry.live_ranges()
            rows = _rows_of(live) if live is not None else list(range(table.num_rows))
            if len(rows) != table.num_rows:
                table = table.take(pa.array(rows, pa.int64()))
            keys = key_strings(table, entry.keys)
            digests = row_digests(table) if keys is not None else []
        except (OSError, pa.ArrowException, KeyError, RecursionError, TypeError) as exc:
            logger.warning("journal: cannot read the rows of %s: %s", entry.part, exc)
            return
        if keys is not None:
            replay.setdefault(entry.stream, _Replay()).add(entry, rows, keys, digests)

    def fence(self, stream: str, schema: pa.Schema) -> None:
        """Settle ``stream``'s parts journaled by earlier runs that are not there yet.

        Each is claimed (``Storage.fence_part``): once claimed, a late upload of the run that
        lost the lock fails instead of adding its rows next to this run's copies; a part that
        landed first is read like any journaled part, so its records coming again are dropped.
        Called when the stream's first SCHEMA arrives, before any of its records is flushed.
        """
        with self._lock:
            waiting = [e for e in self._unfenced if e.stream == stream]
            if not waiting:
                return
            self._unfenced = [e for e in self._unfenced if e.stream != stream]
            landed = []
            for entry in waiting:
                if not self.storage.fence_part(entry.part, schema):
                    self._size_old_entry(entry)
                    landed.append(entry)
                    self._entries.append(entry)
                    self._add_replay(self._replay, entry)
            log_event(
                logger,
                logging.INFO,
                "journal_fenced",
                stream=stream,
                fenced=len(waiting) - len(landed),
                landed=len(landed),
                parts=[entry.part for entry in waiting],
            )
            self._rewrite(self._entries)

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

    def replays(self, stream: str) -> bool:
        """Whether ``drop_replayed`` may drop rows of ``stream`` (a part of it is journaled)."""
        return self._replay.get(stream) is not None

    def drop_replayed(self, stream: str, table: pa.Table, keys: list[str]) -> tuple[pa.Table, int]:
        """Remove rows already in a journaled part (same key and content); (table, dropped).

        Keys are matched column-wise first (``is_in``); only the rows whose key is journaled
        are digested, so a run with nothing to replay pays nothing per row. With an
        ``ARRIVAL_COLUMN``, the journaled rows whose key came again are recorded as consumed.
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
        chosen = table.take(candidates)
        digests = row_digests(chosen)
        if ARRIVAL_COLUMN in table.column_names:
            labels: list[int | None] = chosen.column(ARRIVAL_COLUMN).to_pylist()
        else:
            labels = [None] * len(digests)
        drop = [False] * table.num_rows
        dropped = 0
        consumed: dict[tuple[int, str], list[int]] = {}
        for position, key, digest, label in zip(
            candidates.to_pylist(),
            row_keys.take(candidates).to_pylist(),
            digests,
            labels,
            strict=True,
        ):
            same = False
            for entry, row, journaled in replay.rows.get(key, ()):
                same = same or journaled == digest
                if label is not None:
                    consumed.setdefault((label, entry.part), []).append(row)
            if same:
                drop[position] = True
                dropped += 1
        if consumed:
            with self._lock:
                for (label, part), rows in consumed.items():
                    ranges = _ranges(rows)
                    self._consumed.append((label, part, ranges))
                    line = {"consumed": part, "rows": ranges, "state_index": label}
                    self._append({**line, "run": self.run_id}, sync=False)
        if dropped:
            table = table.filter(pc.invert(pa.array(drop)))
        return table, dropped

    def record(
        self,
        stream: str,
        part: Path | str,
        keys: list[str],
        state_index: int,
        segments: list[list[int]] | None = None,
    ) -> None:
        """Durably add a part (called before the part is published).

        ``part``: its path relative to output_dir (``events/part-....parquet``), or a local path
        under output_dir.

        ``segments``: its rows' arrival labels, run-length encoded (``segments_of``); without
        them the whole part counts as arrived before STATE ``state_index + 1``.
        """
        entry = JournalEntry(
            part=self.storage.relative(part),
            stream=stream,
            keys=list(keys),
            state_index=segments[-1][0] if segments else state_index,  # labels never decrease
            run=self.run_id,
            segments=segments,
        )
        with self._lock:
            self._append(entry.to_json(), sync=True)
            self._entries.append(entry)

    @staticmethod
    def _line(data: dict[str, Any]) -> str:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"

    def _append(self, data: dict, *, sync: bool) -> None:
        assert self._log is not None
        self._log.append(self._line(data), sync=sync)
        self._lines += 1

    def covered(self, state_index: int) -> None:
        """STATE number ``state_index`` was emitted: forget the rows it covers."""
        with self._lock:
            self._cover(state_index)

    def emit_covered(self, state_index: int, emit: Callable[[], None]) -> None:
        """Emit STATE number ``state_index`` (``emit``), then forget the rows it covers, holding
        the journal's lock across both: the part writer's thread may be journaling the next
        part (a fsync, or a PUT), and waiting for it between the STATE line and its "covered"
        line would widen crash point 4 (a kill in between leaves covered rows live) from
        microseconds to a whole journal write. Waiting before the STATE line costs nothing."""
        with self._lock:
            emit()
            self._cover(state_index)

    def _cover(self, state_index: int) -> None:
        """Forget the rows STATE ``state_index`` covers (holding the lock)."""
        if not self.stateful:
            self.stateful = True
            self._append({"stateful": True}, sync=True)
        changed = False
        for entry in self._entries:
            if entry.run == self.run_id and entry.cover(state_index):
                changed = True
        still = []
        for label, part, rows in self._consumed:
            if label < state_index:
                for entry in self._entries:
                    if entry.part == part and entry.consume(rows):
                        changed = True
            else:
                still.append((label, part, rows))
        applied = len(still) != len(self._consumed)
        self._consumed = still
        if not changed and not applied:
            return
        self._entries = [e for e in self._entries if not e.dead]
        if self._lines >= COMPACT_AFTER_LINES:
            self._rewrite(self._entries)
        else:
            self._append({"covered": state_index, "run": self.run_id}, sync=False)

    def finish(self, *, completed: bool, all_covered: bool) -> None:
        """End of a run: keep what may come again (compactly), empty the rest, then unlock.

        ``completed``: the input ended without a stop signal; ``all_covered``: every record
        this run received came before the last STATE it emitted (False when it emitted none).
        """
        with self._lock:
            if completed and (all_covered or not self.stateful):
                self._consumed = []  # the tap is past them: nothing is left to resume
                entries: list[JournalEntry] = []
            else:
                entries = self._entries
            if self._lines != len(self._lines_of(entries)) or entries != self._entries:
                self._rewrite(entries)
        self.close()

    def close(self) -> None:
        """Release the file handles and the run lock."""
        with self._lock:
            if self._log is not None:
                self._log.close()
            if self._own_run_lock:
                self._run_lock.release()

    def _lines_of(self, entries: list[JournalEntry]) -> list[str]:
        """The journal's lines for ``entries``, the marker and this run's consumed rows."""
        lines = [self._line({"stateful": True})] if self.stateful else []
        lines += [self._line(e.to_json()) for e in [*self._unfenced, *entries]]
        lines += [
            self._line({"consumed": part, "rows": rows, "state_index": label, "run": self.run_id})
            for label, part, rows in self._consumed
        ]
        return lines

    def _rewrite(self, entries: list[JournalEntry]) -> None:
        """Replace the journal by ``entries``, the marker and this run's consumed rows."""
        assert self._log is not None
        lines = self._lines_of(entries)
        self._log.rewrite("".join(lines))
        self._entries = entries
        self._lines = len(lines)
