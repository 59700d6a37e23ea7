"""``target-parquet-parts-compact``: the command that compacts the target's Iceberg tables.

Arguments, the target's settings (``--config FILE|ENV``), and two refusals with one clear
line each: a plain-parts dataset (``PARTS_EXPLANATION``: why only Iceberg tables can be
compacted safely) and a missing ``iceberg`` extra. The work itself is ``compact.py``, imported
only for an Iceberg dataset, so ``--help`` and both refusals need no pyiceberg.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import random
import sys
import typing as t
from collections.abc import Sequence
from dataclasses import asdict

from plugin_io.distribution import install_hint
from target_parquet_parts.settings import SettingError, TargetSettings, config_from_env

__all__ = ["EXIT_NOT_ICEBERG", "PARTS_EXPLANATION", "load_config", "main"]

EXIT_NOT_ICEBERG = 2

PARTS_EXPLANATION = """\
target-parquet-parts-compact: this dataset is plain parts (table_format: parquet); only Iceberg
tables can be compacted safely.

Why: a plain-parts dataset has no commit point. Readers (DuckDB, Spark, Trino, Athena, Polars)
list the directory and read every part they find. Replacing small parts by a large one takes
two steps on a filesystem or object store: write the large part, then delete the small ones.
A reader that lists between the two sees those rows twice; in the other order, not at all. No
rename or lock makes the pair atomic for readers that do not take part in the locking, and
the exactly-once journal would name parts that are gone. An Iceberg reader reads the file list
of one snapshot, and a compaction is one snapshot: readers see the old files or the new ones.

What to do: write new data with table_format: iceberg (see the README), then compact with this
command; read old parts as they are (their number does not grow once the pipeline moved).
"""


def load_config(
    sources: Sequence[str], environ: t.Mapping[str, str] | None = None
) -> TargetSettings:
    """The target's settings from JSON files and/or ``ENV`` (as Meltano exports them)."""
    environ = os.environ if environ is None else environ
    config: dict[str, t.Any] = {}
    for source in sources:
        if source == "ENV":
            config.update(config_from_env(environ))
            continue
        with open(source, encoding="utf-8") as handle:
            config.update(json.load(handle))
    return TargetSettings.from_config(config)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="target-parquet-parts-compact",
        description=(
            "Rewrite the small data files of closed partitions of the target's Iceberg tables "
            "into large ones in one commit per table, then expire old snapshots."
        ),
    )
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="FILE|ENV",
        help="the target's settings (JSON file, or ENV for TARGET_PARQUET_PARTS_* variables)",
    )
    parser.add_argument(
        "--stream", action="append", default=[], help="only this stream's table (repeatable)"
    )
    parser.add_argument(
        "--before",
        type=datetime.date.fromisoformat,
        default=None,
        help="partitions of days before this date (YYYY-MM-DD) are closed; default: today UTC",
    )
    parser.add_argument("--target-file-mb", type=float, default=128.0)
    parser.add_argument(
        "--retain-hours",
        type=float,
        default=24.0,
        help="keep snapshots this recent (readers of older ones may still run); default 24",
    )
    parser.add_argument("--dry-run", action="store_true", help="plan only, change nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)-8s | %(message)s")
    try:
        settings = load_config(args.config)
    except SettingError as exc:
        sys.stderr.write(f"target-parquet-parts-compact: {exc}\n")
        return 2  # as argparse's usage errors
    if not settings.is_iceberg:
        sys.stderr.write(PARTS_EXPLANATION)
        return EXIT_NOT_ICEBERG
    try:
        # pyiceberg is the iceberg extra: imported only for an Iceberg dataset
        from target_parquet_parts import compact  # noqa: PLC0415
        from target_parquet_parts.iceberg import load_iceberg_catalog  # noqa: PLC0415
    except ImportError as exc:
        sys.stderr.write(
            f"target-parquet-parts-compact: needs pyiceberg ({exc}): {install_hint('iceberg')}\n"
        )
        return 1
    before = args.before or datetime.datetime.now(tz=datetime.UTC).date()
    rng = random.Random()
    catalog = load_iceberg_catalog(settings)
    try:
        for loaded in compact.tables_of(catalog, settings, args.stream):
            table, result = compact.compact_table(
                loaded,
                before=before,
                target_bytes=int(args.target_file_mb * 1024 * 1024),
                rng=rng,
                dry_run=args.dry_run,
            )
            if not args.dry_run:
                _, result.expired_snapshots, result.deleted_files = compact.expire_table(
                    table, retain_hours=args.retain_hours, rng=rng
                )
            summary = asdict(result)
            if not args.dry_run:
                summary.pop("groups")
            sys.stdout.write(json.dumps(summary) + "\n")
    finally:
        catalog.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
