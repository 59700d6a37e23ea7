"""Smoke tests: each benchmark script runs end to end on tiny sizes and prints its ratio line.

No speed thresholds here (timings on shared machines are noise); the scripts themselves check
that every process they time wrote exactly the records it was given.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
PLAIN_TARGET = f"{sys.executable} {BENCHMARKS / 'plain_sdk_target.py'}"
RATIO_LINE = re.compile(r"^RATIO (\w+)=([0-9.]+|inf) goal=\S+ met=(yes|no)$", re.MULTILINE)


def run_benchmark(script: str, *args: str) -> str:
    """Run ``benchmarks/<script> --quick ARGS``; return its stdout, failing with its output."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def ratios(output: str) -> dict[str, float]:
    """The ``RATIO name=value`` lines of a benchmark's output."""
    return {name: float(value) for name, value, _ in RATIO_LINE.findall(output)}


@pytest.mark.parametrize(
    ("script", "ratio"),
    [
        ("target_throughput.py", "target_over_baseline"),
        ("target_memory.py", "peak_rss_4x_over_1x"),
        ("tap_cpu.py", "tap_over_raw_cpu"),
        ("kvp_cost.py", "kvp_on_over_off_records_per_s"),
        ("pipeline.py", "pipeline_over_sum_of_parts"),
        ("object_storage.py", "s3_over_local"),
        ("iceberg_vs_parts.py", "iceberg_over_parts"),
        ("lake_formats.py", "s3_over_parts"),
    ],
)
def test_benchmark_script_runs_end_to_end_and_prints_its_ratio(script, ratio):
    """Each benchmark, against the product, on tiny sizes."""
    output = run_benchmark(script)
    assert ratio in ratios(output), output
    assert ratios(output)[ratio] > 0


@pytest.mark.parametrize(
    ("script", "ratio"),
    [
        ("target_throughput.py", "target_over_baseline"),
        ("target_memory.py", "peak_rss_4x_over_1x"),
    ],
)
def test_target_benchmark_scripts_run_with_a_stand_in_target(script, ratio):
    """The measuring machinery works with any Singer target (here the plain SDK one)."""
    output = run_benchmark(script, "--target-command", PLAIN_TARGET)
    assert ratio in ratios(output), output
    assert ratios(output)[ratio] > 0


def test_tap_budget_prints_its_three_measurements_and_the_tap_agrees_with_the_emulator():
    """Dense (queries, 429s, wall time), many quiet logs, and the backfill plan."""
    output = run_benchmark("tap_budget.py")
    found = ratios(output)
    for name in (
        "queries_over_fewest",
        "http_429s",
        "wall_over_budget_bound",
        "queries_per_log",
        "backfill_hours_over_ideal",
    ):
        assert name in found, output
    assert found["queries_over_fewest"] > 0
    assert found["queries_per_log"] > 0
    assert found["backfill_hours_over_ideal"] >= 1 / 0.95 - 1e-3  # the reserve alone
    assert "dense_agree: " in output
    assert "quiet_agree: " in output
    assert "logsearch_budget_summary" not in output  # parsed, printed as dense_tap_summary
    assert re.search(r"^dense_tap_summary: query_requests=\d+ ", output, re.MULTILINE), output
    assert re.search(r"^cost_model_vs_dense: plan_queries_predicted=\d+ ", output, re.MULTILINE)


def test_memory_flushes_reads_rss_at_each_checkpoint_of_one_long_lived_run():
    """One target process, a flush per STATE: RSS read at each checkpoint, its output checked."""
    output = run_benchmark("memory_flushes.py")
    assert ratios(output)["rss_100k_over_1k"] > 0, output
    checkpoints = re.findall(r"^checkpoint: flushes=(\d+) rss_mib=[0-9.]+ ", output, re.MULTILINE)
    assert checkpoints == ["100", "200", "500", "1000"], output
    assert "checked: states=1000" in output
    assert "checked: parts=1000 rows=1000" in output
    assert re.search(r"^rss: at_100_mib=[0-9.]+ at_1000_mib=[0-9.]+ ", output, re.MULTILINE)


@pytest.mark.parametrize("kind", ["s3", "iceberg"])
def test_memory_flushes_runs_on_s3_and_iceberg(kind):
    """The same run on moto's S3 server and into an Iceberg table (one commit per flush)."""
    output = run_benchmark(
        "memory_flushes.py", "--output", kind, "--flushes", "60", "--early", "20"
    )
    assert ratios(output)[f"rss_last_over_first_{kind}"] > 0, output
    assert "checked: states=60" in output
    assert "checked: parts=60 rows=60" in output


def test_lake_formats_runs_the_minimal_loads_beside_the_target():
    """``--minimal``: the hand-written Iceberg and S3 loads, rows checked by the script."""
    output = run_benchmark("lake_formats.py", "--minimal")
    found = ratios(output)
    assert found["iceberg_minimal_over_parts"] > 0, output
    assert found["s3_minimal_over_parts"] > 0, output
    assert "the target over the minimal load of its format iceberg=" in output
