"""`tap-rapid7-emulator`: flags for every option, loopback only, ready line, clean stop."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys

import pytest
import requests

from logsearch_emulator.cli import build_parser, main
from logsearch_emulator.data import SyntheticData
from logsearch_emulator.options import EmulatorOptions


def test_every_option_has_a_flag_and_flags_convert():
    parser = build_parser()
    flags = {a.dest for a in parser._actions}
    assert {f.name for f in dataclasses.fields(EmulatorOptions)} <= flags
    args = parser.parse_args(
        [
            "--no-next-is-async",
            "--force-429-on-request",
            "3,7",
            "--query-budget",
            "none",
            "--poll-budget",
            "120",
            "--no-budgets",
            "--budget-window-seconds",
            "6",
            "--link-ttl-seconds",
            "5",
            "--events-per-second",
            "2.5",
            "--lowercase-rels",
        ]
    )
    assert args.next_is_async is False
    assert args.force_429_on_request == (3, 7)
    assert args.query_budget is None
    assert args.poll_budget == 120
    assert args.budgets is False
    assert args.budget_window_seconds == 6.0
    assert args.link_ttl_seconds == 5.0
    assert args.events_per_second == 2.5
    assert args.lowercase_rels is True
    new = parser.parse_args(
        [
            "--no-from-inclusive",
            "--sequence-numbers",
            "per_ms",
            "--retention-days",
            "none",
            "--non-page-rate",
            "0.25",
        ]
    )
    assert new.from_inclusive is False
    assert new.sequence_numbers == "per_ms"
    assert new.retention_days is None
    assert new.non_page_rate == 0.25
    assert parser.parse_args(["--retention-days", "30.5"]).retention_days == 30.5
    defaults = parser.parse_args([])
    assert defaults.from_inclusive is True
    assert defaults.retention_days == 396
    assert defaults.sequence_numbers == "unique"
    assert defaults.port == 8765
    assert defaults.api_key == "emulator-key"
    assert defaults.budgets is True
    assert (defaults.query_budget, defaults.poll_budget, defaults.management_budget) == (
        1500,
        10000,
        1500,
    )
    assert defaults.budget_window_seconds == 900.0
    assert defaults.link_ttl_seconds == 20.0


def test_invalid_option_value_exits_with_the_option_name(capsys):
    assert main(["--burst-size", "100000", "--port", "0"]) == 2
    assert "burst_size" in capsys.readouterr().err
    assert main(["--poll-budget", "-1", "--port", "0"]) == 2
    assert "poll_budget must be >= 0 or None" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_on_loopback_and_stops_on_signal(stop_signal):
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logsearch_emulator.cli",
            "--port",
            "0",
            "--api-key",
            "k1",
            "--seed",
            "3",
            "--polls-before-ready",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            line = process.stdout.readline()
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            assert match, line
            base = match.group(1)
            response = requests.get(
                f"{base}/management/logs", headers={"X-Api-Key": "k1"}, timeout=10
            )
            assert response.status_code == 200
            same_seed = SyntheticData(EmulatorOptions(seed=3))
            assert [log["id"] for log in response.json()["logs"]] == [
                log.id for log in same_seed.logs
            ], "data is deterministic across processes"
            process.send_signal(stop_signal)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
