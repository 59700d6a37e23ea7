"""Target throughput: target-parquet-parts against a raw msgspec + Arrow + parquet baseline.

Writes N Rapid7-shaped RECORD lines (about 490 bytes each) to a file, then times, each as its own
process reading that file:

* the product: ``target-parquet-parts --config C --input FILE`` (default record validation on);
* the raw baseline (``raw_parquet_baseline.py``): msgspec decode + Arrow build + zstd parquet
  write of the same records, same rows per part, same Arrow schema as the target's parts;
* for context, a plain SDK ``BatchSink`` target (``plain_sdk_target.py``) on fewer records.

Both times include starting the interpreter and importing libraries, as a user would see them.
Every output is checked: the row count written must equal N. The goal is target / baseline
>= 1.0 in records per second: the target writes each part on a worker while it reads the next
batch (``overlap_writes``), so on two cores it can beat the single-threaded loop.

Run: ``.venv/bin/python benchmarks/target_throughput.py [--quick] [--records N] [--profile]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import benchlib
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
GOAL = 1.0
SCHEMA_SAMPLE = "target-schema-sample.parquet"


def parquet_rows(directory: Path) -> tuple[int, int, Path | None]:
    """(rows, parts, one part) over every complete part under ``directory``."""
    parts = sorted(directory.rglob("*.parquet"))
    rows = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)
    return rows, len(parts), (parts[0] if parts else None)


def flush_totals(stderr_path: Path) -> tuple[int, float]:
    """(flushes, summed flush_total_ms) from the target's ``flush_complete`` log lines."""
    text = stderr_path.read_text(errors="replace")
    values = [float(v) for v in re.findall(r"flush_complete .*?flush_total_ms=([0-9.]+)", text)]
    return len(values), sum(values)


def run_target(
    *,
    workdir: Path,
    input_path: Path,
    records: int,
    rows_per_part: int,
    profile: bool,
    command: list[str],
    name: str = "target",
) -> benchlib.ChildResult:
    """Run the product's target on the file, check what it wrote, keep one part's schema."""
    output_dir = workdir / f"{name}-out"
    config = workdir / f"{name}-config.json"
    config.write_text(
        json.dumps(
            {"output_dir": str(output_dir), "batch_size_rows": rows_per_part, "compression": "zstd"}
        )
    )
    argv = [*command, "--config", str(config), "--input", str(input_path)]
    if profile:
        argv = benchlib.profiled(argv, workdir / f"{name}.prof")
    stderr_path = workdir / f"{name}.stderr"
    with (workdir / f"{name}.stdout").open("wb") as out, stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=out, stderr=err)
    benchlib.fail_unless_ok("target-parquet-parts", result, stderr_path)
    rows, parts, sample = parquet_rows(output_dir)
    if rows != records:
        raise SystemExit(f"target-parquet-parts wrote {rows} rows, expected {records}")
    if sample is not None and not (workdir / SCHEMA_SAMPLE).exists():
        shutil.copy(sample, workdir / SCHEMA_SAMPLE)
    shutil.rmtree(output_dir)
    flushes, flush_ms = flush_totals(stderr_path)
    if profile:
        return result
    benchlib.print_run(
        name,
        records,
        result,
        parts=parts,
        flushes_logged=flushes,
        flush_total_s=f"{flush_ms / 1000:.2f}",
    )
    return result


def run_baseline(
    workdir: Path, input_path: Path, records: int, rows_per_part: int
) -> benchlib.ChildResult:
    """Run the raw baseline on the same file, writing the target's own Arrow schema."""
    sample_part = workdir / SCHEMA_SAMPLE
    output_dir = workdir / "baseline-out"
    argv = [sys.executable, str(HERE / "raw_parquet_baseline.py"), "--input", str(input_path)]
    argv += ["--output-dir", str(output_dir), "--rows-per-part", str(rows_per_part)]
    if sample_part.exists():
        argv += ["--schema-from", str(sample_part)]
    stderr_path = workdir / "baseline.stderr"
    with stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=err, stderr=err)
    benchlib.fail_unless_ok("raw baseline", result, stderr_path)
    rows, parts, _ = parquet_rows(output_dir)
    if rows != records:
        raise SystemExit(f"raw baseline wrote {rows} rows, expected {records}")
    shutil.rmtree(output_dir)
    benchlib.print_run("baseline", records, result, parts=parts)
    return result


def run_plain_sdk(workdir: Path, records: int, rows_per_part: int) -> benchlib.ChildResult:
    """Run the plain SDK BatchSink target (default validation and reader) for context."""
    input_path = workdir / "sdk-input.jsonl"
    benchlib.write_singer_file(input_path, records)
    output_dir = workdir / "sdk-out"
    config = workdir / "sdk-config.json"
    config.write_text(json.dumps({"output_dir": str(output_dir), "batch_size_rows": rows_per_part}))
    argv = [sys.executable, str(HERE / "plain_sdk_target.py"), "--config", str(config)]
    argv += ["--input", str(input_path)]
    stderr_path = workdir / "sdk.stderr"
    with stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=err, stderr=err)
    benchlib.fail_unless_ok("plain SDK target", result, stderr_path)
    rows, parts, _ = parquet_rows(output_dir)
    if rows != records:
        raise SystemExit(f"plain SDK target wrote {rows} rows, expected {records}")
    benchlib.print_run("plain_sdk_target", records, result, parts=parts)
    return result


def main() -> None:
    """Parse arguments, run the measurements, print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--records", type=int, help="records through the target (300000)")
    parser.add_argument("--rows-per-part", type=int, help="batch_size_rows for both (100000)")
    parser.add_argument("--sdk-records", type=int, help="records for the plain SDK target")
    parser.add_argument("--repeat", type=int, help="runs of each, best counts (2; quick: 1)")
    parser.add_argument("--profile", action="store_true", help="one more target run, profiled")
    parser.add_argument(
        "--target-command", help="the target to measure (default: the venv's target-parquet-parts)"
    )
    benchlib.add_env_argument(parser)
    args = parser.parse_args()
    benchlib.configure_env(args)
    args.repeat = args.repeat or (1 if args.quick else 2)
    command = (
        shlex.split(args.target_command)
        if args.target_command
        else [benchlib.venv_bin("target-parquet-parts")]
    )
    records = args.records or (3_000 if args.quick else 300_000)
    rows_per_part = args.rows_per_part or (1_000 if args.quick else 100_000)
    sdk_records = args.sdk_records if args.sdk_records is not None else min(records, 50_000)

    with tempfile.TemporaryDirectory(prefix="bench-target-") as tmp:
        workdir = Path(tmp)
        input_path = workdir / "input.jsonl"
        size = benchlib.write_singer_file(input_path, records)
        benchlib.print_header(
            "target_throughput",
            {
                "records": records,
                "rows_per_part": rows_per_part,
                "input_mib": f"{size / 2**20:.1f}",
                "bytes_per_line": f"{size / (records + 2):.0f}",
                "compression": "zstd",
            },
        )
        targets, baselines = [], []
        for _ in range(args.repeat):  # alternate, keep the best of each: the machine is shared
            targets.append(
                run_target(
                    workdir=workdir,
                    input_path=input_path,
                    records=records,
                    rows_per_part=rows_per_part,
                    profile=False,
                    command=command,
                )
            )
            baselines.append(run_baseline(workdir, input_path, records, rows_per_part))
        target = min(targets, key=lambda result: result.wall_seconds)
        baseline = min(baselines, key=lambda result: result.wall_seconds)
        sdk = run_plain_sdk(workdir, sdk_records, rows_per_part) if sdk_records else None

        target_rate = benchlib.rate(records, target.wall_seconds)
        baseline_rate = benchlib.rate(records, baseline.wall_seconds)
        if sdk is not None:
            sdk_rate = benchlib.rate(sdk_records, sdk.wall_seconds)
            print(f"context: plain_sdk_target/baseline={sdk_rate / baseline_rate:.3f}")
            print(f"context: target/plain_sdk_target={target_rate / sdk_rate:.2f}x")
        cpu_ratio = baseline.cpu_seconds / target.cpu_seconds
        print(f"context: target/baseline by CPU seconds={cpu_ratio:.3f}")
        ratio = target_rate / baseline_rate
        print(
            f"best of {args.repeat}: target_records_per_s={target_rate:.0f} "
            f"baseline_records_per_s={baseline_rate:.0f}"
        )
        benchlib.print_ratio("target_over_baseline", ratio, f">={GOAL}", ratio >= GOAL)
        if args.profile:
            run_target(
                workdir=workdir,
                input_path=input_path,
                records=records,
                rows_per_part=rows_per_part,
                profile=True,
                command=command,
                name="profiled",
            )
            benchlib.print_profile(workdir / "profiled.prof")


if __name__ == "__main__":
    main()
