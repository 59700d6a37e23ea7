"""``table_format: iceberg``: each flush is one commit to an Apache Iceberg table per stream.

Catalog. ``iceberg_catalog`` unset: an embedded SQLite catalog ``{output_dir}/catalog.db``
(pyiceberg's ``SqlCatalog``) with warehouse ``{output_dir}``. Set: any pyiceberg catalog from
its properties (``type`` rest/glue/sql/hive..., ``uri``, ``warehouse``, credentials), so a REST
catalog with an ``s3://`` warehouse works through pyiceberg's own FileIO; for the catalogs that
take the warehouse as a location (sql, glue, hive...) ``warehouse`` defaults to ``output_dir``.
Tables are ``{iceberg_namespace}.{stream directory name}`` (the same sanitized name the parts
use, ``naming.sanitize_stream_name``).

Table. Created on first use (``create_table_if_not_exists``: several writers may race) with the
schema from the Singer SCHEMA through the same JSON Schema → Arrow mapping the parts use
(``arrow_schema.py``; every column optional), converted to Iceberg with fresh field ids, and a
``day`` partition on ``partition_date_field`` when the stream has it. A later SCHEMA message is
a schema evolution (``union_by_name``: new columns and nested fields are added, allowed type
promotions applied); an incompatible change (a long becoming a string, ...) stops the target with
a message naming the stream, the table and the field.

A catalog that lost a table. When the catalog has no such table but the folder where it would
create it (``{warehouse}/{namespace}/{table}``, pyiceberg's default location) already holds
metadata files of a table with commits, the target refuses (``IcebergTableError``, one line
naming the folder, the newest metadata file and how to re-register it) instead of creating a
second, empty table there: see ``StreamTable._existing_table_of_folder`` for why it does not
re-register the table by itself.

Errors. A catalog that cannot be opened or reached (a damaged ``catalog.db``, a REST server
that does not answer) is an ``IcebergCatalogError`` naming the catalog file or URL (password
hidden); a table file that is missing or unreadable (metadata JSON, manifest list, manifest) is
an ``IcebergTableError`` naming the file; neither is reported as "output_dir is not writable".

Flush. The batch's Arrow table goes through the replay filter (``iceberg_ledger.py``: the
exactly-once bookkeeping that lives in the snapshot summaries), its data files are written once,
then committed as one append snapshot carrying the bookkeeping properties. The flush returns
only after the catalog accepted the commit: that is the durability point the target's STATE
tracking waits for.

Concurrency and manifests: ``iceberg_commits.py`` (one retry loop, merged manifests).

Test hook (test-only, documented here so nobody mistakes it for a feature): the environment
variable ``TARGET_PARQUET_PARTS_TEST_KILL=<point>:<n>`` makes the process ``SIGKILL`` itself at
its ``n``-th commit, ``point`` ``before_commit`` (data files written, catalog not yet told) or
``after_commit`` (catalog committed, flush not yet returned, so no STATE).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import random
import re
import signal
import sys
import threading
import time
import typing as t
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import pyarrow as pa
import pydantic
from pyarrow.fs import FileSelector, FileType
from pyiceberg.catalog import Catalog, MetastoreCatalog, load_catalog
from pyiceberg.exceptions import (
    NoSuchNamespaceError,
    NoSuchTableError,
    ResolveError,
    ValidationError,
)
from pyiceberg.io import load_file_io
from pyiceberg.io.pyarrow import PyArrowFileIO, _dataframe_to_data_files
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids, promote
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.transforms import DayTransform
from pyiceberg.types import IcebergType, ListType, MapType, StructType
from pyiceberg.utils.concurrent import ExecutorFactory

from plugin_io.log_events import log_event
from target_parquet_parts.iceberg_commits import (
    MANIFEST_TABLE_PROPERTIES,
    commit_with_retry,
    module_errors,
    sqlalchemy_errors,
    stage_snapshot,
)
from target_parquet_parts.iceberg_expiry import RunningExpiry
from target_parquet_parts.iceberg_ledger import (
    ReplaySet,
    commit_properties,
    end_properties,
    ever_stateful,
    find_commit,
    load_replay_set,
    mark_stateful,
)
from target_parquet_parts.naming import sanitize_stream_name
from target_parquet_parts.settings import DEFAULT_NAMESPACE

if t.TYPE_CHECKING:
    from target_parquet_parts.settings import TargetSettings

__all__ = [
    "IcebergCatalogError",
    "IcebergError",
    "IcebergSchemaError",
    "IcebergTableError",
    "IcebergWriter",
    "describe_catalog",
    "load_iceberg_catalog",
    "table_identifier",
]

logger = logging.getLogger(__name__)

# Rows per flush when batch_size_rows is unset (plain parts: the SDK's 10 000). Every commit adds
# a snapshot, a manifest, a manifest list and a metadata version that later commits and every
# reader's planning go through; ten times fewer, larger commits keep the table fast and its files
# near Iceberg's sizes. STATE latency stays bounded by state_max_lag_seconds, memory by
# max_batch_bytes.
DEFAULT_BATCH_SIZE_ROWS = 100_000
_TEST_KILL_ENV = "TARGET_PARQUET_PARTS_TEST_KILL"
_URI_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "file://")


# Commits between two collections of the cycles commits leave (IcebergWriter._collect_cycles).
COLLECT_EVERY_COMMITS = 50
# Threads of pyiceberg's worker pool unless its max-workers is set (bound_pyiceberg_workers):
# the three manifest tasks every commit runs at once.
PYICEBERG_WORKERS = 3
# Tries to create a stream's namespace and table when other writers race to create them too.
CREATE_ATTEMPTS = 3
# Tries to open the catalog when other writers race to create a SQL catalog's own tables.
CATALOG_OPEN_ATTEMPTS = 5
# What a lost race to create a SQL catalog's own tables says (SQLite, PostgreSQL); any other
# database error (a refused or timed-out connection, a wrong password) is not retried.
_CATALOG_RACE_SIGNS = ("already exists", "duplicate key", "database is locked")
# libpq's connect_timeout for a PostgreSQL catalog whose URI sets none: without it, a server
# that accepts the connection and never answers holds the run forever, deaf to SIGTERM (the
# wait is inside libpq). libpq tries SSL, then plain: at most twice this.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10


class IcebergSchemaError(ValueError):
    """A SCHEMA message cannot become an evolution of the existing Iceberg table."""


class IcebergError(RuntimeError):
    """The catalog or a table cannot be used as it is; the one argument is a one-line message
    naming what is at fault and what to do (the SDK logs ``args[0]``).

    Not an ``OSError``, so ``errors.explain_os_errors`` never rewrites it as "output_dir is not
    writable"; the error it describes is its ``__cause__``.
    """


class IcebergCatalogError(IcebergError):
    """The catalog cannot be opened or reached: names the catalog file or URL (no password)."""


class IcebergTableError(IcebergError):
    """A table's files are missing or unreadable, or the catalog lost a table whose folder still
    holds its metadata: names the table and the file or folder."""


def _warehouse_uri(output_dir: str) -> str:
    if output_dir.startswith(_URI_SCHEMES):
        return output_dir
    return Path(os.path.abspath(output_dir)).as_uri()


_LOCATION_CATALOGS = frozenset({"sql", "glue", "hive", "dynamodb"})


def _property_text(value: t.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def catalog_properties(settings: TargetSettings) -> dict[str, str]:
    """pyiceberg catalog properties from the target's settings (see the module docstring)."""
    output_dir = settings.output_dir
    custom = settings.iceberg_catalog
    if custom:
        properties = {str(k): _property_text(v) for k, v in dict(custom).items()}
        if properties.get("type") in _LOCATION_CATALOGS:
            # Catalogs that take the warehouse as a location; a REST server names its own.
            properties.setdefault("warehouse", _warehouse_uri(output_dir))
        if properties.get("type") == "sql" and "uri" in properties:
            properties["uri"] = _with_connect_timeout(properties["uri"])
        return properties
    if output_dir.startswith(_URI_SCHEMES) and not output_dir.startswith("file://"):
        msg = (
            f"output_dir {output_dir!r} is in object storage: the embedded SQLite catalog needs "
            "a local file, so set iceberg_catalog (a REST, Glue or SQL catalog) for this warehouse"
        )
        raise ValueError(msg)
    root = Path(os.path.abspath(output_dir))
    root.mkdir(parents=True, exist_ok=True)
    return {
        "type": "sql",
        # timeout: seconds a writer waits for another's SQLite write lock (commits are short).
        "uri": f"sqlite:///{root / 'catalog.db'}?timeout=60",
        "warehouse": root.as_uri(),
        # fsync what pyiceberg writes, as the parts do (iceberg_io.py)
        "py-io-impl": "target_parquet_parts.iceberg_io.DurableLocalFileIO",
    }


def _with_connect_timeout(uri: str) -> str:
    """A PostgreSQL URI with ``connect_timeout`` (``POSTGRES_CONNECT_TIMEOUT_SECONDS``) unless
    it sets one; any other URI as it is."""
    parts = urlsplit(uri)
    if not parts.scheme.startswith("postgresql"):
        return uri
    if any(key == "connect_timeout" for key, _ in parse_qsl(parts.query)):
        return uri
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(
        parts._replace(query=f"{query}connect_timeout={POSTGRES_CONNECT_TIMEOUT_SECONDS}")
    )


def _lost_catalog_race(error: BaseException) -> bool:
    """Whether opening a SQL catalog failed because another writer created its tables first."""
    text = str(error).lower()
    return any(sign in text for sign in _CATALOG_RACE_SIGNS)


def load_iceberg_catalog(settings: TargetSettings) -> Catalog:
    """The pyiceberg catalog the target's settings name.

    A SQL catalog creates its own tables on first use, checking first and then creating: writers
    that open a new catalog together all see no tables, and all but one fail with "table
    iceberg_tables already exists". A database error while opening is therefore retried; the
    next attempt finds the tables the winner created. A real fault fails every attempt.
    """
    properties = catalog_properties(settings)
    name = properties.pop("name", "default")
    for attempt in range(1, CATALOG_OPEN_ATTEMPTS + 1):
        try:
            return load_catalog(name, **properties)
        except Exception as exc:
            # SQLAlchemy's errors looked up only on an error, and only if it is loaded (an error
            # SQLAlchemy raised): opening a REST or Glue catalog does not import it
            database_error = sqlalchemy_errors("DBAPIError") if "sqlalchemy" in sys.modules else ()
            if (
                attempt == CATALOG_OPEN_ATTEMPTS
                or not isinstance(exc, database_error)
                or not _lost_catalog_race(exc)
            ):
                raise
            log_event(
                logger,
                logging.INFO,
                "iceberg_catalog_retry",
                catalog=name,
                attempt=attempt,
                reason=type(exc).__name__,
                error=str(exc).splitlines()[0][:200],
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _hide_password(uri: str) -> str:
    """``uri`` with the password of its user part (``user:password@``) shown as ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    netloc = f"{parts.username or ''}:***@{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def describe_catalog(properties: Mapping[str, str]) -> str:
    """How messages name a catalog: its file, its URL (password hidden) or its name.

    ``SQLite catalog file '/out/catalog.db'``, ``SQL catalog 'postgresql://app:***@h/db'``,
    ``REST catalog 'https://cat.example/api'``, ``glue catalog 'default'``.
    """
    uri = properties.get("uri", "")
    kind = properties.get("type") or ("rest" if uri.startswith(("http:", "https:")) else "")
    if kind == "sql" and uri:
        try:
            url = importlib.import_module("sqlalchemy.engine").make_url(uri)
        except Exception:  # not an SQLAlchemy URL, or no SQLAlchemy: the generic form below
            return f"SQL catalog {_hide_password(uri)!r}"
        if url.get_backend_name() == "sqlite" and url.database:
            return f"SQLite catalog file {url.database!r}"
        return f"SQL catalog {url.render_as_string(hide_password=True)!r}"
    label = "REST" if kind == "rest" else (kind or "Iceberg")
    if uri:
        return f"{label} catalog {_hide_password(uri)!r}"
    return f"{label} catalog {properties.get('name', 'default')!r}"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error's text, at most ``limit`` characters."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_QUOTED = re.compile(r"'([^']+)'")
_METADATA_VERSION = re.compile(r"^v?(\d+)[-.]")


def _missing_path(exc: OSError) -> str | None:
    """The path an ``ENOENT`` names (pyarrow's errors carry it only in their text)."""
    if exc.filename is not None:
        return str(exc.filename)
    match = _QUOTED.search(str(exc))
    return match.group(1) if match else None


def _file_kind(path: str) -> str:
    """What a file of an Iceberg table is, from its name."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(".metadata.json"):
        return "metadata file"
    if name.startswith("snap-") and name.endswith(".avro"):
        return "manifest list"
    if name.endswith(".avro"):
        return "manifest"
    if name.endswith(".parquet"):
        return "data file"
    return "file"


def _metadata_version(location: str) -> int | None:
    """``00012-<uuid>.metadata.json`` (or ``v12.metadata.json``) -> 12; None if unnamed so."""
    match = _METADATA_VERSION.match(location.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def _metadata_parse_error(exc: BaseException) -> pydantic.ValidationError | None:
    """pydantic's error when pyiceberg could not parse a metadata JSON (``TableMetadataWrapper``;
    pyiceberg re-raises it as its own ``ValidationError``, the pydantic one its cause)."""
    for error in (exc, exc.__cause__):
        if isinstance(error, pydantic.ValidationError) and "TableMetadata" in error.title:
            return error
    return None


def _validation_summary(exc: pydantic.ValidationError) -> str:
    """``Invalid JSON: EOF while parsing ...`` / ``Field required: 'location'`` (the first)."""
    errors = exc.errors()
    if not errors:
        return _one_line(exc)
    first = errors[0]
    fields = [str(part) for part in first.get("loc", ()) if not str(part).isdigit()]
    where = f": {'.'.join(fields)!r}" if fields else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.get('msg', 'invalid')}{where}{more}"


def _catalog_metadata_location(catalog: Catalog | None, identifier: tuple[str, ...]) -> str | None:
    """The metadata file a SQL catalog names as the table's current one (None otherwise).

    Read from the catalog's own row: loading the table parses that file, which is what failed.
    """
    if catalog is None:
        return None
    try:
        sql = importlib.import_module("pyiceberg.catalog.sql")
        if not isinstance(catalog, sql.SqlCatalog):
            return None
        sqlalchemy = importlib.import_module("sqlalchemy")
        orm = importlib.import_module("sqlalchemy.orm")
        rows = sql.IcebergTables
        query = sqlalchemy.select(rows.metadata_location).where(
            rows.catalog_name == catalog.name,
            rows.table_namespace == Catalog.namespace_to_string(identifier[:-1]),
            rows.table_name == identifier[-1],
        )
        with orm.Session(catalog.engine) as session:
            location = session.scalar(query)
    except Exception:  # only for a better message: never mask the error being described
        return None
    return str(location) if location else None


def _default_table_folder(catalog: Catalog, identifier: tuple[str, ...]) -> str | None:
    """Where ``catalog`` creates table ``identifier`` when given no location.

    pyiceberg's rule (``MetastoreCatalog._get_default_warehouse_location``): the namespace's
    ``location`` property plus the table name, else ``{warehouse}/{namespace}/{table}``. None
    for catalogs that choose locations themselves (REST: the server keeps its own state).
    """
    if not isinstance(catalog, MetastoreCatalog):
        return None
    namespace = identifier[:-1]
    try:
        location = catalog.load_namespace_properties(namespace).get("location")
    except NoSuchNamespaceError:
        location = None
    if location:
        return f"{location.rstrip('/')}/{identifier[-1]}"
    warehouse = catalog.properties.get("warehouse")
    if not warehouse:
        return None
    return f"{warehouse.rstrip('/')}/{Catalog.namespace_to_string(namespace)}/{identifier[-1]}"


def _metadata_files(catalog: Catalog, folder: str) -> list[str]:
    """Locations of the ``*.metadata.json`` files in ``{folder}/metadata`` (none if absent).

    Listed through the catalog's FileIO filesystem (pyarrow: local, S3, GCS, ADLS, HDFS); a
    FileIO that cannot list (fsspec) is listed only for local paths.
    """
    metadata = f"{folder}/metadata"
    io = load_file_io(properties=catalog.properties, location=metadata)
    scheme, netloc, path = PyArrowFileIO.parse_location(metadata)
    if isinstance(io, PyArrowFileIO):
        filesystem = io.fs_by_scheme(scheme, netloc)
        infos = filesystem.get_file_info(FileSelector(path, allow_not_found=True))
        names = [info.base_name for info in infos if info.type == FileType.File]
    elif scheme == "file":
        names = os.listdir(path) if os.path.isdir(path) else []
    else:
        return []
    return sorted(f"{metadata}/{name}" for name in names if name.endswith(".metadata.json"))


def namespace_of(settings: TargetSettings) -> tuple[str, ...]:
    """``iceberg_namespace`` as an identifier tuple (dots separate levels)."""
    raw = settings.iceberg_namespace or DEFAULT_NAMESPACE
    return tuple(part for part in raw.split(".") if part) or (DEFAULT_NAMESPACE,)


def table_identifier(settings: TargetSettings, stream_name: str) -> tuple[str, ...]:
    """(namespace..., table): the table is named like the stream's directory."""
    return (*namespace_of(settings), sanitize_stream_name(stream_name))


def iceberg_schema(arrow_schema: pa.Schema) -> Schema:
    """The Iceberg schema (fresh field ids) for an Arrow schema from ``arrow_schema.py``."""
    # The conversion leaves every field id -1; the partition spec needs real ones.
    return assign_fresh_schema_ids(Catalog._convert_schema_if_needed(arrow_schema))


def day_partition_spec(schema: Schema, field_name: str | None) -> PartitionSpec:
    """``day(field)`` when the stream has its partition field, else unpartitioned."""
    if not field_name:
        return UNPARTITIONED_PARTITION_SPEC
    source = schema.find_field(field_name)
    return PartitionSpec(
        PartitionField(
            source_id=source.field_id,
            field_id=1000,
            transform=DayTransform(),
            name=f"{field_name}_day",
        )
    )


def _test_kill(point: str, commit_number: int) -> None:
    """Test-only crash hook (module docstring); a no-op unless the variable names this point."""
    wanted = os.environ.get(_TEST_KILL_ENV)
    if wanted and wanted == f"{point}:{commit_number}":
        os.kill(os.getpid(), signal.SIGKILL)


def _type_text(field_type: IcebergType) -> str:
    """``string``, ``struct<text: string>``, ``list<long>``, ``map<string, long>``."""
    if isinstance(field_type, StructType):
        inner = ", ".join(f"{f.name}: {_type_text(f.field_type)}" for f in field_type.fields)
        return f"struct<{inner}>"
    if isinstance(field_type, ListType):
        return f"list<{_type_text(field_type.element_type)}>"
    if isinstance(field_type, MapType):
        return f"map<{_type_text(field_type.key_type)}, {_type_text(field_type.value_type)}>"
    return str(field_type)


def _promotable(source: IcebergType, target: IcebergType) -> bool:
    try:
        promote(source, target)
    except ResolveError:
        return False
    return True


def _type_changes(old: IcebergType, new: IcebergType, path: str = "") -> Iterator[str]:
    """Each field, by its full name, whose type in ``new`` the table (``old``) cannot take.

    Matched by name as ``union_by_name`` does; a primitive may widen either way (the narrower
    new type is then ignored), anything else must keep its kind.
    """
    if isinstance(old, StructType) and isinstance(new, StructType):
        for field in new.fields:
            existing = old.field_by_name(field.name)
            if existing is not None:
                name = f"{path}.{field.name}" if path else field.name
                yield from _type_changes(existing.field_type, field.field_type, name)
    elif isinstance(old, ListType) and isinstance(new, ListType):
        yield from _type_changes(old.element_type, new.element_type, f"{path}.element")
    elif isinstance(old, MapType) and isinstance(new, MapType):
        yield from _type_changes(old.key_type, new.key_type, f"{path}.key")
        yield from _type_changes(old.value_type, new.value_type, f"{path}.value")
    elif old.is_primitive and new.is_primitive:
        if old != new and not _promotable(new, old) and not _promotable(old, new):
            yield (
                f"field '{path}' is {_type_text(old)} in the table, {_type_text(new)} in the "
                "SCHEMA message"
            )
    else:
        yield (
            f"field '{path}' is {_type_text(old)} in the table, {_type_text(new)} in the SCHEMA "
            "message"
        )


class StreamTable:
    """One Iceberg table as seen by one run: creation, evolution, replay set, commits."""

    def __init__(self, writer: IcebergWriter, stream_name: str) -> None:
        self.writer = writer
        self.stream_name = stream_name
        self.identifier = table_identifier(writer.settings, stream_name)
        self.name = ".".join(self.identifier)
        self.table: Table | None = None
        self.flushes = 0
        self._schemas_applied: set[pa.Schema] = set()
        self._replay: ReplaySet | None = None
        self._replay_loaded = False
        retention = writer.settings.iceberg_snapshot_retention_hours
        self._expiry = (
            RunningExpiry(retention, rng=writer.rng, stream=stream_name)
            if retention is not None
            else None
        )

    def _open(self, arrow_schema: pa.Schema, partition_field: str | None) -> Table:
        if self.table is not None:
            return self.table
        catalog = self.writer.catalog
        try:
            table = catalog.load_table(self.identifier)
        except NoSuchTableError:
            found = self._existing_table_of_folder(catalog)
            if found is not None:  # created by another writer since the first look
                self.table = self._with_table_properties(found)
                return self.table
            table = self._create(arrow_schema, partition_field)
            log_event(
                logger,
                logging.INFO,
                "iceberg_table_ready",
                stream=self.stream_name,
                table=self.name,
                location=table.location(),
                partition_field=partition_field,
            )
        self.table = self._with_table_properties(table)
        return self.table

    def _with_table_properties(self, table: Table) -> Table:
        """An existing table, given the ``MANIFEST_TABLE_PROPERTIES`` it does not have yet.

        A table created by an earlier version of the target, or by another tool, would otherwise
        merge every manifest into one that grows with the table, and keep a metadata file per
        commit (``iceberg_commits.py``): a long run's memory and disk would grow with each flush.
        One metadata-only commit, once; a value the owner set, even a different one, is kept.
        """
        missing = sorted(set(MANIFEST_TABLE_PROPERTIES) - set(table.properties))
        if not missing:
            return table

        def stage(transaction: Transaction) -> None:
            current = transaction.table_metadata.properties
            todo = {k: MANIFEST_TABLE_PROPERTIES[k] for k in missing if k not in current}
            if todo:
                transaction.set_properties(todo)

        table, _ = commit_with_retry(
            table, stage, rng=self.writer.rng, log=logger, stream=self.stream_name
        )
        log_event(
            logger,
            logging.INFO,
            "iceberg_table_properties_set",
            stream=self.stream_name,
            table=self.name,
            properties={k: table.properties.get(k) for k in missing},
        )
        return table

    def _existing_table_of_folder(self, catalog: Catalog) -> Table | None:
        """The catalog has no such table: refuse if its folder holds a table with commits.

        Creating the table would start a second, empty metadata lineage in the old table's
        folder: the catalog would show only the new rows, the old ones stay on disk unseen, and
        the exactly-once bookkeeping (snapshot summaries) of the old table is gone. So when
        ``{folder}/metadata/`` holds a metadata file of version 1 or more (a table that had a
        commit), this raises ``IcebergTableError`` naming the folder, the newest metadata file
        and how to re-register it. Version-0 files alone are tables created and never committed
        to (no rows): a writer racing another's creation sees its ``00000-`` file before its
        catalog row, so those do not stop it.

        Why refuse rather than ``Catalog.register_table(identifier, newest)``, which pyiceberg
        0.12's ``SqlCatalog`` has: re-registering is exactly-once-safe only if the newest file
        is the table's current metadata, and nothing on disk says so. pyiceberg writes a
        commit's new metadata file before the catalog swap, so a commit that failed leaves a
        newest file the catalog never accepted: a writer that lost a race to a concurrent writer
        (two files of the same version, one of them rejected), or one killed, or left with an
        unknown outcome, between the write and the swap. Registering such a file would resurrect
        a rejected commit or hide an accepted one, and the STATEs already emitted would no longer
        match the table. The catalog may also have been lost with other writers still running,
        or the table dropped on purpose (``drop_table`` keeps the files); and a lost catalog lost
        every other table too. A person has to look: a refused run writes and commits nothing
        and emits no STATE, so the next run, after the table is re-registered, resumes exactly
        where the last STATE left off.

        Found on a second look (another writer created the table between the first look and the
        listing): that table is returned. None: nothing there, create the table.
        """
        folder = _default_table_folder(catalog, self.identifier)
        if folder is None:
            return None
        files = _metadata_files(catalog, folder)
        versions = {location: _metadata_version(location) for location in files}
        # a name without a version is not a fresh creation's: counted as a table with commits
        if not any(version != 0 for version in versions.values()):
            return None
        try:
            return catalog.load_table(self.identifier)
        except NoSuchTableError:
            pass
        newest_version = max((v for v in versions.values() if v is not None), default=None)
        newest = sorted(loc for loc, v in versions.items() if v == newest_version) or files[-1:]
        also = ""
        if len(newest) > 1:
            others = ", ".join(repr(location) for location in newest[1:])
            also = (
                f"; version {newest_version} also in {others}: all but one of them are "
                "from commits that failed"
            )
        namespace = Catalog.namespace_to_string(self.identifier[:-1])
        msg = (
            f"Iceberg table {self.name} is not in the {self.writer.catalog_text()}, but its "
            f"folder '{folder}/metadata' holds {len(files)} metadata files of a table with "
            f"commits (newest: {newest[0]!r}{also}): the catalog was lost or replaced, or the "
            "table dropped; a new table there would hide those rows, so nothing was written. "
            "To keep the table, re-register its current metadata file (normally the newest, "
            "unless a commit failed after writing it) in this catalog with pyiceberg: "
            f"catalog.create_namespace_if_not_exists({namespace!r}); "
            f"catalog.register_table({self.name!r}, {newest[0]!r}); "
            f"to start a new table instead, move the folder '{folder}' away"
        )
        raise IcebergTableError(msg)

    def _create(self, arrow_schema: pa.Schema, partition_field: str | None) -> Table:
        """Create the namespace and table, or take the ones another writer just created.

        ``create_*_if_not_exists`` check, then insert: two writers starting together both pass
        the check, and the SQL catalog's second insert fails on its unique key
        (``IntegrityError``, not ``...AlreadyExistsError``). Whatever a creation raises, the
        table is looked up again; it is an error only if it still does not exist.
        """
        catalog = self.writer.catalog
        schema = iceberg_schema(arrow_schema)
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                catalog.create_namespace_if_not_exists(self.identifier[:-1])
                return catalog.create_table_if_not_exists(
                    self.identifier,
                    schema=schema,
                    partition_spec=day_partition_spec(schema, partition_field),
                    properties=MANIFEST_TABLE_PROPERTIES,
                )
            except Exception:
                try:
                    return catalog.load_table(self.identifier)
                except NoSuchTableError:
                    if attempt == CREATE_ATTEMPTS:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _evolve(self, table: Table, arrow_schema: pa.Schema) -> Table:
        """Make the table schema a superset of ``arrow_schema`` (idempotent)."""
        if arrow_schema in self._schemas_applied:
            return table

        def stage(transaction: Transaction) -> None:
            try:
                with transaction.update_schema() as update:
                    update.union_by_name(arrow_schema)
            except (ValidationError, ValueError, TypeError) as exc:
                current = transaction.table_metadata.schema()
                raise self._schema_error(current, arrow_schema, exc) from None

        before = table.schema().schema_id
        table, _ = commit_with_retry(
            table, stage, rng=self.writer.rng, log=logger, stream=self.stream_name
        )
        if table.schema().schema_id != before:
            log_event(
                logger,
                logging.INFO,
                "iceberg_schema_evolved",
                stream=self.stream_name,
                table=self.name,
                schema_id=table.schema().schema_id,
                columns=len(table.schema().fields),
            )
        self._schemas_applied.add(arrow_schema)
        return table

    def _schema_error(
        self, current: Schema, arrow_schema: pa.Schema, exc: Exception
    ) -> IcebergSchemaError:
        """Name the stream, the table and each field whose type the table cannot take."""
        changes = list(_type_changes(current.as_struct(), iceberg_schema(arrow_schema).as_struct()))
        what = "; ".join(changes[:5]) + (
            f"; and {len(changes) - 5} more" if len(changes) > 5 else ""
        )
        msg = (
            f"stream '{self.stream_name}': the SCHEMA message cannot evolve Iceberg table "
            f"{self.name}: {what or _one_line(exc)} (Iceberg allows new columns and widening "
            "int->long, float->double; a column that changes type needs a new stream or table)"
        )
        return IcebergSchemaError(msg)

    def prepare(self, arrow_schema: pa.Schema, partition_field: str | None) -> None:
        """Open (create) the table and evolve its schema for a batch of this Arrow schema."""
        table = self._open(arrow_schema, partition_field)
        self.table = self._evolve(table, arrow_schema)

    def drop_replayed(self, batch: pa.Table, keys: t.Sequence[str]) -> tuple[pa.Table, int]:
        """Drop the rows a crashed run of this table already committed (iceberg_ledger.py)."""
        assert self.table is not None
        if not self._replay_loaded:
            self._replay_loaded = True
            self._replay = load_replay_set(self.table, self.writer.run_id, keys)
            if self._replay is not None:
                log_event(
                    logger,
                    logging.INFO,
                    "iceberg_replay_loaded",
                    stream=self.stream_name,
                    table=self.name,
                    rows=len(self._replay),
                )
        if self._replay is None:
            return batch, 0
        return self._replay.drop_replayed(batch)

    def write_files(self, batch: pa.Table) -> list[t.Any]:
        """Write ``batch`` as the table's data files (not yet visible: no commit)."""
        assert self.table is not None
        if not batch.num_rows:
            return []
        return list(_dataframe_to_data_files(self.table.metadata, batch, self.table.io))

    def _stage(
        self, transaction: Transaction, properties: dict[str, str], data_files: list[t.Any]
    ) -> None:
        mark_stateful(transaction, self.writer.states_emitted)
        stage_snapshot(transaction, properties, data_files)

    def commit(self, data_files: list[t.Any], state_index: int) -> tuple[Snapshot | None, int]:
        """Commit ``data_files`` as this run's next flush; (snapshot, attempts)."""
        assert self.table is not None
        self.flushes += 1
        flush = self.flushes
        run_id = self.writer.run_id
        properties = commit_properties(run_id, flush, state_index, self.writer.states_emitted)
        number = self.writer.next_commit_number()
        _test_kill("before_commit", number)
        table, attempts = commit_with_retry(
            self.table,
            lambda tx: self._stage(tx, properties, data_files),
            rng=self.writer.rng,
            log=logger,
            stream=self.stream_name,
            landed=lambda tbl: find_commit(tbl.metadata.snapshots, run_id, flush),
        )
        _test_kill("after_commit", number)
        snapshot = find_commit(reversed(table.metadata.snapshots), run_id, flush)
        self.table = table if self._expiry is None else self._expiry.after_commit(table)
        return snapshot, attempts

    def finish(self, *, completed: bool, all_covered: bool) -> None:
        """End marker of a run (only for tables this run committed to): iceberg_ledger.py."""
        if self.table is None or not self.flushes:
            return
        complete = completed and (all_covered or not ever_stateful(self.table.metadata))
        properties = end_properties(
            self.writer.run_id, self.writer.states_emitted, complete=complete
        )
        self.table, _ = commit_with_retry(
            self.table,
            lambda tx: self._stage(tx, properties, []),
            rng=self.writer.rng,
            log=logger,
            stream=self.stream_name,
        )
        log_event(
            logger,
            logging.INFO,
            "iceberg_run_end",
            stream=self.stream_name,
            table=self.name,
            run_id=self.writer.run_id,
            commits=self.flushes,
            complete=complete,
        )


def bound_pyiceberg_workers() -> None:
    """Give pyiceberg's process-wide worker pool ``PYICEBERG_WORKERS`` threads, unless the
    user set its size (``max-workers``: ``PYICEBERG_MAX_WORKERS`` or ``.pyiceberg.yaml``).

    pyiceberg runs a commit's manifest tasks and the data file writes on one
    ``ThreadPoolExecutor``, by default of ``os.cpu_count() + 4`` threads (6 on 2 CPUs, 20 on
    16). The executor starts a thread only when a task finds none idle: the first commit's three
    manifest tasks (added, deleted, existing: all at once) start three; the others start one by
    one, whenever a manifest merge or a write finds those busy, later and later as a long run
    goes on. Each new thread keeps its own allocator caches (a glibc arena, a mimalloc heap of
    Arrow's writes), about 3 MB of RSS that was not there at the first commit: a target
    committing at every STATE grew by 11% between its 1,000th and its 100,000th commit, 3 more
    threads (``benchmarks/memory_flushes.py --output iceberg``), and would grow more on a
    machine with more CPUs. A pool no larger than what every commit uses is full from the first
    commit; commits are no slower (a flush writes one data file per partition, on 2 CPUs).

    pyiceberg 0.12 sizes its pool only from that process-wide setting, read when the pool is
    made: this sets it (pyiceberg's own environment variable, its public configuration) when
    the user did not. A pool pyiceberg already made in this process is left as it is.
    """
    if ExecutorFactory.max_workers() is None:
        os.environ["PYICEBERG_MAX_WORKERS"] = str(PYICEBERG_WORKERS)


class IcebergWriter:
    """The target's Iceberg side: the catalog, one ``StreamTable`` per table, the run id.

    Thread-safe: the SDK may drain sinks in parallel; data files are written in parallel, the
    catalog calls (load, create, evolve, commit) are serialized by one lock.
    """

    def __init__(self, settings: TargetSettings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.rng = random.Random(run_id)
        self.default_batch_size_rows = DEFAULT_BATCH_SIZE_ROWS
        self.states_emitted = 0
        self._catalog: Catalog | None = None
        self._tables: dict[tuple[str, ...], StreamTable] = {}
        self._lock = threading.RLock()
        self._commits = 0
        self._uncollected = 0
        bound_pyiceberg_workers()

    @property
    def catalog(self) -> Catalog:
        """The catalog (loaded on first use)."""
        with self._lock:
            if self._catalog is None:
                with self._explained(None):
                    self._catalog = load_iceberg_catalog(self.settings)
            return self._catalog

    def open_catalog_ahead(self) -> None:
        """Open the catalog before a flush needs it: a speed-up only (the target runs this
        on the part writer while its first batch is read). A failure is left to the first
        flush, which opens the catalog again and names the fault with its context."""
        try:
            self.catalog  # noqa: B018 - the property opens it
        except Exception as exc:  # the first flush raises it again, explained
            logger.debug(
                "Iceberg catalog not opened ahead of the first flush: %s", type(exc).__name__
            )

    def catalog_text(self) -> str:
        """How messages name this run's catalog (``describe_catalog``)."""
        try:
            return describe_catalog(catalog_properties(self.settings))
        except Exception:  # only for a message: the settings' own error is raised elsewhere
            return "Iceberg catalog"

    @contextmanager
    def _explained(self, table: StreamTable | None) -> Iterator[None]:
        """Re-raise what the catalog or a table's files raise as a one-line ``IcebergError``.

        ``table``: the table being worked on (None while opening the catalog). Errors this does
        not recognise go on unchanged.
        """
        try:
            yield
        except (IcebergError, IcebergSchemaError):
            raise
        except Exception as exc:
            described = self._describe(exc, table)
            if described is None:
                raise
            raise described from exc

    def _describe(self, exc: Exception, table: StreamTable | None) -> IcebergError | None:
        if isinstance(exc, module_errors("requests.exceptions", "RequestException")):
            return IcebergCatalogError(
                f"Iceberg {self.catalog_text()} is unreachable: {type(exc).__name__}: "
                f"{_one_line(exc)} (check iceberg_catalog's uri and that the catalog is up)"
            )
        if isinstance(exc, sqlalchemy_errors("DBAPIError")):
            return IcebergCatalogError(self._database_message(exc))
        if table is None:
            return None
        unreadable = _metadata_parse_error(exc)
        if unreadable is not None:
            current = _catalog_metadata_location(self._catalog, table.identifier)
            if current is None and table.table is not None:
                current = table.table.metadata_location
            where = repr(current) if current else "(the one the catalog names)"
            return IcebergTableError(
                f"Iceberg table {table.name}: its metadata file {where} is unreadable or "
                f"corrupt ({_validation_summary(unreadable)}); this batch was not committed: "
                "restore the file from a backup (pointing the catalog at an earlier metadata "
                "file would drop every commit made after it)"
            )
        if isinstance(exc, FileNotFoundError):
            path = _missing_path(exc)
            if path is not None:
                return IcebergTableError(
                    f"Iceberg table {table.name}: its {_file_kind(path)} {path!r} is missing "
                    "(FileNotFoundError): files under the table's folder were deleted or moved; "
                    "this batch was not committed: restore them from a backup"
                )
        if isinstance(exc, NoSuchTableError) and table.table is not None:
            return IcebergTableError(
                f"Iceberg table {table.name} is no longer in the {self.catalog_text()}: the "
                "table was dropped, or the catalog replaced, while this run wrote to it"
            )
        return None

    def _database_message(self, exc: Exception) -> str:
        """A SQL catalog's database failed: name the file (or URL) and what to do."""
        cause = getattr(exc, "orig", None) or exc
        text = f"{type(cause).__name__}: {_one_line(cause)}"
        catalog = self.catalog_text()
        sqlite = catalog.startswith("SQLite catalog file")
        if isinstance(exc, sqlalchemy_errors("OperationalError")) and sqlite:
            advice = "check that it can be read and written, and by this user"
        elif isinstance(exc, sqlalchemy_errors("OperationalError")):
            advice = (
                "check that the server is up and reachable from here, and iceberg_catalog's "
                "uri: host, port, database, user and password"
            )
        elif sqlite:
            advice = (
                "the file is damaged: restore it from a backup, or move it away (a run then "
                "starts a new catalog and names, for each table whose folder has metadata, the "
                "file to re-register)"
            )
        else:
            advice = "check iceberg_catalog's uri and the database"
        return f"Iceberg {catalog} cannot be used: {text}; {advice}"

    def next_commit_number(self) -> int:
        """Commits made by this process so far, this one included (the test hook counts them)."""
        self._commits += 1
        return self._commits

    def _collect_cycles(self) -> None:
        """Every ``COLLECT_EVERY_COMMITS`` commits, collect the young generations (0 and 1).

        Each commit through pyiceberg's SQL catalog leaves reference cycles (SQLAlchemy
        expression objects, about 7 per commit) that only the cyclic collector frees. The CLI
        runs it rarely (``gc.freeze()`` and raised thresholds, ``TargetParquetParts.invoke``),
        and a flush leaves too few objects to trigger it: a long run kept every commit's cycles,
        its RSS growing with each. A young collection scans only what was allocated since the
        last one (neither the frozen nor the old heap), once per that many commits.
        """
        self._uncollected += 1
        if self._uncollected >= COLLECT_EVERY_COMMITS:
            self._uncollected = 0
            gc.collect(1)

    def stream_table(self, stream_name: str) -> StreamTable:
        """The table of a stream (one object per table, shared by its successive sinks)."""
        identifier = table_identifier(self.settings, stream_name)
        with self._lock:
            table = self._tables.get(identifier)
            if table is None:
                table = StreamTable(self, stream_name)
                self._tables[identifier] = table
            return table

    def write_batch(
        self,
        stream_name: str,
        batch: pa.Table,
        *,
        keys: t.Sequence[str],
        partition_field: str | None,
        state_index: int,
    ) -> dict[str, t.Any]:
        """Filter replays, write data files, commit; return what the flush log reports."""
        table = self.stream_table(stream_name)
        with self._lock, self._explained(table):
            table.prepare(batch.schema, partition_field)
            batch, dropped = table.drop_replayed(batch, keys)
        written = time.perf_counter()
        files = table.write_files(batch)
        files_done = time.perf_counter()
        snapshot: Snapshot | None = None
        attempts = 0
        if files:
            with self._lock, self._explained(table):
                snapshot, attempts = table.commit(files, state_index)
                self._collect_cycles()
        committed = time.perf_counter()
        result = {
            "table": table.name,
            "dropped": dropped,
            "rows": batch.num_rows,
            "files": [f.file_path for f in files],
            "bytes": sum(f.file_size_in_bytes for f in files),
            "write_ms": round((files_done - written) * 1000, 3),
            "commit_ms": round((committed - files_done) * 1000, 3),
            "attempts": attempts,
            "snapshot_id": snapshot.snapshot_id if snapshot is not None else None,
        }
        if files:
            log_event(
                logger,
                logging.INFO,
                "iceberg_commit",
                stream=stream_name,
                table=table.name,
                snapshot_id=result["snapshot_id"],
                rows=batch.num_rows,
                files=len(files),
                attempts=attempts,
                commit_ms=result["commit_ms"],
            )
        return result

    def finish(self, *, completed: bool, all_covered: bool) -> None:
        """After the final STATE: end markers, then close the catalog.

        ``completed``: the input ended without a stop signal; ``all_covered``: every record
        this run received came before the last STATE it emitted (False when it emitted none).
        """
        try:
            with self._lock:
                for table in self._tables.values():
                    table.finish(completed=completed, all_covered=all_covered)
        finally:
            self.close()

    def close(self) -> None:
        """Release the catalog's connections."""
        with self._lock:
            catalog, self._catalog = self._catalog, None
            close = getattr(catalog, "close", None)
            if close is not None:
                close()
