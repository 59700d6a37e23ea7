"""max_concurrent_queries against the emulator over HTTP, with faults and a rate limit on.

The concurrent sync must emit exactly the sequential one's RECORD and STATE messages, in the
same order, while more than one window query was really in flight.
"""

from __future__ import annotations

import io
import json

import pytest

from logsearch_emulator import EmulatorOptions, running_emulator
from tap_rapid7.runner import ConcurrentRunner
from tap_rapid7.tap import TapRapid7
from tap_rapid7.windows import iso_to_millis

pytestmark = pytest.mark.e2e


def sync(monkeypatch, config: dict) -> tuple[list[dict], TapRapid7]:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr("sys.stdout", out)
    tap = TapRapid7(config=config, parse_env_config=False)
    tap.sync_all()
    out.flush()
    messages = [json.loads(line) for line in out.buffer.getvalue().decode().splitlines()]
    return [m for m in messages if m["type"] in ("RECORD", "STATE")], tap


def without_extraction_time(messages: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "time_extracted"} for m in messages]


def test_concurrent_equals_sequential_with_faults_and_rate_limit(monkeypatch):
    options = EmulatorOptions(
        seed=21,
        log_count=3,
        events_per_second=2.0,
        polls_before_ready=2,
        error_rate=0.03,
        duplicate_next=True,
        force_429_on_request=(25, 80),  # one in each run
        query_budget=20,  # Rapid7's budgets scaled down to 1-second windows
        poll_budget=40,
        budget_window_seconds=1.0,
    )
    with running_emulator(options) as emu:
        config = {
            "api_key": emu.api_key,
            "base_url": emu.base_url,
            "log_ids": emu.log_ids,
            "start_date": "2026-04-01T00:00:00Z",
            "end_date": "2026-04-01T00:06:00Z",
            "window_seconds": 90,
            "per_page": 250,
            "poll_interval_seconds": 0.002,
            "poll_interval_max_seconds": 0.02,
            "backoff_base_seconds": 0.01,
            "max_retries": 12,
            "state_every_records": 400,
        }
        sequential, _ = sync(monkeypatch, {**config, "max_concurrent_queries": 1})
        concurrent, tap = sync(monkeypatch, {**config, "max_concurrent_queries": 4})
        runner = tap.window_runner([])
        assert isinstance(runner, ConcurrentRunner)
        assert without_extraction_time(concurrent) == without_extraction_time(sequential)
        assert runner.max_active > 1
        stats = emu.stats()
        rate_limited = stats["faults"]["rate_limited"] + stats["faults"]["forced_429"]
        truth = set(
            emu.truth(iso_to_millis(config["start_date"]), iso_to_millis(config["end_date"]))
        )
    records = [
        (m["record"]["log_id"], m["record"]["timestamp"], m["record"]["sequence_number_str"])
        for m in concurrent
        if m["type"] == "RECORD" and m["stream"] == "events"
    ]
    assert sorted(records) == sorted(truth)
    monkeypatch.undo()  # stdout back, for the figures
    print(
        f"CONCURRENCY records={len(records)} max_queries_in_flight={runner.max_active} "
        f"windows={len(runner.reports)} http_429s={rate_limited} "
        f"api_requests={stats['api_requests']} "
        f"budget={tap.client.pacer.snapshot()}"
    )
