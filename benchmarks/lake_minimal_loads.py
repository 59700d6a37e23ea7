"""Minimal hand-written lake loads of a Singer file, one Python process each.

``lake_formats.py --minimal`` runs these beside the target, on the same input, as the lake
formats' counterpart of ``target_throughput.py``'s hand-written loop: what the plainest
implementation on the same libraries pays on this machine, start-up included. Each is the
whole job and nothing more, in one thread:

* ``iceberg``: import pyarrow and pyiceberg, open pyiceberg's SQL catalog (SQLite, as the
  target's embedded default), parse the RECORD lines in batches of 100k (the target's Iceberg
  default) with the target's own C++ line converter (``record_lines.py``), and ``append`` each
  to an unpartitioned table (cheaper than the target's day partitions);
* ``s3``: import pyarrow and boto3, parse batches of 10k (the target's default part size),
  encode each as zstd Parquet and PUT it (``If-None-Match: *``).

No validation beyond the converter's, no journal, no run lock, no exactly-once ledger, no
STATE, no end marker, no overlap of reading and writing: a baseline, not a product. The
parent (``lake_formats.py``) times the process and checks the rows it wrote.

Run: ``python benchmarks/lake_minimal_loads.py iceberg INPUT OUTPUT_DIR`` or
``python benchmarks/lake_minimal_loads.py s3 INPUT BUCKET PREFIX`` (the S3 endpoint and keys
from the standard ``AWS_*`` variables).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.record_lines import LineConverter

ICEBERG_BATCH_ROWS = 100_000
S3_BATCH_ROWS = 10_000
RECORD_PREFIX = b'{"type":"RECORD"'


def batches(input_path: Path, rows: int) -> Iterator[pa.Table]:
    """The input's records as Arrow tables of ``rows`` rows (the stream's schema, exact)."""
    lines = input_path.read_bytes().split(b"\n")
    schema = next(msgspec.json.decode(line) for line in lines if b'"SCHEMA"' in line[:40])
    converter = LineConverter.for_stream(stream_spec(schema["schema"]), schema["key_properties"])
    if converter is None:
        raise SystemExit("the stream's schema does not convert in C++")
    records = [line for line in lines if line.startswith(RECORD_PREFIX)]
    for start in range(0, len(records), rows):
        chunk = records[start : start + rows]
        table = converter.convert(b"\n".join(chunk), len(chunk))
        if table is None:
            raise SystemExit(f"records {start}..: {converter.last_refusal}")
        yield table


def load_iceberg(input_path: Path, output_dir: Path) -> None:
    """Every batch appended to ``singer.events`` in ``output_dir``'s SQLite catalog."""
    from pyiceberg.catalog.sql import SqlCatalog  # timed as part of the job

    output_dir.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog(
        "default", uri=f"sqlite:///{output_dir / 'catalog.db'}", warehouse=output_dir.as_uri()
    )
    catalog.create_namespace("singer")
    table = None
    for batch in batches(input_path, ICEBERG_BATCH_ROWS):
        if table is None:
            table = catalog.create_table(("singer", "events"), schema=batch.schema)
        table.append(batch)
    catalog.close()


def load_s3(input_path: Path, bucket: str, prefix: str) -> None:
    """Every batch PUT as ``{prefix}/events/part-NNNNN.parquet``, one request each."""
    import boto3  # timed as part of the job

    client = boto3.session.Session().client("s3")
    for number, batch in enumerate(batches(input_path, S3_BATCH_ROWS)):
        sink = pa.BufferOutputStream()
        pq.write_table(batch, sink, compression="zstd")
        client.put_object(
            Bucket=bucket,
            Key=f"{prefix}/events/part-{number:05d}.parquet",
            Body=sink.getvalue().to_pybytes(),
            IfNoneMatch="*",
        )


def main() -> None:
    """``iceberg INPUT OUTPUT_DIR`` or ``s3 INPUT BUCKET PREFIX``."""
    kind, input_path, *where = sys.argv[1:]
    if kind == "iceberg" and len(where) == 1:
        load_iceberg(Path(input_path), Path(where[0]))
    elif kind == "s3" and len(where) == 2:
        load_s3(Path(input_path), where[0], where[1])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
