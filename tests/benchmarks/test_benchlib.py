"""The generated records and the raw baseline are what the benchmarks claim they are."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import benchlib  # noqa: E402
import raw_parquet_baseline  # noqa: E402


def test_records_are_rapid7_shaped_and_about_450_bytes():
    lines = [benchlib.record_line(index) for index in range(1_000)]
    average = sum(map(len, lines)) / len(lines)
    assert 400 <= average <= 550
    records = [msgspec.json.decode(line)["record"] for line in lines]
    assert all(record["sequence_number"] > 2**53 for record in records)
    assert all(str(rec["sequence_number"]) == rec["sequence_number_str"] for rec in records)
    assert len({record["sequence_number"] for record in records}) == len(records)
    assert any(record["labels"] for record in records)
    assert any(not record["message"].startswith("{") for record in records)
    assert len({record["timestamp"] for record in records}) < len(records)  # shared millis


def test_singer_stream_starts_with_schema_and_ends_with_state():
    lines = [msgspec.json.decode(line) for line in benchlib.singer_lines(25, state_every=10)]
    kinds = [line["type"] for line in lines]
    assert kinds[0] == "SCHEMA"
    assert kinds.count("RECORD") == 25
    assert kinds[-1] == "STATE"
    assert kinds.count("STATE") == 3


def test_raw_baseline_writes_every_record_exactly(tmp_path):
    source = tmp_path / "in.jsonl"
    benchlib.write_singer_file(source, 250)
    rows = raw_parquet_baseline.run(
        source, tmp_path / "out", 100, raw_parquet_baseline.DEFAULT_SCHEMA
    )
    parts = sorted((tmp_path / "out").glob("*.parquet"))
    assert rows == 250
    assert len(parts) == 3
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind
    table = pq.ParquetDataset(parts).read()
    written = sorted(table.column("sequence_number").to_pylist())
    assert written == [benchlib.make_record(i)["sequence_number"] for i in range(250)]


def test_tap_budget_reads_the_summary_line_and_counts_the_fewest_queries():
    import tap_budget

    stderr = (
        "2026-11-30 12:00:00,000 | INFO | tap_rapid7.logsearch | logsearch_budget "
        "query_requests=1\n"
        "2026-11-30 12:00:01,000 | INFO | tap_rapid7.logsearch | logsearch_budget_summary "
        "query_requests=303 query_rate_limited=0 poll_requests=303 restarts=0 "
        "events_per_query=497.8 query_lowest_remaining=None\n"
    )
    summary = tap_budget.parse_summary(stderr)
    assert summary["query_requests"] == "303"
    assert summary["events_per_query"] == "497.8"
    assert summary["query_lowest_remaining"] == "None"
    with pytest.raises(SystemExit):
        tap_budget.parse_summary("no summary here\n")
    assert tap_budget.fewest_queries({"a": 1000, "b": 1001, "c": 0}) == 2 + 3 + 1
    assert tap_budget.scaled_budgets(30) == {
        "query_budget": 30,
        "poll_budget": 200,
        "management_budget": 30,
    }
    rates = tap_budget.backfill_rates(50, seed=1)
    assert rates == tap_budget.backfill_rates(50, seed=1)
    assert all(0.05 <= rate <= 20 for rate in rates)
    assert min(rates) < 0.2  # spread over the whole range
    assert max(rates) > 5


def test_peak_rss_is_the_child_own_not_the_parent_high_water_mark():
    ballast = bytearray(300 * 2**20)  # the parent is big; a vfork'd child must not inherit it
    ballast[::4096] = b"x" * len(ballast[::4096])
    result = benchlib.run_child([sys.executable, "-c", "import time; time.sleep(0.2)"])
    assert result.returncode == 0
    assert 0 < result.max_rss_mib < 100
    del ballast
