"""Newcomer friction: every refusal names the setting at fault, metadata is the installed one."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from plugin_io.distribution import distribution_version
from tap_rapid7.config_dates import check_dates, resolve_date
from tap_rapid7.logsearch import REGIONS, LogSearchClient

pytestmark = pytest.mark.e2e

TAP = Path(sys.executable).with_name("tap-rapid7")
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def _run_tap(tmp_path: Path, config: dict, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [str(TAP), "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _config(emulator, **settings) -> dict:
    return {
        "api_key": emulator.api_key,
        "base_url": emulator.base_url,
        "poll_interval_seconds": 0.05,
        "poll_interval_max_seconds": 0.2,
        **settings,
    }


def test_missing_start_date_names_the_setting(tmp_path, emulator_factory):
    emulator = emulator_factory(log_count=1, polls_before_ready=0)
    result = _run_tap(tmp_path, _config(emulator))
    assert result.returncode == 1
    assert "start_date is required when there is no state" in result.stderr
    assert "Config validation failed" in result.stderr


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"start_date": "2099-01-01T00:00:00Z"}, ["start_date", "2099-01-01T00:00:00Z", "future"]),
        (
            {"start_date": "2024-01-02T00:00:00Z", "end_date": "2024-01-01T00:00:00Z"},
            ["end_date", "2024-01-01T00:00:00Z", "is not after start_date", "2024-01-02"],
        ),
        ({"start_date": "2 hours agoo"}, ["start_date", "'2 hours agoo'", "N seconds|minutes"]),
        ({"end_date": "yesterday-ish"}, ["end_date", "'yesterday-ish'", "ISO 8601"]),
    ],
)
def test_unusable_dates_are_refused_naming_setting_and_value(
    tmp_path, emulator_factory, settings, expected
):
    emulator = emulator_factory(log_count=1, polls_before_ready=0)
    result = _run_tap(tmp_path, _config(emulator, **settings))
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout == ""
    error_lines = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert any(all(part in line for part in expected) for line in error_lines), error_lines


def test_relative_start_date_works_when_run_directly(tmp_path, emulator_factory):
    emulator = emulator_factory(log_count=1, polls_before_ready=0)
    result = _run_tap(tmp_path, _config(emulator, start_date="2 hours ago UTC"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = [
        json.loads(line)
        for line in result.stdout.splitlines()
        if '"type":"RECORD"' in line.replace(" ", "")
    ]
    assert any(record["stream"] == "events" for record in records)


@pytest.mark.parametrize(
    ("text", "hours_back"),
    [("2 hours ago", 2), ("30 minutes ago UTC", 0.5), ("1 day ago", 24), ("3 Days Ago", 72)],
)
def test_relative_forms(text, hours_back):
    assert resolve_date("start_date", text, NOW) == NOW - dt.timedelta(hours=hours_back)


def test_dates_resolve_to_iso_once():
    resolved, errors = check_dates({"start_date": "1 day ago", "end_date": "2026-11-30"}, NOW)
    assert errors == []
    assert resolved == {
        "start_date": "2026-11-29T12:00:00+00:00",
        "end_date": "2026-11-30T00:00:00+00:00",
    }


def test_about_lists_the_regions():
    result = subprocess.run(
        [str(TAP), "--about", "--format=json"], capture_output=True, text=True, check=True
    )
    region = json.loads(result.stdout)["settings"]["properties"]["region"]
    assert all(name in region["description"] for name in REGIONS)
    assert ", ".join(REGIONS) in region["description"]


def test_user_agent_carries_the_installed_version(requests_mock):
    version = distribution_version()
    assert version != "0+unknown"  # the suite runs against the installed package
    requests_mock.get("https://logs.test/management/logs", json={"logs": []})
    client = LogSearchClient.from_config({"api_key": "k", "base_url": "https://logs.test"})
    client.list_logs()
    assert requests_mock.last_request.headers["User-Agent"] == f"tap-rapid7/{version}"


def test_events_column_names_other_parts_import_are_the_schema_s():
    """reconcile imports these names; each must be a property of the events schema."""
    from tap_rapid7.logsearch import records

    properties = records.events_schema(kvp_info=True)["properties"]  # every optional column
    for name in records.__all__:
        value = getattr(records, name)
        if name.isupper() and isinstance(value, str) and name != "EVENTS_STREAM":
            assert value in properties, name
    assert set(records.EVENTS_KEY_PROPERTIES) <= set(records.EVENTS_SCHEMA["properties"])
