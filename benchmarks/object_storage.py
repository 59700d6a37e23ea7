"""Object storage: target-parquet-parts writing to S3 (moto's server) against local parts.

Writes N Rapid7-shaped RECORD lines to a file, starts moto's S3 server as its own process on a
free loopback port (a bucket with versioning on), then times, alternately, each as its own
process reading that file with the target's DEFAULT batch sizes (no batch_size_rows, no
max_batch_bytes):

* local parts: ``output_dir`` a local directory (temp file, fsync, link, directory fsync);
* S3 parts: ``output_dir`` ``s3://bucket/run-k`` (one PUT with If-None-Match per part, one
  journal-entry PUT before it, the lease object renewed in the background).

Every run is checked: rows written = N; on S3 every part key has exactly one version. Printed:
records per second of each (best of ``--repeat``), the ratio S3 / local (goal >= 0.8), and the
mean flush milliseconds per part of each (from the target's ``flush_complete`` lines). moto
answers from memory on the same two cores, so the ratio shows the target's own S3 overhead
(requests, journal PUTs) plus moto's own CPU on the same cores (printed as moto_cpu_s), not a
real network's latency.

Run: ``.venv/bin/python benchmarks/object_storage.py [--quick] [--records N] [--repeat R]``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import benchlib
import pyarrow.dataset as ds
import pyarrow.parquet as pq

GOAL = 0.9  # parts are uploaded while the next batch is read (overlap_writes)
BUCKET = "bench"


def free_port() -> int:
    """A port nothing listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (from /proc; 0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def moto_server(workdir: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server as a child process; yields the environment pointing at it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = (workdir / "moto.log").open("wb")
    server = subprocess.Popen(
        [benchlib.venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
    )
    try:
        for _ in range(200):  # up to ~20 s for it to answer
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None:
                    log_text = (workdir / "moto.log").read_text()
                    raise SystemExit(f"moto_server exited: {log_text}") from None
                time.sleep(0.1)
        else:
            raise SystemExit("moto_server did not answer")
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "BENCH_MOTO_PID": str(server.pid),  # ignored by the target; read by main()
        }
        yield env
    finally:
        server.terminate()
        server.wait()
        log.close()


def make_bucket(env: dict[str, str]) -> None:
    """The benchmark's bucket, versioning on (so one version per part key can be checked)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    client = session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    client.close()


def s3_check(env: dict[str, str], prefix: str) -> tuple[int, int]:
    """(rows, parts) under ``s3://bench/prefix/events``; fails unless one version per key."""
    import boto3
    import pyarrow.fs as pafs

    client = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    versions: dict[str, int] = {}
    for page in client.get_paginator("list_object_versions").paginate(
        Bucket=BUCKET, Prefix=f"{prefix}/events/"
    ):
        for version in page.get("Versions", []):
            versions[version["Key"]] = versions.get(version["Key"], 0) + 1
    client.close()
    if any(count != 1 for count in versions.values()):
        raise SystemExit(f"a part key has more than one version: {versions}")
    host_port = env["AWS_ENDPOINT_URL"].split("://", 1)[1]
    fs = pafs.S3FileSystem(
        endpoint_override=host_port,
        scheme="http",
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_REGION"],
    )
    rows = ds.dataset(f"{BUCKET}/{prefix}/events", filesystem=fs, format="parquet").count_rows()
    return rows, len(versions)


def flush_ms(stderr_path: Path) -> list[float]:
    """``flush_total_ms`` of every ``flush_complete`` line."""
    text = stderr_path.read_text(errors="replace")
    return [float(v) for v in re.findall(r"flush_complete .*?flush_total_ms=([0-9.]+)", text)]


def run_once(
    workdir: Path,
    input_path: Path,
    records: int,
    *,
    name: str,
    output_dir: str,
    env: dict[str, str],
) -> tuple[benchlib.ChildResult, list[float], int]:
    """One target run with default batch sizes; (result, flush ms per part, parts)."""
    config = workdir / f"{name}.json"
    config.write_text(json.dumps({"output_dir": output_dir}))
    argv = [benchlib.venv_bin("target-parquet-parts"), "--config", str(config)]
    argv += ["--input", str(input_path)]
    stderr_path = workdir / f"{name}.stderr"
    with (workdir / f"{name}.stdout").open("wb") as out, stderr_path.open("wb") as err:
        result = benchlib.run_child(argv, stdout=out, stderr=err, env={**benchlib.CHILD_ENV, **env})
    benchlib.fail_unless_ok(name, result, stderr_path)
    if output_dir.startswith("s3://"):
        rows, parts = s3_check(env, output_dir.removeprefix(f"s3://{BUCKET}/"))
    else:
        files = sorted(Path(output_dir).rglob("*.parquet"))
        rows, parts = sum(pq.ParquetFile(f).metadata.num_rows for f in files), len(files)
    if rows != records:
        raise SystemExit(f"{name} wrote {rows} rows, expected {records}")
    return result, flush_ms(stderr_path), parts


def main() -> None:
    """Parse arguments, run the measurements, print figures and the ratio."""
    records, repeat = benchlib.parse_run_sizes(__doc__.splitlines()[0], 200_000)
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        workdir = Path(tmp)
        input_path = workdir / "input.jsonl"
        size = benchlib.write_singer_file(input_path, records)
        benchlib.print_header(
            "object_storage",
            {
                "records": records,
                "input_mib": f"{size / 2**20:.1f}",
                "batch": "defaults (batch_size_rows 10000, max_batch_bytes 128 MiB)",
                "s3": "moto_server on loopback, versioned bucket",
            },
        )
        with moto_server(workdir) as env:
            make_bucket(env)
            best: dict[str, benchlib.ChildResult] = {}
            flushes: dict[str, list[float]] = {"local": [], "s3": []}
            for run in range(repeat):  # alternate, keep the best of each: the machine is shared
                for kind in ("local", "s3"):
                    output_dir = (
                        str(workdir / f"local-{run}")
                        if kind == "local"
                        else f"s3://{BUCKET}/run-{run}"
                    )
                    moto_pid = int(env["BENCH_MOTO_PID"])
                    moto_before = process_cpu_seconds(moto_pid)
                    result, ms, parts = run_once(
                        workdir,
                        input_path,
                        records,
                        name=f"{kind}-{run}",
                        output_dir=output_dir,
                        env=env,
                    )
                    moto_cpu = process_cpu_seconds(moto_pid) - moto_before
                    flushes[kind].extend(ms)
                    # moto runs on the same two cores: its CPU is the S3 side's share of them
                    benchlib.print_run(
                        kind, records, result, parts=parts, moto_cpu_s=f"{moto_cpu:.2f}"
                    )
                    if kind not in best or result.wall_seconds < best[kind].wall_seconds:
                        best[kind] = result
        local_rate = benchlib.rate(records, best["local"].wall_seconds)
        s3_rate = benchlib.rate(records, best["s3"].wall_seconds)
        for kind, values in flushes.items():
            mean = sum(values) / len(values) if values else 0.0
            print(f"context: {kind} flush_ms_per_part mean={mean:.1f} parts={len(values)}")
        print(
            f"best of {repeat}: s3_records_per_s={s3_rate:.0f} local_records_per_s={local_rate:.0f}"
        )
        ratio = s3_rate / local_rate
        benchlib.print_ratio("s3_over_local", ratio, f">={GOAL}", ratio >= GOAL)


if __name__ == "__main__":
    main()
