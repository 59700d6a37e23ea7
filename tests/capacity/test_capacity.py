"""tap-rapid7-capacity: the tap's query cost model, and the command against the emulator."""

from __future__ import annotations

import json

import pytest

from pipeline_tools.capacity import budget_hours, ideal_queries, main, plan_queries

DAY_MS = 86_400_000
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_ideal_is_full_pages_per_log():
    assert ideal_queries({"a": 1000, "b": 1001, "c": 1}) == 2 + 3 + 1


def test_single_logs_pay_one_partial_page_per_window():
    # 10,000 events over 4 windows: 2,500 a window, 5 full pages each; 2,600: 6 pages each
    assert plan_queries({"a": 10_000}, windows=4) == 20
    assert plan_queries({"a": 10_400}, windows=4) == 24
    assert plan_queries({"quiet": 10}, windows=24) == 24  # one query per window even if empty


def test_quiet_logs_read_together_share_one_query_per_window():
    quiet = {f"log{i}": 20 for i in range(100)}  # 2,000 events, 100 logs, a day
    assert plan_queries(quiet, windows=1, logs_per_query=1) == 100
    assert plan_queries(quiet, windows=1, logs_per_query=20) == 5


def test_a_dense_group_costs_its_first_page_plus_each_logs_rest():
    # 2 logs of 1,000 per window: the shared page holds 250 of each, then 750 each: 2 pages
    assert plan_queries({"a": 1000, "b": 1000}, windows=1, logs_per_query=2) == 1 + 2 + 2


def test_budget_hours_at_the_published_budget():
    assert budget_hours(1500) == pytest.approx(0.25)
    assert budget_hours(6000) == pytest.approx(1.0)
    assert budget_hours(1425, reserve_share=0.05) == pytest.approx(0.25)


def test_command_counts_once_per_log_and_prints_the_plan(emulator_factory, tmp_path, capsys):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, log_count=2)
    config = tmp_path / "tap.json"
    config.write_text(
        json.dumps({"api_key": emu.api_key, "base_url": emu.base_url, "window_seconds": 600})
    )
    start, end = NOW_MS - 3_600_000, NOW_MS
    before = emu.stats()["requests"].get("queries_started", 0)
    assert main(["--config", str(config), "--from", str(start), "--to", str(end)]) == 0
    out = capsys.readouterr().out
    started = emu.stats()["requests"]["queries_started"] - before
    assert started == 2  # one calculate(count) per log, no more
    truth = {log: len(emu.truth(start, end, log)) for log in emu.log_ids}
    for log, events in truth.items():
        assert f"{log}  {events:>12}" in out
    assert "windows per log: 6" in out
    assert "750,000 events per 15 minutes" in out


def test_command_refuses_a_backwards_range(tmp_path, capsys):
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": "k", "base_url": "http://127.0.0.1:9"}))
    assert main(["--config", str(config), "--from", "2026-01-02", "--to", "2026-01-01"]) == 2
    assert "--to must be after --from" in capsys.readouterr().err


def test_an_error_never_shows_the_key(tmp_path, capsys):
    # A key with a trailing newline (as read from a secret file) makes requests refuse the
    # header with a message that quotes the value; the command must not print it.
    key = "capacity-secret-key-123\n"
    config = tmp_path / "tap.json"
    settings = {"api_key": key, "base_url": "http://127.0.0.1:9", "max_retries": 0}
    config.write_text(json.dumps(settings))
    assert main(["--config", str(config), "--from", "2026-01-01", "--to", "2026-01-02"]) == 2
    err = capsys.readouterr().err
    assert "could not estimate" in err
    assert "capacity-secret-key-123" not in err
