"""Target memory: peak RSS of target-parquet-parts for 1M and for 4M records; overlap on vs off.

The records are generated on the fly and streamed into the target's stdin through a pipe, so no
input file is needed. Each run's peak RSS is the target process's own ``ru_maxrss`` (reaped with
``os.wait4``). A target that flushes parts as it goes holds at most one batch at a time, so the
peak must not grow with the input: the goal is peak(4M) / peak(1M) <= 1.2.

Writing parts behind the reader (``overlap_writes``, the default) holds one batch being written
while the next is read: the 1M run again with ``overlap_writes: false``, in the same run, gives
peak(on) / peak(off), goal <= 1.3.

Run: ``.venv/bin/python benchmarks/target_memory.py [--quick] [--records N] [--rows-per-part R]``
(``--records N`` measures N and 4N).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import tempfile
from pathlib import Path

import benchlib
import pyarrow.parquet as pq

GOAL = 1.2
OVERLAP_GOAL = 1.3


def measure(
    command: list[str], workdir: Path, records: int, rows_per_part: int, *, overlap: bool = True
) -> float:
    """Stream ``records`` records into one target process; return its peak RSS in MiB."""
    tag = f"{records}-{'on' if overlap else 'off'}"
    output_dir = workdir / f"out-{tag}"
    config = workdir / f"config-{tag}.json"
    config.write_text(
        json.dumps(
            {
                "output_dir": str(output_dir),
                "batch_size_rows": rows_per_part,
                "compression": "zstd",
                "overlap_writes": overlap,
            }
        )
    )
    stderr_path = workdir / f"target-{tag}.stderr"
    with stderr_path.open("wb") as err:
        result = benchlib.run_child(
            [*command, "--config", str(config)],
            feed=benchlib.singer_lines(records),
            stdout=err,
            stderr=err,
        )
    benchlib.fail_unless_ok("target-parquet-parts", result, stderr_path)
    parts = list(output_dir.rglob("*.parquet"))
    rows = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)
    if rows != records:
        raise SystemExit(f"target-parquet-parts wrote {rows} rows, expected {records}")
    benchlib.print_run(
        f"target_overlap_{'on' if overlap else 'off'}", records, result, parts=len(parts)
    )
    shutil.rmtree(output_dir)
    return result.max_rss_mib


def main() -> None:
    """Measure the small and the large run, print both peaks and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--records", type=int, help="the small run; the large one is 4x (1000000)")
    parser.add_argument("--rows-per-part", type=int, help="batch_size_rows (100000)")
    parser.add_argument("--target-command", help="default: the venv's target-parquet-parts")
    benchlib.add_env_argument(parser)
    args = parser.parse_args()
    benchlib.configure_env(args)
    small = args.records or (2_000 if args.quick else 1_000_000)
    rows_per_part = args.rows_per_part or (500 if args.quick else 100_000)
    command = (
        shlex.split(args.target_command)
        if args.target_command
        else [benchlib.venv_bin("target-parquet-parts")]
    )
    benchlib.print_header(
        "target_memory",
        {"small": small, "large": 4 * small, "rows_per_part": rows_per_part, "input": "pipe"},
    )
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        workdir = Path(tmp)
        small_peak = measure(command, workdir, small, rows_per_part)
        small_off_peak = measure(command, workdir, small, rows_per_part, overlap=False)
        large_peak = measure(command, workdir, 4 * small, rows_per_part)
    ratio = large_peak / small_peak
    benchlib.print_ratio("peak_rss_4x_over_1x", ratio, f"<={GOAL}", ratio <= GOAL)
    overlap_ratio = small_peak / small_off_peak
    print(f"context: peak_rss_mib overlap_on={small_peak:.1f} overlap_off={small_off_peak:.1f}")
    benchlib.print_ratio(
        "peak_rss_overlap_on_over_off",
        overlap_ratio,
        f"<={OVERLAP_GOAL}",
        overlap_ratio <= OVERLAP_GOAL,
    )


if __name__ == "__main__":
    main()
