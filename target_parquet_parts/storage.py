"""Where the dataset lives: a local directory or an object store, behind one narrow interface.

``output_dir`` is a local path (today's code paths: ``parts.py``, ``lock.py``, the journal file)
or a URI: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix`` or
``abfs[s]://container@account.dfs.core.windows.net/prefix`` (``objectstore.py``). Any other
``scheme://`` is refused, naming the setting, instead of becoming a local folder named ``s3:``.

What the rest of the target asks of a storage (and nothing else, so sinks, journal and target do
not branch on the kind of storage):

* ``lock(run_id)``: this run's exclusive lock on the dataset (``release()``, ``check()``);
* ``part_writer(...)``: writes a table as a new, complete, immutable part under a directory
  (``stream[/date=...]``), calling ``before_publish(relative path)`` before anyone can see it;
* ``journal_log()``: where the exactly-once journal keeps its lines;
* ``part_exists(relative path)``, ``read_part(relative path)``: a journaled part, read back.

Credentials, region and endpoint come from each cloud's standard configuration (see
``objectstore.py``); nothing about them is a target setting.
"""

from __future__ import annotations

import abc
import importlib.util
import logging
import os
import re
import typing as t
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from plugin_io.distribution import install_hint
from target_parquet_parts.errors import UnsafePathError
from target_parquet_parts.journal import JournalLog, LocalJournalLog
from target_parquet_parts.lock import lock_output_dir
from target_parquet_parts.naming import resolve_inside
from target_parquet_parts.parts import PartWriter, WrittenPart

__all__ = [
    "OBJECT_SCHEMES",
    "LocalStorage",
    "Location",
    "PartWriterLike",
    "RunLockLike",
    "Storage",
    "UnsupportedOutputDirError",
    "arrow_filesystem",
    "check_output_dir",
    "open_storage",
    "parse_location",
]

logger = logging.getLogger(__name__)

# scheme -> what it is (for messages)
OBJECT_SCHEMES = {
    "s3": "Amazon S3 or an S3-compatible store",
    "gs": "Google Cloud Storage",
    "az": "Azure Blob Storage",
    "abfs": "Azure Data Lake Storage Gen2",
    "abfss": "Azure Data Lake Storage Gen2 (TLS)",
}
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class UnsupportedOutputDirError(ValueError):
    """``output_dir`` names a scheme the target cannot write to."""


class RunLockLike(t.Protocol):
    """This run's exclusive lock on the dataset."""

    def release(self) -> None:
        """Unlock (idempotent)."""
        ...

    def check(self) -> None:
        """Raise if the lock may no longer be this run's (a lease that could not be renewed)."""
        ...


class PartWriterLike(t.Protocol):
    """Writes new, immutable parts."""

    def write(
        self,
        table: pa.Table,
        directory: tuple[str, ...],
        before_publish: Callable[[str], None] | None = None,
    ) -> WrittenPart:
        """Write ``table`` as a new part under ``directory`` (relative to output_dir)."""
        ...


@dataclass(frozen=True)
class Location:
    """An object-store ``output_dir``: scheme, bucket (or container) and key prefix."""

    uri: str
    scheme: str
    bucket: str
    prefix: str  # no leading or trailing "/"; "" for the bucket's root
    account: str = ""  # abfs: the storage account named in the URI

    def key(self, relative: str) -> str:
        """The object key of a path relative to output_dir."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, relative: str = "") -> str:
        """``scheme://bucket/prefix/relative`` (for messages and readers)."""
        key = self.key(relative) if relative else self.prefix
        return f"{self.scheme}://{self.bucket}/{key}".rstrip("/")


def parse_location(output_dir: str) -> Location | None:
    """The object-store location of ``output_dir``; None for a local path.

    Raises ``UnsupportedOutputDirError`` for any other ``scheme://`` (naming the setting).
    """
    match = _URI.match(output_dir)
    if match is None:
        return None
    scheme = match.group(1).lower()
    if scheme == "file":
        return None
    if scheme not in OBJECT_SCHEMES:
        known = ", ".join(f"{s}://" for s in OBJECT_SCHEMES)
        msg = (
            f"output_dir {output_dir!r}: the scheme '{scheme}://' is not supported. output_dir "
            f"is a local directory or an object-store URI ({known}); "
            "for a local directory, give its path without a scheme"
        )
        raise UnsupportedOutputDirError(msg)
    parts = urlsplit(output_dir)
    if parts.query or parts.fragment:
        msg = (
            f"output_dir {output_dir!r}: query strings and fragments are not supported; "
            "endpoint, region and credentials come from the environment (for S3: "
            "AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE, ...)"
        )
        raise UnsupportedOutputDirError(msg)
    netloc = parts.netloc
    account = ""
    if scheme in ("abfs", "abfss") and "@" in netloc:
        netloc, _, host = netloc.partition("@")
        account = host.split(".", 1)[0]
    elif "@" in netloc or ":" in netloc:
        msg = (
            f"output_dir {output_dir!r}: put no credentials or port in the URI; they come from "
            "the environment (for S3: AWS_ACCESS_KEY_ID/AWS_PROFILE, AWS_ENDPOINT_URL)"
        )
        raise UnsupportedOutputDirError(msg)
    if not netloc:
        msg = f"output_dir {output_dir!r}: the URI names no bucket (expected {scheme}://BUCKET/...)"
        raise UnsupportedOutputDirError(msg)
    prefix = parts.path.strip("/")
    if any(segment in ("", ".", "..") for segment in prefix.split("/")) and prefix:
        msg = f"output_dir {output_dir!r}: empty, '.' or '..' segments are not allowed in the key"
        raise UnsupportedOutputDirError(msg)
    return Location(uri=output_dir, scheme=scheme, bucket=netloc, prefix=prefix, account=account)


# scheme -> (the module its conditional writes need, its package, the extra that brings it)
_STORE_CLIENTS = {
    "s3": ("boto3", "boto3", "s3"),
    "gs": ("google.cloud.storage", "google-cloud-storage", "gcs"),
    "az": ("azure.storage.blob", "azure-storage-blob", "azure"),
    "abfs": ("azure.storage.blob", "azure-storage-blob", "azure"),
    "abfss": ("azure.storage.blob", "azure-storage-blob", "azure"),
}


def check_output_dir(output_dir: str) -> None:
    """Refuse an unusable ``output_dir`` early (at start, before any input is read): an object
    store whose client (an optional extra) is not installed."""
    location = parse_location(output_dir)
    if location is None or location.scheme not in _STORE_CLIENTS:
        return
    module, package, extra = _STORE_CLIENTS[location.scheme]
    if not _installed(module):
        msg = f"output_dir {output_dir!r} needs {package} (conditional PUTs): {install_hint(extra)}"
        raise UnsupportedOutputDirError(msg)


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (its parents only)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


class Storage(abc.ABC):
    """The interface; ``LocalStorage`` and ``objectstore.ObjectStorage`` implement it."""

    display: str

    @abc.abstractmethod
    def lock(self, run_id: str, lease_seconds: float | None = None) -> RunLockLike:
        """Take this run's exclusive lock on the dataset (a lease where the lock has one)."""

    @abc.abstractmethod
    def journal_log(self, run_id: str) -> JournalLog:
        """The exactly-once journal's lines, kept where they stay correct."""

    @abc.abstractmethod
    def part_writer(self, compression: str, compression_level: int | None) -> PartWriterLike:
        """A writer of new parts with this codec."""

    @abc.abstractmethod
    def part_exists(self, relative: str) -> bool:
        """Whether a part (path relative to output_dir) was published (False: unsafe path)."""

    @abc.abstractmethod
    def read_part(self, relative: str) -> pq.ParquetFile:
        """A published part, opened (``OSError`` or ``ArrowException`` when it cannot be)."""

    #: A part journaled by an earlier run but not there yet may still appear (its writer's
    #: upload outlived its lock) until ``fence_part`` claims its name.
    late_parts_possible = False

    @abc.abstractmethod
    def fence_part(self, relative: str, schema: pa.Schema) -> bool:
        """Make sure the part can never appear from now on: True, or False when it exists."""

    def relative(self, part: Path | str) -> str:
        """A part's path relative to output_dir (posix)."""
        return part if isinstance(part, str) else part.as_posix()


class _LocalPartWriter:
    def __init__(self, root: Path, compression: str, compression_level: int | None) -> None:
        self._root = root
        self._writer = PartWriter(compression, compression_level)

    def write(
        self,
        table: pa.Table,
        directory: tuple[str, ...],
        before_publish: Callable[[str], None] | None = None,
    ) -> WrittenPart:
        where = resolve_inside(self._root, *directory)
        before = None
        if before_publish is not None:
            root = self._root

            def before(final: Path) -> None:
                before_publish(final.relative_to(root).as_posix())

        return self._writer.write(table, where, before_publish=before)


class LocalStorage(Storage):
    """A local directory: temp file, fsync, no-clobber link, dir fsync; flock; journal file."""

    def __init__(self, output_dir: Path | str) -> None:
        self.display = str(output_dir)
        self.root = Path(os.path.realpath(output_dir))

    def lock(self, run_id: str, lease_seconds: float | None = None) -> RunLockLike:
        del lease_seconds  # a flock is held until the process ends: no lease
        return lock_output_dir(self.root, run_id)

    def journal_log(self, run_id: str) -> JournalLog:
        del run_id  # one file, appended by one run at a time (the run lock)
        return LocalJournalLog(self.root)

    def part_writer(self, compression: str, compression_level: int | None) -> PartWriterLike:
        return _LocalPartWriter(self.root, compression, compression_level)

    def part_exists(self, relative: str) -> bool:
        try:
            return resolve_inside(self.root, relative).exists()
        except UnsafePathError as exc:
            logger.warning("journal: ignoring %s: %s", relative, exc)
            return False

    def read_part(self, relative: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(resolve_inside(self.root, relative))
        except UnsafePathError as exc:
            raise OSError(str(exc)) from exc

    def fence_part(self, relative: str, schema: pa.Schema) -> bool:
        """On a local disk a missing part cannot appear later: its writer held the flock and
        is gone (a rename is the only way in)."""
        return not self.part_exists(relative)

    def relative(self, part: Path | str) -> str:
        if isinstance(part, str):
            return part
        return part.relative_to(self.root).as_posix()


def open_storage(output_dir: str | os.PathLike[str], lease_seconds: float | None = None) -> Storage:
    """The storage of ``output_dir`` (a local path or an object-store URI).

    ``lease_seconds``: the run lock's lease a writer will hold; an object store's requests are
    then cut before a stalled one could outlive it.
    """
    location = parse_location(str(output_dir))
    if location is None:
        text = str(output_dir)
        if text.lower().startswith("file://"):
            text = urlsplit(text).path
        return LocalStorage(Path(text))
    from target_parquet_parts.objectstore import ObjectStorage  # noqa: PLC0415  (imports this module; boto3)

    return ObjectStorage.open(location, lease_seconds)


def arrow_filesystem(output_dir: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the dataset's root path in it (for readers: reconcile, tests).

    Local paths give the local filesystem; object-store URIs give pyarrow's S3, GCS or Azure
    filesystem configured from the environment as the target is (``objectstore.py``).
    """
    location = parse_location(str(output_dir))
    if location is None:
        text = str(output_dir)
        if text.lower().startswith("file://"):
            text = urlsplit(text).path
        return pafs.LocalFileSystem(), os.path.realpath(text)
    from target_parquet_parts.objectstore import arrow_filesystem_for  # noqa: PLC0415  (cycle)

    return arrow_filesystem_for(location), f"{location.bucket}/{location.prefix}".rstrip("/")
