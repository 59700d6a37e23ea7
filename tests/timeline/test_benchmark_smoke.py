"""Smoke test: benchmarks/timeline_memory.py runs end to end on tiny sizes and prints its ratio.

As the other benchmarks' smoke tests (tests/benchmarks): no memory or speed threshold here; the
script itself checks that the command counted what the generated logs hold.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"^RATIO timeline_rss_100mb_over_10mb=([0-9.]+) goal=<=1.5 met=(yes|no)$", re.M)


def test_timeline_memory_benchmark_runs_and_prints_both_peaks_and_its_ratio():
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "timeline_memory.py"), "--quick"],
        capture_output=True,
        check=False,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert output.startswith("== timeline_memory: small_mb=0.5 large_mb=5.0 "), output
    runs = re.findall(r"^timeline: pages=(\d+) log_mb=([0-9.]+) ", completed.stdout, re.M)
    assert [float(mb) for _, mb in runs] == [0.5, 5.0], output
    assert re.search(r"^peak_rss: small_mib=[0-9.]+ large_mib=[0-9.]+$", completed.stdout, re.M)
    found = RATIO.search(completed.stdout)
    assert found, output
    assert float(found.group(1)) > 0
