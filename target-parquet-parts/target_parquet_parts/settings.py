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
import json
from collections.abc import Mapping
from typing import Any

from singer_sdk import typing as th

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
DEFAULT_NAMESPACE = "singer"
ENV_PREFIX = "TARGET_PARQUET_PARTS_"  # Meltano's (and --config=ENV) names: TARGET_PARQUET_PARTS_*
# SDK built-in settings (appended to the schema by the SDK) that the target reads itself.
SDK_SETTINGS: dict[str, str] = {"batch_size_rows": "integer", "load_method": "string"}


class SettingError(ValueError):
    """A setting whose value cannot mean what its type says; the message names the setting."""


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
            "Limit on one stream's buffered records, in bytes of JSON: a part is written "
            "before a record would pass it (a larger record gets a part of its own)."
        ),
    ),
    th.Property(
        "partition_date_field",
        th.StringType,
        description=(
            "Name of a `date-time` or `date` field: streams that have it get Hive-style "
            "`date=YYYY-MM-DD` directories (UTC date; nulls in "
            "`date=__HIVE_DEFAULT_PARTITION__`). Streams without it are not partitioned."
        ),
    ),
    th.Property(
        "state_max_lag_seconds",
        th.NumberType,
        default=DEFAULT_STATE_MAX_LAG_SECONDS,
        description=(
            "Longest a received STATE waits for sinks that are not full yet; then they are "
            "flushed early so the STATE can be emitted. 0 = flush at every STATE."
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
        description=("pyiceberg catalog properties; unset: SQLite `{output_dir}/catalog.db`"),
    ),
    th.Property(
        "iceberg_namespace",
        th.StringType,
        default=DEFAULT_NAMESPACE,
        description="Namespace of the Iceberg tables",
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
    table_format: str = "parquet"
    # a catalog's properties may hold credentials: a repr (a log, a traceback) never shows them
    iceberg_catalog: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    iceberg_namespace: str = DEFAULT_NAMESPACE
    # SDK built-ins the target reads itself (SDK_SETTINGS)
    batch_size_rows: int | None = None
    load_method: str = "append-only"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TargetSettings:
        """Typed settings from a config dict (unknown keys, e.g. Meltano's extras, ignored)."""
        values: dict[str, Any] = {}
        for name in _FIELDS:
            raw = config.get(name)
            if raw is None:
                continue
            values[name] = _convert(name, raw)
        if "output_dir" not in values:
            values["output_dir"] = ""
        return cls(**values)

    @property
    def is_iceberg(self) -> bool:
        """True when the settings ask for Iceberg tables."""
        return self.table_format == "iceberg"


def numbers_from_text(config: Mapping[str, Any]) -> dict[str, Any]:
    """Number and integer settings given as text (``"0.5"``), as numbers; others untouched.

    Meltano passes a setting without a ``kind`` as text when it comes from an environment
    variable or ``meltano config set``; fractional settings cannot have a ``kind`` (Meltano 4.4.1
    cannot serialize its own Decimal), so the target reads such text as the number it spells.
    Text that is not a number is left for the schema check to refuse, naming the setting.
    """
    converted: dict[str, Any] = {}
    for name, raw in config.items():
        if name in _FIELDS and isinstance(raw, str) and _kind(name) in {"number", "integer"}:
            try:
                converted[name] = _convert(name, raw)
            except SettingError:
                continue
    return converted


def config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The target's settings from ``TARGET_PARQUET_PARTS_*`` variables, typed by the schema.

    ``iceberg_catalog`` is a JSON object (as Meltano passes objects).
    """
    config: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or raw == "":
            continue
        name = key.removeprefix(ENV_PREFIX).lower()
        if name not in _FIELDS:
            continue
        if _kind(name) == "object":
            try:
                config[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                msg = f"{key}: not a JSON object: {exc}"
                raise SettingError(msg) from exc
        config[name] = _convert(name, config.get(name, raw), source=key)
    return config


_PROPERTIES: dict[str, Any] = CONFIG_SCHEMA["properties"]
_FIELDS = {field.name for field in dataclasses.fields(TargetSettings)}


def _kind(name: str) -> str:
    if name in SDK_SETTINGS:
        return SDK_SETTINGS[name]
    types = _PROPERTIES[name].get("type", "string")
    types = [types] if isinstance(types, str) else list(types)
    return next((kind for kind in types if kind != "null"), "string")


def _convert(name: str, raw: Any, *, source: str | None = None) -> Any:
    """One value to the type ``CONFIG_SCHEMA`` gives it; errors name the setting."""
    kind = _kind(name)
    where = source or f"setting {name}"
    try:
        if kind == "integer":
            if isinstance(raw, str):
                return int(raw.strip())
            if isinstance(raw, bool) or int(raw) != raw:
                raise ValueError(raw)
            return int(raw)
        if kind == "number":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if kind == "object":
            if not isinstance(raw, Mapping):
                raise TypeError(raw)
            return dict(raw)
    except (TypeError, ValueError) as exc:
        article = "an" if kind in {"integer", "object"} else "a"
        msg = f"{where}: expected {article} {kind}, got {raw!r}"
        raise SettingError(msg) from exc
    return str(getattr(raw, "value", raw))  # an SDK enum (load_method) as its value
