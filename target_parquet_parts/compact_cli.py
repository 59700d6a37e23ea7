"""``target-parquet-parts-compact``: the command that compacts the target's Iceberg tables.

Arguments, the target's settings (``--config FILE|ENV``), and two refusals with one clear
line each: a plain-parts dataset (``PARTS_EXPLANATION``: why only Iceberg tables can be
compacted safely) and a missing ``iceberg`` extra. The work itself is ``compact.py``, imported
only for an Iceberg dataset, so ``--help`` and both refusals need no pyiceberg.

Failures end the run with one line each on stderr (``target-parquet-parts-compact: ...``); the
traceback is logged at DEBUG only (``--log-level DEBUG``):

- exit 2, nothing compacted: bad settings; a catalog that cannot be opened from them (an
  ``output_dir`` in object storage without ``iceberg_catalog``); nothing to compact: the
  namespace, or the table of a ``--stream``, does not exist (the line names it and the catalog;
  an embedded catalog that does not exist yet is not created).
- exit 1: a table whose compaction (or snapshot expiry) lost the commit race to other writers in
  all ``--commit-attempts`` attempts, or failed otherwise. The other tables are still compacted
  (a nightly job should do all it can), and the lines of the failed tables come last. A table
  whose compaction did not commit has no JSON summary on stdout; one whose expiry did not has.
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
from plugin_io.log_events import add_log_level_argument
from target_parquet_parts.settings import SettingError, TargetSettings, config_from_env

if t.TYPE_CHECKING:
    from pyiceberg.table import Table

    from target_parquet_parts.iceberg_commits import CommitConflictError

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOTHING_TO_COMPACT",
    "EXIT_NOT_ICEBERG",
    "PARTS_EXPLANATION",
    "load_config",
    "main",
]

EXIT_NOT_ICEBERG = 2
EXIT_USAGE = 2  # as argparse's usage errors
EXIT_NOTHING_TO_COMPACT = 2  # the namespace or an asked table does not exist
EXIT_FAILED = 1
COMMIT_ATTEMPTS = 12  # iceberg_commits.COMMIT_ATTEMPTS (it imports pyiceberg); a test pins both
PROG = "target-parquet-parts-compact"
RETRY_ADVICE = "rerun later, off the writers' busy minutes, or raise --commit-attempts"

logger = logging.getLogger("target_parquet_parts.compact_cli")

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{text!r} is not a whole number at least 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
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
    parser.add_argument(
        "--commit-attempts",
        type=_positive_int,
        default=COMMIT_ATTEMPTS,
        metavar="N",
        help=(
            "commits of a table tried while other writers commit first (with growing waits) "
            f"before that table is given up; default {COMMIT_ATTEMPTS}"
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="plan only, change nothing")
    add_log_level_argument(parser)
    return parser.parse_args(argv)


def _say(line: str) -> None:
    sys.stderr.write(f"{PROG}: {line}\n")


def _brief(exc: BaseException) -> str:
    """The exception's type and first line, and where the rest is."""
    text = str(exc).strip().splitlines()
    error = f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
    return f"{error} (--log-level DEBUG shows the traceback)"


def _conflict_line(exc: CommitConflictError) -> str:
    """One line for a ``CommitConflictError``: what did not commit, and what to do."""
    tried = f"its {exc.attempts} attempt" if exc.attempts == 1 else f"all {exc.attempts} attempts"
    if exc.step == "compaction":
        what = f"{exc.table} not compacted, nothing committed"
    else:
        what = f"{exc.table} old snapshots not expired (its compaction, if any, stays committed)"
    return f"{what}: other writers committed first in {tried}; {RETRY_ADVICE} (now {exc.attempts})"


def _debug_traceback(what: str, exc: BaseException) -> None:
    logger.debug("%s", what, exc_info=exc)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s | %(levelname)-8s | %(message)s")
    try:
        settings = load_config(args.config)
    except SettingError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return EXIT_USAGE
    if not settings.is_iceberg:
        sys.stderr.write(PARTS_EXPLANATION)
        return EXIT_NOT_ICEBERG
    try:
        # pyiceberg is the iceberg extra: imported only for an Iceberg dataset
        from target_parquet_parts import compact  # noqa: PLC0415, F401
    except ImportError as exc:
        sys.stderr.write(f"{PROG}: needs pyiceberg ({exc}): {install_hint('iceberg')}\n")
        return 1
    try:
        return _compact(args, settings)
    except Exception as exc:  # a bug or an outage: still one line, the traceback at DEBUG
        _debug_traceback("compaction failed", exc)
        _say(f"failed: {_brief(exc)}")
        return EXIT_FAILED


def _compact(args: argparse.Namespace, settings: TargetSettings) -> int:
    from target_parquet_parts import compact  # noqa: PLC0415
    from target_parquet_parts.iceberg import load_iceberg_catalog  # noqa: PLC0415

    try:
        compact.require_catalog(settings, args.stream)
    except compact.MissingTablesError as exc:
        _say(str(exc))
        return EXIT_NOTHING_TO_COMPACT
    try:
        catalog = load_iceberg_catalog(settings)
    except ValueError as exc:  # settings no catalog can be opened from
        _debug_traceback("opening the catalog failed", exc)
        _say(f"cannot open the Iceberg catalog: {exc}")
        return EXIT_USAGE
    before = args.before or datetime.datetime.now(tz=datetime.UTC).date()
    rng = random.Random()
    failures: list[str] = []
    try:
        try:
            tables = compact.tables_of(catalog, settings, args.stream)
        except compact.MissingTablesError as exc:
            _say(str(exc))
            return EXIT_NOTHING_TO_COMPACT
        for loaded in tables:
            failure = _compact_one(loaded, args, before, rng)
            if failure is not None:
                failures.append(failure)
    finally:
        catalog.close()
    for failure in failures:
        _say(failure)
    return EXIT_FAILED if failures else 0


def _compact_one(
    loaded: Table, args: argparse.Namespace, before: datetime.date, rng: random.Random
) -> str | None:
    """Compact and expire one table, print its summary; the failure's line, if any."""
    from target_parquet_parts import compact  # noqa: PLC0415
    from target_parquet_parts.iceberg_commits import CommitConflictError  # noqa: PLC0415
    from target_parquet_parts.iceberg_expiry import expire_table  # noqa: PLC0415

    name = ".".join(loaded.name())
    failure: str | None = None
    try:
        table, result = compact.compact_table(
            loaded,
            before=before,
            target_bytes=int(args.target_file_mb * 1024 * 1024),
            rng=rng,
            dry_run=args.dry_run,
            attempts=args.commit_attempts,
        )
        if not args.dry_run:
            try:
                _, result.expired_snapshots, result.deleted_files = expire_table(
                    table, retain_hours=args.retain_hours, rng=rng, attempts=args.commit_attempts
                )
            except CommitConflictError as exc:  # the compaction itself is committed
                _debug_traceback(f"{name}: snapshot expiry failed", exc)
                failure = _conflict_line(exc)
            except Exception as exc:
                _debug_traceback(f"{name}: snapshot expiry failed", exc)
                failure = f"{name} old snapshots not expired: {_brief(exc)}"
    except CommitConflictError as exc:
        _debug_traceback(f"{name}: compaction failed", exc)
        return _conflict_line(exc)
    except Exception as exc:  # this table only: the others are still compacted
        _debug_traceback(f"{name}: compaction failed", exc)
        return f"{name} not compacted: {_brief(exc)}"
    summary = asdict(result)
    if not args.dry_run:
        summary.pop("groups")
    sys.stdout.write(json.dumps(summary) + "\n")
    return failure


if __name__ == "__main__":
    sys.exit(main())
