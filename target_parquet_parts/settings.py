"""The target's settings: declared once (``CONFIG_SCHEMA``), read once into ``TargetSettings``.

The JSON Schema is what the SDK validates, what ``--about`` prints and what the README's
settings table is generated from. ``TargetSettings`` is the typed view every part of the target
(sinks, storage, Iceberg) and ``target-parquet-parts-compact`` use: numbers converted once (the
SDK hands JSON numbers over as ``Decimal``; environment variables arrive as text), defaults
taken from the schema, so no module converts or defaults a setting on its own. Two SDK settings
the target reads itself (``batch_size_rows``, ``load_method``) are typed here too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from singer_sdk import typing as th

from plugin_io.settings_types import SettingError, SettingTypes

__all__ = [
    "CONFIG_SCHEMA",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_NAMESPACE",
    "DEFAULT_STATE_MAX_LAG_SECONDS",
    "ENV_PREFIX",
    "SDK_SETTINGS",
    "SettingError",
    "TargetSettings",
    "config_from_env",
    "numbers_from_text",
]

TABLE_FORMATS = ["parquet", "parts", "iceberg"]
COMPRESSIONS = ["zstd", "snappy", "gzip", "brotli", "lz4", "none"]
DEFAULT_MAX_BATCH_BYTES = 128 * 1024 * 1024
DEFAULT_STATE_MAX_LAG_SECONDS = 60.0
DEFAULT_LOCK_LEASE_SECONDS = 60.0  # the object-store run lock's lease (objectstore.py)
DEFAULT_NAMESPACE = "singer"
ENV_PREFIX = "TARGET_PARQUET_PARTS_"  # Meltano's (and --config=ENV) names: TARGET_PARQUET_PARTS_*
# SDK built-in settings (appended to the schema by the SDK) that the target reads itself.
SDK_SETTINGS: dict[str, str] = {"batch_size_rows": "integer", "load_method": "string"}


CONFIG_SCHEMA: dict[str, Any] = th.PropertiesList(
    th.Property(
        "output_dir",
        th.StringType(nullable=False),
        required=True,
        description="Dataset root: a directory or an `s3://`, `gs://`, `az://` URI.",
    ),
    th.Property(
        "compression",
        th.StringType,
        default="zstd",
        allowed_values=COMPRESSIONS,
        description="Parquet compression codec: zstd, snappy, gzip, brotli, lz4 or none.",
    ),
    th.Property(
        "compression_level",
        th.IntegerType,
        description="Codec level (codec default when unset).",
    ),
    th.Property(
        "max_batch_bytes",
        th.IntegerType,
        default=DEFAULT_MAX_BATCH_BYTES,
        description=(
            "Most bytes of JSON one stream buffers: a part is written before a record would "
            "pass it (a larger record gets a part of its own)"
        ),
    ),
    th.Property(
        "partition_date_field",
        th.StringType,
        description=(
            "A `date-time` or `date` field: streams with it get `date=YYYY-MM-DD` directories "
            "(UTC; nulls: `date=__HIVE_DEFAULT_PARTITION__`); others are not partitioned"
        ),
    ),
    th.Property(
        "state_max_lag_seconds",
        th.NumberType,
        default=DEFAULT_STATE_MAX_LAG_SECONDS,
        description=(
            "Longest a received STATE waits for sinks that are not full: then they are "
            "flushed so it can be emitted. 0 = flush at every STATE"
        ),
    ),
    th.Property(
        "overlap_writes",
        th.BooleanType,
        default=True,
        description=(
            "Write each part (encode, compress, fsync or upload; with Iceberg, the data files "
            "and the commit) on a worker while the next records are read; STATE still waits "
            "for it. false: write on the reading thread"
        ),
    ),
    th.Property(
        "lock_lease_seconds",
        th.NumberType,
        default=DEFAULT_LOCK_LEASE_SECONDS,
        description=(
            "Object storage: the run lock's lease (renewed every third of it; not renewed "
            "this long: taken over), 3 to 3600"
        ),
    ),
    th.Property(
        "table_format",
        th.StringType,
        default="parquet",
        allowed_values=TABLE_FORMATS,
        description=(
            "`parquet` (or `parts`): plain parts; `iceberg`: Iceberg tables (`iceberg` extra)"
        ),
    ),
    th.Property(
        "iceberg_catalog",
        th.ObjectType(additional_properties=True),
        description=(
            "pyiceberg catalog properties; unset: SQLite `{output_dir}/catalog.db`. A catalog "
            "in memory is refused: it would end with the run"
        ),
    ),
    th.Property(
        "iceberg_namespace",
        th.StringType,
        default=DEFAULT_NAMESPACE,
        description="Namespace of the Iceberg tables",
    ),
    th.Property(
        "iceberg_snapshot_retention_hours",
        th.NumberType,
        description=("Iceberg: expire snapshots older than this while running; unset: keep all"),
    ),
).to_dict()


@dataclasses.dataclass(frozen=True)
class TargetSettings:
    """Every target setting, typed; defaults are ``CONFIG_SCHEMA``'s (a test keeps them equal)."""

    output_dir: str
    compression: str = "zstd"
    compression_level: int | None = None
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    partition_date_field: str | None = None
    state_max_lag_seconds: float = DEFAULT_STATE_MAX_LAG_SECONDS
    overlap_writes: bool = True
    lock_lease_seconds: float = DEFAULT_LOCK_LEASE_SECONDS
    table_format: str = "parquet"
    # a catalog's properties may hold credentials: a repr (a log, a traceback) never shows them
    iceberg_catalog: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    iceberg_namespace: str = DEFAULT_NAMESPACE
    iceberg_snapshot_retention_hours: float | None = None
    # SDK built-ins the target reads itself (SDK_SETTINGS)
    batch_size_rows: int | None = None
    load_method: str = "append-only"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TargetSettings:
        """Typed settings from a config dict (unknown keys, e.g. Meltano's extras, ignored)."""
        values = _TYPES.values(config)
        if "output_dir" not in values:
            values["output_dir"] = ""
        return cls(**values)

    @property
    def is_iceberg(self) -> bool:
        """True when the settings ask for Iceberg tables."""
        return self.table_format == "iceberg"


def check_retention(settings: TargetSettings) -> None:
    """``ValueError`` unless ``iceberg_snapshot_retention_hours`` is unset or usable."""
    hours = settings.iceberg_snapshot_retention_hours
    if hours is None:
        return
    if not (math.isfinite(hours) and hours > 0):
        msg = f"{hours:g} is not a positive number of hours"
        raise ValueError(msg)
    if not settings.is_iceberg:
        msg = "only Iceberg tables have snapshots: set table_format to iceberg, or unset it"
        raise ValueError(msg)


def check_catalog(settings: TargetSettings) -> None:
    """``ValueError`` for an ``iceberg_catalog`` that lives in memory (``type: in-memory``, a
    ``:memory:`` SQLite uri): it would end with the run, its tables with it, while the data
    files stay; and each thread would see a database of its own (the commits run on the part
    writer, the end markers on the reading thread)."""
    catalog = settings.iceberg_catalog or {}
    if str(catalog.get("type", "")) == "in-memory" or ":memory:" in str(catalog.get("uri", "")):
        msg = (
            "an in-memory catalog ends with the run, and the tables it records with it: use "
            "a file (the default embedded SQLite catalog, or a sql catalog's sqlite:///path uri) "
            "or a catalog server"
        )
        raise ValueError(msg)


def numbers_from_text(config: Mapping[str, Any]) -> dict[str, Any]:
    """Number settings given as text (Meltano's kind-less settings), as numbers; booleans
    given as text (``"true"``, ``"false"``) as booleans."""
    return _TYPES.numbers_from_text(config)


def config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The target's settings from ``TARGET_PARQUET_PARTS_*`` variables, typed by the schema.

    ``iceberg_catalog`` is a JSON object (as Meltano passes objects); booleans are
    ``true``/``false`` (also ``1``/``0``, ``yes``/``no``).
    """
    return _TYPES.from_env(environ)


_TYPES = SettingTypes(
    CONFIG_SCHEMA,
    (field.name for field in dataclasses.fields(TargetSettings)),
    env_prefix=ENV_PREFIX,
    extra_kinds=SDK_SETTINGS,
)
