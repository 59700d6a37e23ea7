"""Label names: one /management/labels read per run, bounded look-ups, never fatal for a name."""

from __future__ import annotations

import logging

import pytest
from singer_sdk.exceptions import FatalAPIError

from plugin_io.log_events import parse_fields
from tap_rapid7.logsearch.labels import LABELS_PATH, MAX_LABEL_LOOKUPS, LabelNames
from tests.tap.conftest import BASE, START_URL, event, page
from tests.tap.test_client_protocol import read_all

KNOWN = "00000000-0000-0000-0000-000000000006"
OTHER = "00000000-0000-0000-0000-000000000007"
LIST_URL = f"{BASE}{LABELS_PATH}"
LISTED = {"id": KNOWN, "sn": 6, "name": "Out of order entry", "color": "e0e000", "reserved": True}


def labelled(ts: int, seq: int, *label_ids: object) -> dict:
    body = event(ts, seq)
    body["labels"] = [
        {"id": i, "links": [{"rel": "Self", "href": f"{LIST_URL}/{i}"}]} for i in label_ids
    ]
    return body


def warnings_named(caplog, name: str) -> list[dict]:
    return [
        parse_fields(r.getMessage().removeprefix(name))
        for r in caplog.records
        if r.getMessage().startswith(name + " ") and r.levelno == logging.WARNING
    ]


def test_names_come_from_one_list_read_for_many_events(requests_mock, make_client):
    labels = requests_mock.get(LIST_URL, json={"labels": [LISTED]})
    requests_mock.get(
        START_URL, json=page([labelled(1000 + i, i, KNOWN) for i in range(3)] + [event(1005, 9)])
    )
    client = make_client()
    records, _ = read_all(client)
    assert [r["label_names"] for r in records] == [["Out of order entry"]] * 3 + [[]]
    assert records[0]["labels"] == [{"id": KNOWN}]
    assert labels.call_count == 1
    # the labels stream's read is the same one: no second request
    assert client.list_labels() == [LISTED]
    assert labels.call_count == 1
    assert client.pacer.snapshot()["management_requests"] == 1  # the management budget


def test_an_unlisted_id_is_looked_up_once_per_run(requests_mock, make_client):
    requests_mock.get(LIST_URL, json={"labels": [LISTED]})
    lookup = requests_mock.get(
        f"{LIST_URL}/{OTHER}", json={"label": {"id": OTHER, "name": "Out of events"}}
    )
    requests_mock.get(
        START_URL, json=page([labelled(1000, 1, OTHER, KNOWN), labelled(1001, 2, OTHER)])
    )
    records, _ = read_all(make_client())
    assert [r["label_names"] for r in records] == [
        ["Out of events", "Out of order entry"],
        ["Out of events"],
    ]
    assert lookup.call_count == 1


def test_a_404_leaves_the_name_null_with_one_warning_per_id(requests_mock, make_client, caplog):
    requests_mock.get(LIST_URL, json={"labels": []})
    lookup = requests_mock.get(f"{LIST_URL}/{OTHER}", status_code=404, json={"message": "x"})
    requests_mock.get(START_URL, json=page([labelled(1000 + i, i, OTHER) for i in range(3)]))
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        records, _ = read_all(make_client())
    assert [r["label_names"] for r in records] == [[None]] * 3
    assert lookup.call_count == 1
    warned = warnings_named(caplog, "logsearch_label_unknown")
    assert [(w["label_id"], w["status_code"]) for w in warned] == [(OTHER, 404)]


def test_look_ups_per_run_are_bounded(requests_mock, make_client, caplog):
    requests_mock.get(LIST_URL, json={"labels": []})
    lookups = requests_mock.get(
        re_prefix(f"{LIST_URL}/"), json={"label": {"id": "x", "name": "invented"}}
    )
    names = LabelNames(make_client().http, max_lookups=3)
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        found = names.names([f"id-{i}" for i in range(10)] + ["id-0"])
    assert found == ["invented"] * 3 + [None] * 7 + ["invented"]
    assert lookups.call_count == 3
    capped = warnings_named(caplog, "logsearch_label_lookups_capped")
    assert [(w["max_lookups"], w["label_id"]) for w in capped] == [(3, "id-3")]
    assert MAX_LABEL_LOOKUPS == 100


def re_prefix(prefix: str):
    import re

    return re.compile(re.escape(prefix) + ".+")


@pytest.mark.parametrize("status", [401, 403])
def test_a_key_that_may_not_read_labels_warns_once_and_goes_on(
    requests_mock, make_client, caplog, status
):
    requests_mock.get(LIST_URL, status_code=status, json={"message": "Forbidden"})
    lookup = requests_mock.get(f"{LIST_URL}/{OTHER}", json={"label": {"name": "never asked"}})
    requests_mock.get(
        START_URL, json=page([labelled(1000, 1, OTHER), labelled(1001, 2, KNOWN, OTHER)])
    )
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        records, report = read_all(client)
        assert client.list_labels() == []
    assert report.events == 2
    assert [r["label_names"] for r in records] == [[None], [None, None]]
    assert lookup.call_count == 0  # it would be refused the same way
    warned = warnings_named(caplog, "logsearch_labels_unavailable")
    assert len(warned) == 1
    assert warned[0]["status_code"] == status


def test_the_list_missing_still_lets_ids_be_looked_up(requests_mock, make_client):
    requests_mock.get(LIST_URL, status_code=404, json={"message": "HTTP 404 Not Found"})
    requests_mock.get(f"{LIST_URL}/{KNOWN}", json={"label": LISTED})
    names = LabelNames(make_client().http)
    assert names.names([KNOWN, None, {"not": "hashable"}]) == ["Out of order entry", None, None]
    assert names.labels() == []


def test_an_answer_that_is_not_a_label_leaves_the_name_null(requests_mock, make_client, caplog):
    requests_mock.get(LIST_URL, json={"labels": "nope"})
    requests_mock.get(f"{LIST_URL}/{OTHER}", json={"label": {"name": 7}})
    names = LabelNames(make_client().http)
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        assert names.names([OTHER]) == [None]
    assert len(warnings_named(caplog, "logsearch_labels_unavailable")) == 1
    assert len(warnings_named(caplog, "logsearch_label_unknown")) == 1


def test_a_server_failing_every_retry_still_fails_the_run(requests_mock, make_client):
    requests_mock.get(LIST_URL, status_code=503, json={"message": "down"})
    with pytest.raises(FatalAPIError, match="label list"):
        LabelNames(make_client(max_retries=1).http).names([KNOWN])


def test_the_id_is_quoted_into_the_path(requests_mock, make_client):
    requests_mock.get(LIST_URL, json={"labels": []})
    lookup = requests_mock.get(f"{LIST_URL}/..%2F..%2Fquery%3Fx", json={"label": {"name": "n"}})
    assert LabelNames(make_client().http).names(["../../query?x"]) == ["n"]
    assert lookup.call_count == 1
