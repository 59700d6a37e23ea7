"""Helpers for the Iceberg tests: open the table the target wrote, read it two ways."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from target_parquet_parts.iceberg import load_iceberg_catalog
from target_parquet_parts.settings import TargetSettings

ICEBERG = {"table_format": "iceberg"}


@contextlib.contextmanager
def open_table(out: Path, name: str = "events", namespace: str = "singer") -> Iterator[Any]:
    """The table in ``out``'s embedded catalog (the catalog closed afterwards)."""
    catalog = load_iceberg_catalog(TargetSettings(output_dir=str(out)))
    try:
        yield catalog.load_table((namespace, name))
    finally:
        catalog.close()


def scan(out: Path, name: str = "events") -> pa.Table:
    """Every row of the current snapshot, through a pyiceberg scan."""
    with open_table(out, name) as table:
        return table.scan().to_arrow()


def live_files(out: Path, name: str = "events") -> list[str]:
    """Local paths of the data files of the current snapshot."""
    with open_table(out, name) as table:
        return sorted(
            task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()
        )


def duckdb_counts(out: Path, name: str = "events") -> tuple[int, int]:
    """(rows, distinct keys) by DuckDB's own Parquet reader over the table's live data files."""
    files = live_files(out, name)
    with duckdb.connect() as con:
        [(rows, distinct)] = con.sql(
            "select count(*), count(distinct (log_id, sequence_number_str)) "
            f"from read_parquet({files!r})"
        ).fetchall()
    return int(rows), int(distinct)


def key_multiset(rows: pa.Table) -> list[tuple[str, str]]:
    """Sorted (log_id, sequence_number_str) of every row, duplicates kept."""
    return sorted(
        zip(
            rows.column("log_id").to_pylist(),
            rows.column("sequence_number_str").to_pylist(),
            strict=True,
        )
    )


def summaries(out: Path, name: str = "events") -> list[dict[str, str]]:
    """Operation + summary properties of every snapshot, oldest first."""
    with open_table(out, name) as table:
        return [
            {"snapshot_id": str(s.snapshot_id), "operation": str(s.summary.operation.value)}
            | dict(s.summary.additional_properties)
            for s in table.snapshots()
        ]


def send(proc: subprocess.Popen, lines: list[str]) -> None:
    """Write Singer lines to a target process's stdin."""
    assert proc.stdin is not None
    proc.stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
    proc.stdin.flush()
