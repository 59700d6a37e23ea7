"""Malformed answers end in an InvalidPageError that names where (issue 11, finding 8, tap part).

Malformed events (not an object, no integer timestamp, no sequence number, another log's) and
malformed links are covered in test_contract.py and test_key_reach.py; these are the listing and
the poll body.
"""

from __future__ import annotations

import pytest

from tap_rapid7.logsearch import InvalidPageError, WindowReport
from tap_rapid7.tap import TapRapid7
from tap_rapid7.windows import Window
from tests.tap.conftest import BASE, LOG, START_URL, event, page, running


@pytest.mark.parametrize(
    ("logs", "index", "shown"),
    [([{"id": "ok"}, {"name": "no id"}], 1, "None"), ([{"id": 5}], 0, "5"),
     ([{"id": ""}], 0, "''")],
)  # fmt: skip
def test_a_listed_log_without_a_usable_id_names_the_field(requests_mock, logs, index, shown):
    requests_mock.get(f"{BASE}/management/logs", json={"logs": logs})
    tap = TapRapid7(
        config={"api_key": "k-0123456789", "base_url": BASE, "start_date": "2024-01-01"},
        setup_mapper=False,
    )
    with pytest.raises(InvalidPageError) as caught:
        _ = tap.log_ids
    assert str(caught.value) == (
        f"Log Search /management/logs sent log {index} without a usable id (field "
        f"logs[{index}].id: {shown}); set log_ids, or check region/base_url"
    )


@pytest.mark.parametrize("progress", ["50", None, [], {"done": 1}, 1e300])
def test_a_poll_body_with_an_odd_progress_is_still_polled_to_its_page(
    requests_mock, make_client, progress
):
    """``progress`` is only logged: a string or null there changes nothing (regression guard)."""
    body = running(f"{BASE}/query/q1")
    body["progress"] = progress
    requests_mock.get(START_URL, status_code=202, json=body)
    requests_mock.get(f"{BASE}/query/q1", [{"json": body}, {"json": page([event(1500, 3)])}])
    window = Window(1000, 2000)
    report = WindowReport(LOG, window)
    records = [r for b in make_client().read_window(LOG, window, None, None, report) for r in b]
    assert [r["sequence_number_str"] for r in records] == ["3"]
