"""A window older than the account's retention, against the emulator: a warning, never silence."""

from __future__ import annotations

import logging

from tap_rapid7.logsearch import LogSearchClient, WindowReport
from tap_rapid7.windows import Window

DAY_MS = 86_400_000
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_window_straddling_the_retention_horizon_warns_and_reads_what_is_kept(
    emulator_factory, caplog
):
    emu = emulator_factory(fixed_now_ms=NOW_MS, retention_days=1.0, polls_before_ready=0)
    client = LogSearchClient.from_config({"api_key": emu.api_key, "base_url": emu.base_url})
    horizon = NOW_MS - DAY_MS
    window = Window(horizon - 120_000, horizon + 120_000)
    log_id = emu.log_ids[0]
    report = WindowReport(log_id, window)
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        records = [r for b in client.read_window(log_id, window, report=report) for r in b]
    keys = [(r["log_id"], r["timestamp"], r["sequence_number_str"]) for r in records]
    assert keys == emu.truth(window.from_ms, window.to_ms, log_id)
    assert keys, "the part inside retention is still read"
    assert min(ts for _, ts, _ in keys) >= horizon
    assert report.beyond_retention
    warnings = [m for m in caplog.messages if m.startswith("logsearch_beyond_retention")]
    assert len(warnings) == 1
    assert f"window_from={window.from_ms} window_to={window.to_ms}" in warnings[0]


def test_window_inside_retention_carries_no_warning(emulator_factory, caplog):
    emu = emulator_factory(fixed_now_ms=NOW_MS, retention_days=1.0, polls_before_ready=0)
    client = LogSearchClient.from_config({"api_key": emu.api_key, "base_url": emu.base_url})
    window = Window(NOW_MS - 600_000, NOW_MS - 300_000)
    report = WindowReport(emu.log_ids[0], window)
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        records = [r for b in client.read_window(emu.log_ids[0], window, report=report) for r in b]
    assert records
    assert not report.beyond_retention
    assert not caplog.messages
