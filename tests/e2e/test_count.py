"""LogSearchClient.count (for reconciliation) against the emulator: half-open whatever `to` does."""

from __future__ import annotations

import pytest

from logsearch_emulator import EmulatorOptions, running_emulator
from tap_rapid7.logsearch import LogSearchClient
from tap_rapid7.windows import iso_to_millis

pytestmark = pytest.mark.e2e

FROM = iso_to_millis("2026-03-01T00:00:00Z")
TO = iso_to_millis("2026-03-01T00:05:00Z")


@pytest.mark.parametrize("to_inclusive", [False, True], ids=["to-exclusive", "to-inclusive"])
@pytest.mark.parametrize("from_inclusive", [True, False], ids=["from-inclusive", "from-exclusive"])
def test_count_equals_truth_of_the_half_open_window(from_inclusive, to_inclusive):
    options = EmulatorOptions(
        seed=5, log_count=2, burst_probability=0.5, from_inclusive=from_inclusive,
        to_inclusive=to_inclusive, sequence_numbers="per_ms",
    )  # fmt: skip
    with running_emulator(options) as emu:
        client = LogSearchClient.from_config(
            {"api_key": emu.api_key, "base_url": emu.base_url, "poll_interval_seconds": 0.001}
        )
        for log_id in emu.log_ids:
            # Start and end on milliseconds that hold events, so a server excluding `from` would
            # under-count and one including `to` would over-count.
            stamps = [e["timestamp"] for e in emu.events(log_id, FROM, TO)]
            end = max(set(stamps), key=stamps.count)
            begin = min(stamps)
            assert client.count(log_id, begin, end) == len(emu.truth(begin, end, log_id))
