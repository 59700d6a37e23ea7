"""The lake formats in one run: plain local parts, S3 parts (moto) and Iceberg, same input.

One input file of Rapid7-shaped RECORD lines goes through target-parquet-parts three ways, each
its own process with the target's DEFAULT batch sizes and ``partition_date_field: received_at``,
alternating (best of ``--repeat``: the machine is shared):

* ``parts``: a local ``output_dir`` (the baseline);
* ``s3``: ``s3://bench/...`` on moto's S3 server (its own process on loopback, versioned
  bucket; every part key checked to have exactly one version);
* ``iceberg``: ``table_format: iceberg``, embedded SQLite catalog on local disk.

Every run is checked (rows = input). Printed: records/s of each, the ratios S3/parts and
Iceberg/parts (goal >= 0.8 each), flush ms per part (parts, S3), commit ms per flush (Iceberg),
then the Iceberg table's files before/after ``target-parquet-parts-compact``. As context, each
format's start-up (a run of one record: imports, catalog, the table's creation) and the ratios
with it taken out: what a long run, whose start-up is paid once, converges to. The per-format
scripts (object_storage.py, iceberg_vs_parts.py) hold the helpers and more context figures.

``--minimal`` adds two more processes to the alternation (``lake_minimal_loads.py``): a
minimal hand-written Iceberg load and S3 load of the same input, one Python process each on
the same libraries (no journal, lock, ledger, STATE or overlap), and prints
``iceberg_minimal_over_parts`` and ``s3_minimal_over_parts`` against the same goal, and the
target over each: how far the plainest implementation gets on this machine.

``--profile-startup`` adds where Iceberg's start-up goes: two more one-record Iceberg runs, one
under ``-X importtime`` (``PROFILE import`` lines: each big package's own import time) and one
under cProfile on every thread, the SDK's drain threads included (``PROFILE phase`` lines:
import of ``iceberg.py``, catalog open, table open, commits, end marker; ``PROFILE cum`` lines:
the top cumulative entries of the target's and pyiceberg's catalog functions). These runs are
slower than unprofiled ones: the shares matter, not the seconds.

Run: ``.venv/bin/python benchmarks/lake_formats.py [--quick] [--records N] [--repeat R]
[--minimal] [--profile-startup]``.
"""

from __future__ import annotations

import collections
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib
from iceberg_vs_parts import compact, iceberg_rows, parts_rows
from object_storage import BUCKET, flush_ms, make_bucket, moto_server, s3_check

GOAL = 0.8
KINDS = ("parts", "s3", "iceberg")
MINIMAL = ("iceberg_minimal", "s3_minimal")  # lake_minimal_loads.py, with --minimal
MINIMAL_SCRIPT = Path(__file__).with_name("lake_minimal_loads.py")
PROFILE_FLAG = "--profile-startup"
MINIMAL_FLAG = "--minimal"
IMPORT_PACKAGES = (
    "pyiceberg",
    "sqlalchemy",
    "pydantic",
    "pydantic_core",
    "pyarrow",
    "numpy",
    "singer_sdk",
    "joblib",
    "target_parquet_parts",
)
# (label, function name, file suffix): the start-up's phases, by cumulative time
PHASES = (
    ("import_iceberg_module", "<module>", "target_parquet_parts/iceberg.py"),
    ("catalog_open", "load_iceberg_catalog", "target_parquet_parts/iceberg.py"),
    ("of_which_import_sqlalchemy", "<module>", "sqlalchemy/__init__.py"),
    ("of_which_import_sql_catalog", "<module>", "pyiceberg/catalog/sql.py"),
    ("sqlcatalog_create_tables", "create_tables", "pyiceberg/catalog/sql.py"),
    ("table_open_or_create", "_open", "target_parquet_parts/iceberg.py"),
    ("first_commit", "commit", "target_parquet_parts/iceberg.py"),
    ("end_marker_commit", "finish", "target_parquet_parts/iceberg.py"),
    ("flush_total", "write_batch", "target_parquet_parts/iceberg.py"),
)
CUM_FILTER = re.compile(r"target_parquet_parts/|pyiceberg/catalog/|sqlalchemy/sql/schema\.py")
# The target's CLI under cProfile on every thread (the SDK drains sinks on worker threads).
PROFILER = """
import cProfile, pstats, sys, threading
out, sys.argv = sys.argv[1], ["target-parquet-parts", *sys.argv[2:]]
done = []
_run = threading.Thread.run
def run(self):
    profile = cProfile.Profile()
    profile.enable()
    try:
        _run(self)
    finally:
        profile.disable()
        done.append(profile)
threading.Thread.run = run
main = cProfile.Profile()
main.enable()
code = 0
try:
    from target_parquet_parts.target import TargetParquetParts
    TargetParquetParts.cli()
except SystemExit as exc:
    code = exc.code
main.disable()
stats = pstats.Stats(main)
for profile in done:
    stats.add(profile)
stats.dump_stats(out)
sys.exit(code)
"""


def run(
    workdir: Path, input_path: Path, records: int, *, kind: str, tag: str, env: dict[str, str]
) -> tuple[benchlib.ChildResult, list[float], int, Path | None]:
    """One target run; (result, flush or commit ms per flush, files written, local output)."""
    local = workdir / f"{kind}-{tag}"
    output_dir = f"s3://{BUCKET}/{kind}-{tag}" if kind.startswith("s3") else str(local)
    settings: dict[str, object] = {"output_dir": output_dir, "partition_date_field": "received_at"}
    if kind == "iceberg":
        settings["table_format"] = "iceberg"
    config = workdir / f"{kind}-{tag}.json"
    config.write_text(json.dumps(settings))
    stderr_path = workdir / f"{kind}-{tag}.stderr"
    argv = [benchlib.venv_bin("target-parquet-parts"), "--config", str(config)]
    argv += ["--input", str(input_path)]
    if kind == "iceberg_minimal":
        argv = [sys.executable, str(MINIMAL_SCRIPT), "iceberg", str(input_path), str(local)]
    elif kind == "s3_minimal":
        argv = [sys.executable, str(MINIMAL_SCRIPT), "s3", str(input_path), BUCKET, f"{kind}-{tag}"]
    with (workdir / f"{kind}-{tag}.stdout").open("wb") as out, stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=out, stderr=err, env={**benchlib.CHILD_ENV, **env})
    benchlib.fail_unless_ok(f"target-parquet-parts ({kind})", result, stderr_path)
    if kind.startswith("s3"):
        rows, files = s3_check(env, f"{kind}-{tag}")
    elif kind.startswith("iceberg"):
        rows, files = iceberg_rows(local), sum(1 for _ in local.rglob("data/**/*.parquet"))
    else:
        rows, files = parts_rows(local), sum(1 for _ in local.rglob("*.parquet"))
    if rows != records:
        raise SystemExit(f"{kind} wrote {rows} rows, expected {records}")
    text = stderr_path.read_text(errors="replace")
    if kind == "iceberg":
        timings = [float(v) for v in re.findall(r"flush_complete .*?commit_ms=([0-9.]+)", text)]
    else:
        timings = flush_ms(stderr_path)
    return result, timings, files, (None if kind.startswith("s3") else local)


def _iceberg_config(workdir: Path, tag: str) -> Path:
    config = workdir / f"profile-{tag}.json"
    settings = {
        "output_dir": str(workdir / f"profile-{tag}"),
        "partition_date_field": "received_at",
        "table_format": "iceberg",
    }
    config.write_text(json.dumps(settings))
    return config


def import_times(stderr: str) -> dict[str, float]:
    """``-X importtime`` output: own import time (ms) per top-level package."""
    own: collections.Counter[str] = collections.Counter()
    for match in re.finditer(r"^import time:\s+(\d+) \|\s+\d+ \| +(\S+)$", stderr, re.MULTILINE):
        own[match[2].split(".")[0]] += int(match[1]) / 1000
    return dict(own)


def profile_startup(workdir: Path, one_record: Path) -> None:
    """Where a one-record Iceberg run's time goes: imports, then phases and top entries."""
    target = benchlib.venv_bin("target-parquet-parts")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"PROFILE iceberg_startup one-record run, loadavg_1m_5m_15m={load}")
    config = _iceberg_config(workdir, "imports")
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", target, "--config", str(config)],
        input=one_record.read_bytes(),
        capture_output=True,
        check=True,
        env=benchlib.CHILD_ENV,
    )
    own = import_times(completed.stderr.decode(errors="replace"))
    print(
        f"PROFILE import total_ms={sum(own.values()):.0f} "
        + " ".join(f"{name}_ms={own.get(name, 0.0):.0f}" for name in IMPORT_PACKAGES)
    )
    config = _iceberg_config(workdir, "cprofile")
    stats_path = workdir / "startup.prof"
    argv = [sys.executable, "-c", PROFILER, str(stats_path), "--config", str(config)]
    subprocess.run(
        argv, input=one_record.read_bytes(), capture_output=True, check=True, env=benchlib.CHILD_ENV
    )
    stats = pstats.Stats(str(stats_path))
    entries: dict[tuple[str, int, str], tuple[int, float]] = {
        key: (value[1], value[3])
        for key, value in stats.stats.items()  # type: ignore[attr-defined]
    }
    for label, function, suffix in PHASES:
        found = [
            (calls, cum)
            for (path, _, name), (calls, cum) in entries.items()
            if name == function and path.endswith(suffix)
        ]
        calls, cum = max(found, key=lambda entry: entry[1], default=(0, 0.0))  # the outer one
        print(f"PROFILE phase {label} cum_ms={cum * 1000:.1f} calls={calls}")
    ranked = sorted(
        (
            (cum, calls, f"{path.split('site-packages/')[-1].split('/main/')[-1]}:{line}({name})")
            for (path, line, name), (calls, cum) in entries.items()
            if CUM_FILTER.search(path)
        ),
        reverse=True,
    )
    for cum, calls, where in ranked[:15]:
        print(f"PROFILE cum cum_ms={cum * 1000:.1f} calls={calls} {where}")


def main() -> None:
    """Parse arguments, run the three formats alternately, print figures and ratios."""
    profile = PROFILE_FLAG in sys.argv
    minimal = MINIMAL_FLAG in sys.argv
    for flag in (PROFILE_FLAG, MINIMAL_FLAG):  # benchlib's parser knows only the common flags
        if flag in sys.argv:
            sys.argv.remove(flag)
    kinds = KINDS + MINIMAL if minimal else KINDS
    records, repeat = benchlib.parse_run_sizes(__doc__.splitlines()[0], 300_000)
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        workdir = Path(tmp)
        input_path = workdir / "input.jsonl"
        size = benchlib.write_singer_file(input_path, records)
        one_record = workdir / "one-record.jsonl"
        benchlib.write_singer_file(one_record, 1)
        benchlib.print_header(
            "lake_formats",
            {
                "records": records,
                "input_mib": f"{size / 2**20:.1f}",
                "batch": "each format's defaults",
                "partition_date_field": "received_at",
                "s3": "moto_server on loopback, versioned bucket",
            },
        )
        best: dict[str, benchlib.ChildResult] = {}
        startup: dict[str, float] = {}
        timings: dict[str, list[float]] = {kind: [] for kind in kinds}
        last_iceberg: Path | None = None
        with moto_server(workdir) as moto_env:
            make_bucket(moto_env)
            for attempt in range(repeat):
                for kind in kinds:
                    env = moto_env if kind.startswith("s3") else {}
                    result, ms, files, local = run(
                        workdir, input_path, records, kind=kind, tag=str(attempt), env=env
                    )
                    timings[kind].extend(ms)
                    benchlib.print_run(kind, records, result, files=files)
                    if kind not in best or result.wall_seconds < best[kind].wall_seconds:
                        best[kind] = result
                    if kind == "iceberg":
                        last_iceberg = local
                    if kind in MINIMAL:
                        continue  # their start-up is not looked at
                    tiny, _, _, _ = run(
                        workdir, one_record, 1, kind=kind, tag=f"startup-{attempt}", env=env
                    )
                    startup[kind] = min(startup.get(kind, tiny.wall_seconds), tiny.wall_seconds)
        rates = {kind: benchlib.rate(records, best[kind].wall_seconds) for kind in kinds}
        print(
            f"best of {repeat}: "
            + " ".join(f"{kind}_records_per_s={rates[kind]:.0f}" for kind in kinds)
        )
        for kind, label in (("parts", "flush"), ("s3", "flush"), ("iceberg", "commit")):
            values = timings[kind]
            median = statistics.median(values) if values else 0.0
            print(f"context: {kind} {label}_ms_per_flush median={median:.1f} n={len(values)}")
        for kind in kinds[1:]:
            ratio = rates[kind] / rates["parts"]
            benchlib.print_ratio(f"{kind}_over_parts", ratio, f">={GOAL}", ratio >= GOAL)
        if minimal:
            print(
                "context: the target over the minimal load of its format "
                f"iceberg={rates['iceberg'] / rates['iceberg_minimal']:.3f} "
                f"s3={rates['s3'] / rates['s3_minimal']:.3f}"
            )
        # Start-up is paid once per run: without it, the per-record cost a long run converges to.
        # (n/a when the input is too small for the run to outlast its start-up: --quick.)
        steady = {kind: best[kind].wall_seconds - startup[kind] for kind in KINDS}
        without = " ".join(
            f"{kind}_over_parts="
            + (f"{steady['parts'] / steady[kind]:.3f}" if min(steady.values()) > 0 else "n/a")
            for kind in KINDS[1:]
        )
        print(
            "context: start-up (one-record run, best) "
            + " ".join(f"{kind}_s={startup[kind]:.2f}" for kind in KINDS)
            + f"; ratios without it: {without}"
        )
        assert last_iceberg is not None
        compact(workdir, last_iceberg, records)
        if profile:
            profile_startup(workdir, one_record)


if __name__ == "__main__":
    main()
