"""The SDK's standard tap test suite, run against the bundled emulator over loopback HTTP."""

from __future__ import annotations

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from logsearch_emulator import EmulatorOptions, running_emulator
from tap_rapid7.tap import TapRapid7

# Filled in by the class-scoped fixture below before the suite's runner syncs (the SDK's test
# runner keeps a reference to this dict, so the emulator's URL reaches it).
CONFIG: dict = {
    "api_key": "emulator-key",
    "start_date": "2026-01-01T00:00:00Z",
    "end_date": "2026-01-01T00:01:00Z",
    "window_seconds": 30,
    "poll_interval_seconds": 0.001,
    "backoff_base_seconds": 0.01,
}

_StandardTests = get_tap_test_class(
    TapRapid7,
    config=CONFIG,
    suite_config=SuiteConfig(max_records_limit=500),
    parse_env_config=False,
)


class TestTapRapid7Standard(_StandardTests):
    """Discovery, CLI, connection, final STATE, stream and attribute checks of the SDK."""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def emulator_for_suite(cls):
        options = EmulatorOptions(seed=11, log_count=2, events_per_second=1.0, burst_size=20)
        with running_emulator(options) as emu:
            CONFIG["base_url"] = emu.base_url
            CONFIG["log_ids"] = emu.log_ids
            yield emu

    def test_records_equal_the_emulator_truth(self, runner, emulator_for_suite):
        records = runner.records["events"]
        got = sorted((r["log_id"], r["timestamp"], r["sequence_number_str"]) for r in records)
        expected = sorted(emulator_for_suite.truth(1_767_225_600_000, 1_767_225_660_000))
        assert got == expected
        assert len(got) > 50
