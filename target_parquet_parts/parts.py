"""Write one immutable Parquet part: temporary name, fsync, no-clobber rename, directory fsync.

The sequence, and why each step:

1. ``pq.write_table`` to ``.part-....parquet.tmp`` in the final directory (hidden and not ending
   in ``.parquet``: pyarrow, DuckDB, Spark and ``*.parquet`` globs all skip it).
2. ``fsync`` the file: its bytes are on disk before any name points at them. Then read its footer
   back (``pq.ParquetFile``: the footer only, not the data) and check the schema converts and
   the row count matches: a part that would not open is never published. (Not through
   ``FileMetaData.schema``: that object and its ``ParquetSchema`` refer to each other, a cycle
   per part that only the cyclic GC frees, and the target's raised GC thresholds make that rare:
   see ``read_back_rows``.)
3. ``before_publish(final_path)``: the exactly-once journal records the part here, durably,
   before the part can be seen (see ``journal.py``).
4. ``os.link`` temp → final name (fails instead of overwriting if the name existed; names are
   unique anyway), then remove the temporary name. Filesystems without hard links fall back to
   ``os.rename`` after an existence check.
5. ``fsync`` the directory, so the new name survives a power cut.

No writer stays open after this returns; nothing is ever appended to or reopened.

Every directory the target creates (``output_dir`` itself, a stream's directory, a ``date=``
partition, ``_journal``) is created one level at a time by ``ensure_dir``, and its parent is
fsynced, so the new directory's name survives a power cut just as a part's name does.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from target_parquet_parts.errors import UnreadablePartError
from target_parquet_parts.naming import is_temp_part, new_part_name, temp_name_for

__all__ = ["PartWriter", "WrittenPart", "ensure_dir", "fsync_dir", "read_back_rows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WrittenPart:
    """A part that is complete, durable and visible under its final name."""

    path: Path | str  # a local path, or the object's URI (objectstore.py)
    rows: int
    bytes: int


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry change (create/rename) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(directory: Path) -> None:
    """Create ``directory`` and its missing parents, fsyncing the parent of each one created."""
    missing: list[Path] = []
    path = directory
    while not os.path.lexists(path) and path.parent != path:
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise
            continue  # created by another thread or process: its creator syncs the parent
        fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def read_back_rows(source: Path | pa.NativeFile) -> int:
    """Open a written part's footer, convert its schema to Arrow; return its row count.

    Leaves no reference cycle behind. ``pq.read_metadata(...).schema.to_arrow_schema()`` would:
    ``FileMetaData.schema`` caches a ``ParquetSchema`` whose ``parent`` is that
    ``FileMetaData``, so each part left one cycle (holding the C++ footer: 10-20 KiB of RSS) for the
    cyclic GC, which the target runs rarely (``gc.freeze()`` and raised thresholds in
    ``TargetParquetParts.invoke``): memory grew with every flush. ``ParquetFile.schema_arrow``
    converts the same footer schema in C++ without creating a ``ParquetSchema``.
    Raises what pyarrow raises (``OSError``, ``pa.ArrowException``).
    """
    with pq.ParquetFile(source) as footer:
        footer.schema_arrow  # noqa: B018 - the conversion is the check
        return footer.metadata.num_rows


def _verify_readable(temp: Path, rows: int) -> None:
    """The part opens: its footer reads back, its schema converts, its row count matches."""
    try:
        found = read_back_rows(temp)
    except (OSError, pa.ArrowException) as exc:
        msg = f"the part written to {temp} cannot be read back ({exc}); it is not published"
        raise UnreadablePartError(msg) from exc
    if found != rows:
        msg = (
            f"the part written to {temp} reads back {found} rows instead of {rows}; "
            "it is not published"
        )
        raise UnreadablePartError(msg)


def _publish(temp: Path, final: Path) -> None:
    try:
        os.link(temp, final)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise
        if final.exists():  # pragma: no cover - filesystems without hard links
            raise FileExistsError(errno.EEXIST, "part name already taken", str(final)) from exc
        os.rename(temp, final)  # pragma: no cover
        return
    os.unlink(temp)


class PartWriter:
    """Writes parts with one codec; remembers which directories it already swept."""

    def __init__(self, compression: str, compression_level: int | None = None) -> None:
        self.compression = None if compression == "none" else compression
        self.compression_level = compression_level
        self._swept: set[Path] = set()

    def _prepare_dir(self, directory: Path) -> None:
        """Create the directory; once per run, remove temp files a crashed run left there.

        Safe because the run lock (``lock.py``) guarantees a single writer per output_dir, and
        no two streams share a directory (``naming.StreamDirectories``).
        """
        ensure_dir(directory)
        if directory in self._swept:
            return
        with os.scandir(directory) as entries:
            for entry in entries:
                if is_temp_part(entry.name):
                    logger.info("removing leftover temporary file %s", entry.path)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        self._swept.add(directory)

    def write(
        self,
        table: pa.Table,
        directory: Path,
        before_publish: Callable[[Path], None] | None = None,
    ) -> WrittenPart:
        """Write ``table`` as a new part in ``directory`` (see module docstring)."""
        self._prepare_dir(directory)
        name = new_part_name()
        final = directory / name
        temp = directory / temp_name_for(name)
        logger.debug("writing parquet in part mode: %s", final)
        try:
            pq.write_table(
                table,
                temp,
                compression=self.compression,
                compression_level=self.compression_level,
            )
            _fsync_file(temp)
            _verify_readable(temp, table.num_rows)
            if before_publish is not None:
                before_publish(final)
            _publish(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        fsync_dir(directory)
        return WrittenPart(final, table.num_rows, final.stat().st_size)
