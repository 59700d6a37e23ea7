"""Logs by log set: resolved each run, added to log_ids, changes logged, state kept per log."""

from __future__ import annotations

import logging

import pytest
from singer_sdk.exceptions import ConfigValidationError

from plugin_io.log_events import parse_fields
from tap_rapid7.log_selection import MAX_SHOWN, resolve_logsets, select_logs, state_log_ids
from tap_rapid7.logsearch import InvalidPageError
from tap_rapid7.settings import TapSettings
from tests.tap.fake_api import LABELS
from tests.tap.test_tap_state import config, event_records, fake, partitions, run_tap  # noqa: F401

LOGSETS = [
    {"id": "set-fw", "name": "Firewall", "logs_info": [{"id": "log-1"}, {"id": "log-2"}]},
    {"id": "set-ad", "name": "Active Directory", "logs_info": [{"id": "log-2"}, {"id": "log-3"}]},
    {"id": "set-empty", "name": "Endpoint Agents", "logs_info": []},
]


class ListingClient:
    """The two listings ``select_logs`` may read, counted."""

    def __init__(self, logsets=LOGSETS, logs=("log-1", "log-2", "log-3", "log-4")):
        self.logsets, self.logs = logsets, list(logs)
        self.calls: list[str] = []

    def list_logsets(self):
        self.calls.append("logsets")
        return self.logsets

    def list_log_ids(self):
        self.calls.append("logs")
        return self.logs


def settings(**values) -> TapSettings:
    return TapSettings.from_config({"api_key": "k", **values})


def resolved_line(caplog) -> dict:
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("logsearch_logsets_")
    ]
    assert len(lines) == 1
    return parse_fields(lines[0].split(" ", 1)[1])


def test_names_and_ids_add_to_log_ids_in_order_without_repeats(caplog):
    client = ListingClient()
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        logs = select_logs(
            settings(log_ids=["log-9", "log-2"], logsets=["Firewall", "set-ad", "Firewall"]),
            client,
        )
    assert logs == ["log-9", "log-2", "log-1", "log-3"]
    assert client.calls == ["logsets"]  # /management/logs is not needed
    line = resolved_line(caplog)
    assert line["logsets"] == ["Firewall", "Active Directory"]
    assert line["logset_logs"] == [2, 2]
    assert (line["logs"], line["added_count"], line["removed_count"]) == (4, 4, 0)


def test_without_log_sets_the_rule_is_unchanged():
    client = ListingClient()
    assert select_logs(settings(log_ids=["b", "a", "b"]), client) == ["b", "a"]
    assert client.calls == []
    assert select_logs(settings(), client) == ["log-1", "log-2", "log-3", "log-4"]
    assert client.calls == ["logs"]


def test_membership_changes_are_relative_to_the_incoming_state(caplog):
    state = {
        "bookmarks": {
            "events": {
                "partitions": [
                    {"context": {"log_id": "log-1"}, "next_from_millis": 1},
                    {"context": {"log_id": "log-gone"}, "next_from_millis": 1},
                ]
            }
        }
    }
    assert state_log_ids(state) == ["log-1", "log-gone"]
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        select_logs(settings(logsets=["Firewall"]), ListingClient(), state_log_ids(state))
    line = resolved_line(caplog)
    assert (line["added"], line["removed"]) == (["log-2"], ["log-gone"])
    assert (line["added_count"], line["removed_count"]) == (1, 1)


def test_an_unknown_name_is_one_line_naming_it_and_the_known_names():
    with pytest.raises(ConfigValidationError) as caught:
        resolve_logsets(["Firewall", "Fire wall"], LOGSETS)
    message = str(caught.value)
    assert "\n" not in message
    assert "setting logsets" in message
    assert "'Fire wall'" in message
    assert "'Active Directory', 'Endpoint Agents', 'Firewall'" in message


def test_the_known_names_listed_are_bounded():
    many = [{"id": f"id-{i:03d}", "name": f"set {i:03d}", "logs_info": []} for i in range(50)]
    with pytest.raises(ConfigValidationError, match=f"and {50 - MAX_SHOWN} more$"):
        resolve_logsets(["nope"], many)


def test_names_match_exactly_and_a_case_slip_is_pointed_out():
    with pytest.raises(ConfigValidationError, match="did you mean 'Firewall'"):
        resolve_logsets(["firewall"], LOGSETS)


def test_a_name_two_log_sets_share_is_refused_naming_both_ids():
    twins = [*LOGSETS, {"id": "set-fw-2", "name": "Firewall", "logs_info": []}]
    with pytest.raises(ConfigValidationError, match="ids set-fw, set-fw-2"):
        resolve_logsets(["Firewall"], twins)
    assert resolve_logsets(["set-fw-2"], twins)[0].log_ids == ()  # the id says which


def test_an_id_wins_over_a_name_spelled_like_it():
    sets = [
        {"id": "A", "name": "B", "logs_info": [{"id": "from-id-A"}]},
        {"id": "C", "name": "A", "logs_info": [{"id": "from-name-A"}]},
    ]
    assert resolve_logsets(["A"], sets)[0].log_ids == ("from-id-A",)


def test_an_empty_log_set_reads_nothing_and_warns(caplog):
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        assert select_logs(settings(logsets=["Endpoint Agents"]), ListingClient()) == []
    assert any(r.getMessage().startswith("logsearch_logset_empty ") for r in caplog.records)


def test_a_log_without_an_id_in_a_log_set_is_an_error_naming_the_field():
    broken = [{"id": "s", "name": "S", "logs_info": [{"name": "no id"}]}]
    with pytest.raises(InvalidPageError, match=r"logsets\[0\]\.logs_info\[0\]\.id"):
        resolve_logsets(["S"], broken)


def test_a_run_by_log_set_name_keeps_state_per_log(monkeypatch, fake):  # noqa: F811
    messages = run_tap(monkeypatch, config(log_ids=[], logsets=["all"]))
    records = event_records(messages)
    assert {r["log_id"] for r in records} == {"log-a", "log-b"}
    assert len(records) == len(fake.truth("log-a", *WINDOW)) + len(fake.truth("log-b", *WINDOW))
    state = next(m["value"] for m in reversed(messages) if m["type"] == "STATE")
    assert set(partitions(state)) == {"log-a", "log-b"}
    # the labels stream comes from the same API, with the API's field names
    assert event_records(messages, "labels") == LABELS


WINDOW = (1_704_067_200_000, 1_704_067_230_000)  # test_tap_state's start_date..end_date


def test_an_unknown_log_set_fails_the_run_before_any_query(monkeypatch, fake):  # noqa: F811
    with pytest.raises(ConfigValidationError, match="'Firewall'"):
        run_tap(monkeypatch, config(log_ids=[], logsets=["Firewall"]))
    assert fake.starts == []
