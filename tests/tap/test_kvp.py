"""kvp_info: asked for on every query and Next page when on; nothing changes when off."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from plugin_io.log_events import parse_fields
from tap_rapid7.logsearch.query import with_query_param
from tap_rapid7.logsearch.records import (
    EVENTS_SCHEMA,
    KVP,
    RecordBuilder,
    events_schema,
    kvp_of,
)
from tap_rapid7.settings import TapSettings, config_from_env
from tap_rapid7.streams import EventsStream
from tests.tap.conftest import BASE, LOG, START_URL, event, page
from tests.tap.test_client_protocol import read_all
from tests.tap.test_tap_state import config, event_records, fake, run_tap  # noqa: F401

# The events schema before issue 20 (kvp, label_names), byte for byte: with kvp_info off the
# schema is this plus label_names only.
SCHEMA_BEFORE = (
    '{"type":"object","properties":{"log_id":{"type":["string"],"description":"Log the entry is '
    'in"},"timestamp":{"type":["integer"],"description":"When Rapid7 received the entry, epoch '
    'ms, as the API sends it"},"received_at":{"type":["string"],"format":"date-time",'
    '"description":"`timestamp` as an ISO 8601 UTC date-time (replication key)"},"event_time":'
    '{"type":["string","null"],"format":"date-time","description":"The event\'s own time, from '
    'the message (event_time_fields); null if none"},"sequence_number":{"type":["integer"],'
    '"description":"Sequence number (int64, exact); unique only within one millisecond"},'
    '"sequence_number_str":{"type":["string"],"description":"Sequence number exactly as sent, '
    'as text"},"message":{"type":["string","null"],"description":"Raw log line, never '
    're-encoded"},"labels":{"type":["array","null"],"items":{"type":"object","properties":'
    '{"id":{"type":["string","null"]}},"additionalProperties":true}}},"required":["log_id",'
    '"timestamp","received_at","sequence_number","sequence_number_str"],"$schema":'
    '"https://json-schema.org/draft/2020-12/schema"}'
)


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


# Rapid7's OpenAPI example (EventsResponseSimple): the first event well formed, the second with
# `value` nested inside `key`; both texts numbers where the message holds a number.
OPENAPI_KVP = [
    {"key": {"text": "json.931dde6c60", "start": 2, "end": 12},
     "value": {"text": 899, "start": 14, "end": 17}},
]  # fmt: skip
OPENAPI_KVP_NESTED = [
    {"key": {"text": "json.931dde6c60", "start": 2, "end": 12,
             "value": {"text": 931, "start": 14, "end": 17}}},
]  # fmt: skip


def with_kvp(ts: int, seq: int, kvp_info) -> dict:
    body = event(ts, seq)
    body["kvp_info"] = kvp_info
    return body


def test_off_the_schema_is_today_s_plus_label_names_only():
    schema = json.loads(json.dumps(events_schema(kvp_info=False)))
    assert events_schema(kvp_info=False) is EVENTS_SCHEMA
    assert schema["properties"].pop("label_names")["type"] == ["array", "null"]
    assert compact(schema) == SCHEMA_BEFORE
    assert KVP not in EVENTS_SCHEMA["properties"]


def test_on_the_schema_only_gains_the_kvp_column():
    on = events_schema(kvp_info=True)
    kvp = on["properties"].pop(KVP)
    assert compact(on) == compact(EVENTS_SCHEMA)
    assert kvp["type"] == ["array", "null"]
    assert set(kvp["items"]["properties"]) == {"key", "value"}
    assert KVP not in EVENTS_SCHEMA["properties"]  # the shared constant was not touched


@pytest.mark.parametrize(
    ("kvp_info", "expected"),
    [
        (OPENAPI_KVP, [{"key": "json.931dde6c60", "value": "899"}]),
        (OPENAPI_KVP_NESTED, [{"key": "json.931dde6c60", "value": "931"}]),
        ([{"key": {"text": "a"}, "value": {"text": "x y"}}, {"key": {"text": "b"},
          "value": {"text": 1.5}}], [{"key": "a", "value": "x y"}, {"key": "b", "value": "1.5"}]),
        ([{"key": {"text": "ok"}, "value": {"text": True}}], [{"key": "ok", "value": "true"}]),
        ([], []),
        (None, None),
    ],
)  # fmt: skip
def test_both_readings_of_the_openapi_example_give_texts(kvp_info, expected):
    assert kvp_of(kvp_info) == (expected, 0, None)


def test_malformed_items_are_dropped_and_counted():
    pairs, dropped, problem = kvp_of(
        [{"key": {"text": "a"}, "value": {"text": "1"}}, {"key": {"start": 1}}, "x",
         {"key": {"text": "b"}, "value": {"text": None}}]
    )  # fmt: skip
    assert pairs == [{"key": "a", "value": "1"}]
    assert (dropped, problem) == (3, "kvp_info[1] has no usable key.text")
    assert kvp_of({"key": "a"}) == (None, 1, "kvp_info is a dict, not a list")


def test_on_every_query_and_next_page_ask_for_kvp_info(requests_mock, make_client, caplog):
    next_url = f"{BASE}/query/logs/{LOG}?from=999&to=5000&per_page=3&sequence_number=2"
    first = requests_mock.get(
        START_URL,
        [
            {"json": page([with_kvp(1000, 1, OPENAPI_KVP), with_kvp(1001, 2, OPENAPI_KVP)],
                          next_url)},
        ],
    )  # fmt: skip
    # the Next link as Rapid7's example sends it: without kvp_info; the tap adds it back
    follow = requests_mock.get(
        f"{next_url}&kvp_info=true",
        json=page([with_kvp(1002, 3, OPENAPI_KVP_NESTED), with_kvp(1003, 4, [{"key": "bad"}])]),
    )
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        records, report = read_all(make_client(kvp_info=True))
    assert parse_qs(urlsplit(first.last_request.url).query)["kvp_info"] == ["true"]
    assert follow.call_count == 1
    assert parse_qs(urlsplit(follow.last_request.url).query)["kvp_info"] == ["true"]
    assert [r[KVP] for r in records] == [
        [{"key": "json.931dde6c60", "value": "899"}],
        [{"key": "json.931dde6c60", "value": "899"}],
        [{"key": "json.931dde6c60", "value": "931"}],
        [],
    ]
    assert report.kvp_dropped == 1
    lines = [r.getMessage() for r in caplog.records]
    malformed = [m for m in lines if m.startswith("logsearch_kvp_malformed ")]
    assert len(malformed) == 1
    assert parse_fields(malformed[0].split(" ", 1)[1])["sequence_number"] == "4"
    complete = [m for m in lines if m.startswith("logsearch_window_complete ")]
    assert parse_fields(complete[0].split(" ", 1)[1])["kvp_dropped"] == 1


def test_a_query_over_several_logs_asks_for_it_too(requests_mock, make_client):
    posted = requests_mock.post(f"{BASE}/query/logs", json=page([]))
    client = make_client(kvp_info=True)
    list(client.protocol.pages(("log-a", "log-b"), 0, 10))
    assert parse_qs(urlsplit(posted.last_request.url).query)["kvp_info"] == ["true"]


def test_off_nothing_is_asked_and_no_column_is_written(requests_mock, make_client, caplog):
    started = requests_mock.get(START_URL, json=page([with_kvp(1000, 1, OPENAPI_KVP)]))
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        records, _ = read_all(make_client())
    assert "kvp_info" not in parse_qs(urlsplit(started.last_request.url).query)
    assert KVP not in records[0]
    assert list(records[0]) == [
        "log_id", "timestamp", "received_at", "event_time", "sequence_number",
        "sequence_number_str", "message", "labels", "label_names",
    ]  # fmt: skip
    complete = [r.getMessage() for r in caplog.records if "window_complete" in r.getMessage()]
    assert "kvp_dropped" not in complete[0]


def test_a_next_link_that_keeps_it_is_not_doubled():
    url = f"{BASE}/query/logs/{LOG}?query=where%28a%3E1%29&kvp_info=false&per_page=3"
    assert with_query_param(url, "kvp_info", "true") == (
        f"{BASE}/query/logs/{LOG}?query=where%28a%3E1%29&per_page=3&kvp_info=true"
    )
    kept = f"{BASE}/q?kvp_info=true"
    assert with_query_param(kept, "kvp_info", "true") == kept


def test_the_setting_reaches_the_stream_schema_and_the_environment():
    assert config_from_env({"TAP_RAPID7_KVP_INFO": "true"}) == {"kvp_info": True}
    assert TapSettings.from_config({"api_key": "k", "kvp_info": "false"}).kvp_info is False
    assert TapSettings.from_config({"api_key": "k"}).kvp_info is False
    assert EventsStream.schema is EVENTS_SCHEMA  # the class's (benchmarks read it) stays off


def test_a_builder_without_kvp_info_ignores_the_field():
    build = RecordBuilder()
    record = build(with_kvp(1000, 1, OPENAPI_KVP), LOG, 1000, 1, "1")
    assert KVP not in record
    assert record["label_names"] == []


@pytest.mark.parametrize("kvp_info", [False, True])
def test_the_tap_s_schema_message_follows_the_setting(
    monkeypatch,
    requests_mock,
    fake,  # noqa: F811
    kvp_info,
):
    messages = run_tap(monkeypatch, config(kvp_info=kvp_info))
    schema = next(m for m in messages if m["type"] == "SCHEMA" and m["stream"] == "events")
    assert schema["schema"] == json.loads(json.dumps(events_schema(kvp_info=kvp_info)))
    records = event_records(messages)
    assert records
    # the fake sends no kvp_info: on, the column is there and null; off, it is not there
    assert all((KVP in r) is kvp_info and r.get(KVP) is None for r in records)
    starts = [r.url for r in requests_mock.request_history if "/query/logs" in r.url]
    assert starts
    assert all(("kvp_info=true" in r) is kvp_info for r in starts)
