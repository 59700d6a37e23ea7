"""Iceberg tables against plain parts: the same target, the same input, in one run.

Writes N Rapid7-shaped RECORD lines (STATE every 10 000) to a file, then times, each as its own
process reading that file, at the target's default batch sizes:

* ``target-parquet-parts`` with plain parts (the baseline of this comparison);
* the same with ``table_format: iceberg`` (embedded SQLite catalog, one commit per flush).

Both partition by ``received_at`` (day). Each runs at its own default batch size (parts: the
SDK's 10 000 rows; Iceberg: 100 000, see ``iceberg.DEFAULT_BATCH_SIZE_ROWS``), and, for context,
Iceberg once more at the parts' 10 000. Reported: records per second of each and the ratio
iceberg / parts (goal >= 0.8), the commit milliseconds per flush (from the ``flush_complete``
events' ``commit_ms``), then ``target-parquet-parts-compact`` on the Iceberg table: live data
files and rows before and after, data files on disk before and after expiry. Every output is
checked: the rows written (and after compaction) must equal N.

Run: ``.venv/bin/python benchmarks/iceberg_vs_parts.py [--quick] [--records N]``.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import benchlib
import pyarrow.parquet as pq

GOAL = 0.8
_COMMIT_MS = re.compile(r"flush_complete .*?commit_ms=([0-9.]+)")


def run_target(
    workdir: Path,
    input_path: Path,
    records: int,
    *,
    iceberg: bool,
    tag: str,
    batch_size_rows: int | None = None,
) -> tuple[benchlib.ChildResult, Path, list[float]]:
    """One target run; returns (result, output_dir, commit ms per flush)."""
    name = "iceberg" if iceberg else "parts"
    output_dir = workdir / f"{name}-{tag}-out"
    config = workdir / f"{name}-{tag}.json"
    settings: dict[str, object] = {
        "output_dir": str(output_dir),
        "partition_date_field": "received_at",
    }
    if iceberg:
        settings["table_format"] = "iceberg"
    if batch_size_rows:
        settings["batch_size_rows"] = batch_size_rows
    config.write_text(json.dumps(settings))
    stderr_path = workdir / f"{name}-{tag}.stderr"
    argv = [benchlib.venv_bin("target-parquet-parts"), "--config", str(config)]
    argv += ["--input", str(input_path)]
    with (workdir / f"{name}-{tag}.stdout").open("wb") as out, stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=out, stderr=err)
    benchlib.fail_unless_ok(f"target-parquet-parts ({name})", result, stderr_path)
    rows = iceberg_rows(output_dir) if iceberg else parts_rows(output_dir)
    if rows != records:
        raise SystemExit(f"{name} run wrote {rows} rows, expected {records}")
    commits = [float(v) for v in _COMMIT_MS.findall(stderr_path.read_text(errors="replace"))]
    return result, output_dir, commits


def parts_rows(output_dir: Path) -> int:
    """Rows over every part."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in output_dir.rglob("*.parquet"))


def iceberg_table(output_dir: Path):
    """The events table of an output_dir's embedded catalog, with the catalog to close."""
    from target_parquet_parts.iceberg import load_iceberg_catalog
    from target_parquet_parts.settings import TargetSettings

    catalog = load_iceberg_catalog(TargetSettings(output_dir=str(output_dir)))
    return catalog, catalog.load_table(("singer", "events"))


def iceberg_rows(output_dir: Path) -> int:
    """Rows of the current snapshot (a full pyiceberg scan)."""
    catalog, table = iceberg_table(output_dir)
    try:
        return table.scan().to_arrow().num_rows
    finally:
        catalog.close()


def data_files_on_disk(output_dir: Path) -> int:
    """Parquet files under the table's data directory (referenced or not)."""
    return sum(1 for _ in (output_dir / "singer" / "events" / "data").rglob("*.parquet"))


def compact(workdir: Path, output_dir: Path, records: int) -> None:
    """Compact the Iceberg table (every day closed, no snapshot kept back); print the figures."""
    config = workdir / "compact.json"
    config.write_text(json.dumps({"output_dir": str(output_dir), "table_format": "iceberg"}))
    on_disk_before = data_files_on_disk(output_dir)
    completed = subprocess.run(
        [
            benchlib.venv_bin("target-parquet-parts-compact"),
            "--config",
            str(config),
            "--before",
            "2100-01-01",
            "--retain-hours",
            "0",
        ],
        capture_output=True,
        check=True,
        env=benchlib.CHILD_ENV,
    )
    report = json.loads(completed.stdout.decode().splitlines()[-1])
    rows_after = iceberg_rows(output_dir)
    if report["rows_before"] != records or report["rows_after"] != records != rows_after:
        raise SystemExit(f"compaction changed the row count: {report}, scan {rows_after}")
    print(
        "compaction: "
        f"live_files_before={report['files_before']} live_files_after={report['files_after']} "
        f"rows_before={report['rows_before']} rows_after={rows_after} "
        f"files_on_disk_before={on_disk_before} "
        f"files_on_disk_after={data_files_on_disk(output_dir)} "
        f"expired_snapshots={report['expired_snapshots']}",
        flush=True,
    )


def main() -> None:
    """Parse arguments, run the measurements, print figures and ratios."""
    records, repeat = benchlib.parse_run_sizes(__doc__.splitlines()[0], 300_000)
    with tempfile.TemporaryDirectory(prefix="bench-iceberg-") as tmp:
        workdir = Path(tmp)
        input_path = workdir / "input.jsonl"
        size = benchlib.write_singer_file(input_path, records)
        benchlib.print_header(
            "iceberg_vs_parts",
            {
                "records": records,
                "batch_size_rows": "default",
                "input_mib": f"{size / 2**20:.1f}",
                "partition_date_field": "received_at",
            },
        )
        parts_runs, iceberg_runs, equal_runs = [], [], []
        last_iceberg: Path | None = None
        commits: list[float] = []
        for attempt in range(repeat):  # alternate, keep the best of each: the machine is shared
            result, _, _ = run_target(workdir, input_path, records, iceberg=False, tag=str(attempt))
            benchlib.print_run("parts", records, result)
            parts_runs.append(result)
            for name, batch, runs in (
                ("iceberg", None, iceberg_runs),
                ("iceberg_10k_batches", 10_000, equal_runs),
            ):
                result, output_dir, flush_commits = run_target(
                    workdir,
                    input_path,
                    records,
                    iceberg=True,
                    tag=f"{name}-{attempt}",
                    batch_size_rows=batch,
                )
                benchlib.print_run(
                    name,
                    records,
                    result,
                    commits=len(flush_commits),
                    commit_ms_median=f"{statistics.median(flush_commits):.1f}",
                    commit_ms_max=f"{max(flush_commits):.1f}",
                )
                runs.append(result)
                if batch is None:
                    last_iceberg, commits = output_dir, flush_commits
        parts = min(parts_runs, key=lambda r: r.wall_seconds)
        iceberg = min(iceberg_runs, key=lambda r: r.wall_seconds)
        equal = min(equal_runs, key=lambda r: r.wall_seconds)
        parts_rate = benchlib.rate(records, parts.wall_seconds)
        iceberg_rate = benchlib.rate(records, iceberg.wall_seconds)
        equal_rate = benchlib.rate(records, equal.wall_seconds)
        print(
            f"best of {repeat}: parts_records_per_s={parts_rate:.0f} "
            f"iceberg_records_per_s={iceberg_rate:.0f} "
            f"commit_ms_per_flush_mean={statistics.fmean(commits):.1f}",
            flush=True,
        )
        print(
            f"context: iceberg_at_10k_batches/parts={equal_rate / parts_rate:.3f} "
            f"(iceberg_10k_batches_records_per_s={equal_rate:.0f})",
            flush=True,
        )
        # CPU seconds: the machine may be shared; the fixed start-up cost (importing pyiceberg,
        # opening the catalog, creating the table: about a second) weighs on short runs.
        print(
            f"context: iceberg/parts by CPU seconds={parts.cpu_seconds / iceberg.cpu_seconds:.3f}"
        )
        ratio = iceberg_rate / parts_rate
        benchlib.print_ratio("iceberg_over_parts", ratio, f">={GOAL}", ratio >= GOAL)
        assert last_iceberg is not None
        compact(workdir, last_iceberg, records)


if __name__ == "__main__":
    main()
