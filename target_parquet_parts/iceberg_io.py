"""A pyiceberg FileIO for local warehouses whose files are on disk before anything points at them.

pyiceberg's ``PyArrowFileIO`` closes files without ``fsync``. After a power cut, a SQLite catalog
row (SQLite syncs its own commits) could then name a metadata file, a manifest or a data file
whose bytes never reached the disk, and a STATE the orchestrator stored would promise rows that
are gone. The plain parts fsync every part and its directory for that reason; this FileIO does
the same for every file pyiceberg writes on a local path (data files, manifests, manifest lists,
metadata JSON): on close, ``fdatasync`` the file, then ``fsync`` its directory and that
directory's parent (new partition directories). Object stores need none of this: an upload is
durable when it returns, so non-local schemes are left to ``PyArrowFileIO`` unchanged.

The embedded SQLite catalog uses it (``py-io-impl``); a configured ``iceberg_catalog`` may name it
too: ``"py-io-impl": "target_parquet_parts.iceberg_io.DurableLocalFileIO"``.
"""

from __future__ import annotations

import os
import typing as t
import weakref
from functools import lru_cache, partial
from pathlib import Path
from types import TracebackType

from pyiceberg.io import OutputStream
from pyiceberg.io.pyarrow import BUFFER_SIZE, ONE_MEGABYTE, PyArrowFile, PyArrowFileIO
from pyiceberg.typedef import EMPTY_DICT, Properties

__all__ = ["DurableLocalFileIO"]

_LOCAL = ("file", "")


def _fsync(path: str, *, data_only: bool) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if data_only:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
    finally:
        os.close(fd)


class _SyncOnClose:
    """Wraps an output stream: closing it makes the file and its name durable."""

    def __init__(self, stream: t.Any, path: str) -> None:
        self._stream = stream
        self._path = path
        self._synced = False

    def write(self, data: bytes) -> int:
        return int(self._stream.write(data))

    def tell(self) -> int:
        return int(self._stream.tell())

    def flush(self) -> None:
        self._stream.flush()

    @property
    def closed(self) -> bool:
        return bool(self._stream.closed)

    def close(self) -> None:
        self._stream.close()
        if not self._synced:
            self._synced = True
            _fsync(self._path, data_only=True)
            directory = Path(self._path).parent
            _fsync(str(directory), data_only=False)
            _fsync(str(directory.parent), data_only=False)

    def __enter__(self) -> _SyncOnClose:
        return self

    def __exit__(
        self,
        exctype: type[BaseException] | None,
        excinst: BaseException | None,
        exctb: TracebackType | None,
    ) -> None:
        self.close()


class _DurableFile(PyArrowFile):
    def create(self, overwrite: bool = False) -> OutputStream:
        return t.cast("OutputStream", _SyncOnClose(super().create(overwrite), self._path))


class DurableLocalFileIO(PyArrowFileIO):
    """``PyArrowFileIO`` that syncs local files on close (module docstring)."""

    def __init__(self, properties: Properties = EMPTY_DICT) -> None:
        super().__init__(properties)
        self._uncycle()

    def __setstate__(self, state: dict[str, t.Any]) -> None:
        super().__setstate__(state)
        self._uncycle()

    def _uncycle(self) -> None:
        # pyiceberg caches a bound method of the FileIO in the FileIO itself: a reference cycle
        # per instance (about three per commit), kept until a rare full collection (the target
        # freezes the GC and raises its thresholds). The same cache, through a weak reference.
        self.fs_by_scheme = lru_cache(partial(PyArrowFileIO._initialize_fs, weakref.proxy(self)))

    def new_output(self, location: str) -> PyArrowFile:
        """An output file; local ones are synced to disk when their stream closes."""
        scheme, netloc, path = self.parse_location(location, self.properties)
        if scheme not in _LOCAL:
            return super().new_output(location)
        return _DurableFile(
            location=location,
            path=path,
            fs=self.fs_by_scheme(scheme, netloc),
            buffer_size=int(self.properties.get(BUFFER_SIZE, ONE_MEGABYTE)),
        )
