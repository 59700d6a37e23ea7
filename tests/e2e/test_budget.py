"""tap | target under Rapid7's published budget model (scaled down in time), against truth.

The emulator counts each family's budget (queries: starts and Next pages; polls; management)
per key in fixed windows and expires Self links not polled for ``link_ttl_seconds``. The tap
must fit its work in the budget without a 429, slow down when the work does not fit, never let
a link expire for want of a poll, and report its spending exactly as the emulator counts it.
"""

from __future__ import annotations

import re

import pytest

from logsearch_emulator import EmulatorOptions, running_emulator
from tap_rapid7.windows import iso_to_millis
from tests.e2e.pipeline import compare, dataset_keys, start

pytestmark = pytest.mark.e2e

START = "2026-05-01T00:00:00Z"
END = "2026-05-01T00:08:00Z"
START_MS, END_MS = iso_to_millis(START), iso_to_millis(END)


def summary(stderr: str) -> dict[str, str]:
    """The fields of the tap's last ``logsearch_budget_summary`` line."""
    lines = [line for line in stderr.splitlines() if "logsearch_budget_summary " in line]
    assert lines, "the tap logs a budget summary at the end of every sync"
    body = lines[-1].split("logsearch_budget_summary ", 1)[1]
    return dict(re.findall(r"(\w+)=(\S+)", body))


def options(**overrides) -> EmulatorOptions:
    values = {
        "seed": 13,
        "log_count": 3,
        "events_per_second": 3.0,
        "burst_probability": 0.2,
        "burst_size": 150,
        "polls_before_ready": 1,
        "link_ttl_seconds": 1.0,
        "budget_window_seconds": 2.0,
        **overrides,
    }
    return EmulatorOptions(**values)


def tap_config(emu, **overrides) -> dict:
    return {
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "log_ids": emu.log_ids,
        "start_date": START,
        "end_date": END,
        "window_seconds": 120,
        "per_page": 100,
        "logs_per_query": 1,
        "poll_interval_seconds": 0.01,
        "poll_interval_max_seconds": 0.2,
        "backoff_base_seconds": 0.02,
        "max_retries": 10,
        "budget_window_seconds": 2.0,  # the emulator's, scaled down from Rapid7's 900
        "link_lifetime_seconds": 1.0,
        "budget_log_interval_seconds": 0.5,
        **overrides,
    }


def test_work_that_fits_sees_no_429_and_reports_what_the_emulator_counted(tmp_path):
    with running_emulator(options(query_budget=400, poll_budget=800)) as emu:
        pipe = start(tmp_path, tap_config(emu), {"output_dir": str(tmp_path / "out")})
        pipe.finish()
        rows = dataset_keys(tmp_path / "out")
        result = compare(emu.truth(START_MS, END_MS), rows)
        assert result.exact, result.line("budget-fits")
        stats = emu.stats()
        spent = summary(pipe.stderr("tap"))
    assert stats["faults"]["rate_limited"] == 0
    assert stats["faults"]["expired_links"] == 0
    for family in ("query", "poll", "management"):
        assert int(spent[f"{family}_requests"]) == stats["budgets"][family]["requests"], family
        assert spent[f"{family}_rate_limited"] == "0"
    assert int(spent["query_requests"]) == stats["requests"]["queries_started"]
    assert int(spent["events"]) == len(rows)
    assert spent["restarts"] == "0"
    print(f"E2E case=budget-fits {result.line('budget-fits')} summary={spent}")


def test_work_beyond_the_budget_slows_down_and_completes_exactly_with_faults(tmp_path):
    # About 50 queries against 12 a window: at least four windows, never a 429 from the budget.
    faults = {"error_rate": 0.05, "drop_rate": 0.02, "non_page_rate": 0.05, "fault_seed": 3}
    with running_emulator(options(query_budget=12, poll_budget=60, **faults)) as emu:
        config = tap_config(emu, logs_per_query=3, max_concurrent_queries=4)
        pipe = start(tmp_path, config, {"output_dir": str(tmp_path / "out")})
        pipe.finish()
        result = compare(emu.truth(START_MS, END_MS), dataset_keys(tmp_path / "out"))
        assert result.exact, result.line("budget-exceeded")
        stats = emu.stats()
        spent = summary(pipe.stderr("tap"))
    assert stats["requests"]["queries_started"] > 3 * 12, "the work really exceeded a window"
    assert stats["faults"]["rate_limited"] == 0
    assert stats["faults"]["expired_links"] == 0  # no link died for want of a poll
    assert float(spent["query_waited_seconds"]) > 0  # it slowed down to the budget
    assert int(spent["query_lowest_remaining"]) >= 0
    budget_lines = [ln for ln in pipe.stderr("tap").splitlines() if "logsearch_budget " in ln]
    assert budget_lines, "periodic budget lines while the sync runs"
    print(
        f"E2E case=budget-exceeded {result.line('budget-exceeded')} "
        f"queries={stats['requests']['queries_started']} faults={stats['faults']} summary={spent}"
    )
