"""The raw baseline for the target: msgspec decode + Arrow build + parquet write, nothing else.

Reads a Singer file, keeps the RECORD messages, and every ``rows_per_part`` records builds an
Arrow table column by column and writes it as one zstd part (temporary name, fsync, rename: the
same durability contract as the target). No validation, no SDK. When ``--schema-from`` names a
part written by the target, the baseline writes exactly that Arrow schema (same columns, same
types, same encoding work), so the comparison is like for like.

Run: ``python benchmarks/raw_parquet_baseline.py --input FILE --output-dir DIR --rows-per-part N``.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

# What the records look like when nobody says otherwise (benchlib.EVENTS_SCHEMA in Arrow terms).
DEFAULT_SCHEMA = pa.schema(
    [
        pa.field("log_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("sequence_number", pa.int64(), nullable=False),
        pa.field("sequence_number_str", pa.string(), nullable=False),
        pa.field("message", pa.string()),
        pa.field("labels", pa.list_(pa.struct([pa.field("id", pa.string())]))),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC")),
    ]
)

_encode = msgspec.json.Encoder().encode


def _column_builder(field: pa.Field) -> Callable[[list[Any]], pa.Array]:
    """How to turn one column of decoded JSON values into an Arrow array of ``field``'s type."""
    kind = field.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return lambda values: pa.array(values, type=pa.string()).cast(kind)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):

        def strings(values: list[Any]) -> pa.Array:
            # Objects and arrays stored as JSON text (a common choice for nested fields).
            if all(value is None or isinstance(value, str) for value in values):
                return pa.array(values, type=kind)
            converted = [
                value if value is None or isinstance(value, str) else _encode(value).decode()
                for value in values
            ]
            return pa.array(converted, type=kind)

        return strings
    return lambda values: pa.array(values, type=kind)


def write_part(table: pa.Table, directory: Path, compression: str) -> Path:
    """Write one immutable part: temporary name, fsync, atomic rename."""
    final = directory / f"part-{uuid.uuid4().hex}.parquet"
    temporary = directory / f".{final.name}.tmp"
    with temporary.open("wb") as handle:
        pq.write_table(table, handle, compression=compression)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(final)
    return final


def run(input_path: Path, output_dir: Path, rows_per_part: int, schema: pa.Schema) -> int:
    """Convert ``input_path`` into parts under ``output_dir``; return the number of rows."""
    output_dir.mkdir(parents=True, exist_ok=True)
    decode = msgspec.json.Decoder().decode
    builders = [(field.name, _column_builder(field)) for field in schema]
    rows: list[dict[str, Any]] = []
    total = 0

    def flush() -> None:
        columns = [build([row.get(name) for row in rows]) for name, build in builders]
        write_part(pa.Table.from_arrays(columns, schema=schema), output_dir, "zstd")
        rows.clear()

    with input_path.open("rb") as handle:
        for line in handle:
            message = decode(line)
            if message.get("type") != "RECORD":
                continue
            rows.append(message["record"])
            total += 1
            if len(rows) >= rows_per_part:
                flush()
    if rows:
        flush()
    return total


def main() -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--rows-per-part", type=int, required=True)
    parser.add_argument("--schema-from", type=Path, help="a parquet part whose schema to write")
    args = parser.parse_args()
    schema = pq.read_schema(args.schema_from) if args.schema_from else DEFAULT_SCHEMA
    schema = schema.remove_metadata()
    rows = run(args.input, args.output_dir, args.rows_per_part, schema)
    print(f"baseline_rows={rows}")


if __name__ == "__main__":
    main()
