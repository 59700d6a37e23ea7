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

Run: ``.venv/bin/python benchmarks/lake_formats.py [--quick] [--records N] [--repeat R]``.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from pathlib import Path

import benchlib
from iceberg_vs_parts import compact, iceberg_rows, parts_rows
from object_storage import BUCKET, flush_ms, make_bucket, moto_server, s3_check

GOAL = 0.8
KINDS = ("parts", "s3", "iceberg")


def run(
    workdir: Path, input_path: Path, records: int, *, kind: str, tag: str, env: dict[str, str]
) -> tuple[benchlib.ChildResult, list[float], int, Path | None]:
    """One target run; (result, flush or commit ms per flush, files written, local output)."""
    local = workdir / f"{kind}-{tag}"
    output_dir = f"s3://{BUCKET}/{kind}-{tag}" if kind == "s3" else str(local)
    settings: dict[str, object] = {"output_dir": output_dir, "partition_date_field": "received_at"}
    if kind == "iceberg":
        settings["table_format"] = "iceberg"
    config = workdir / f"{kind}-{tag}.json"
    config.write_text(json.dumps(settings))
    stderr_path = workdir / f"{kind}-{tag}.stderr"
    argv = [benchlib.venv_bin("target-parquet-parts"), "--config", str(config)]
    argv += ["--input", str(input_path)]
    with (workdir / f"{kind}-{tag}.stdout").open("wb") as out, stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=out, stderr=err, env={**benchlib.CHILD_ENV, **env})
    benchlib.fail_unless_ok(f"target-parquet-parts ({kind})", result, stderr_path)
    if kind == "s3":
        rows, files = s3_check(env, f"{kind}-{tag}")
    elif kind == "iceberg":
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
    return result, timings, files, (local if kind != "s3" else None)


def main() -> None:
    """Parse arguments, run the three formats alternately, print figures and ratios."""
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
        timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
        last_iceberg: Path | None = None
        with moto_server(workdir) as moto_env:
            make_bucket(moto_env)
            for attempt in range(repeat):
                for kind in KINDS:
                    env = moto_env if kind == "s3" else {}
                    result, ms, files, local = run(
                        workdir, input_path, records, kind=kind, tag=str(attempt), env=env
                    )
                    timings[kind].extend(ms)
                    benchlib.print_run(kind, records, result, files=files)
                    if kind not in best or result.wall_seconds < best[kind].wall_seconds:
                        best[kind] = result
                    if kind == "iceberg":
                        last_iceberg = local
                    tiny, _, _, _ = run(
                        workdir, one_record, 1, kind=kind, tag=f"startup-{attempt}", env=env
                    )
                    startup[kind] = min(startup.get(kind, tiny.wall_seconds), tiny.wall_seconds)
        rates = {kind: benchlib.rate(records, best[kind].wall_seconds) for kind in KINDS}
        print(
            f"best of {repeat}: "
            + " ".join(f"{kind}_records_per_s={rates[kind]:.0f}" for kind in KINDS)
        )
        for kind, label in (("parts", "flush"), ("s3", "flush"), ("iceberg", "commit")):
            values = timings[kind]
            median = statistics.median(values) if values else 0.0
            print(f"context: {kind} {label}_ms_per_flush median={median:.1f} n={len(values)}")
        for kind in ("s3", "iceberg"):
            ratio = rates[kind] / rates["parts"]
            benchlib.print_ratio(f"{kind}_over_parts", ratio, f">={GOAL}", ratio >= GOAL)
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


if __name__ == "__main__":
    main()
