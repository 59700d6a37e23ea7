"""Behaviours taken from Rapid7's published OpenAPI document (issue 20's emulator table):
invalid continuation ids, non-JSON bodies, `time_range`, label links."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.emulator.conftest import HOUR_MS, NOW_MS
from tests.emulator.plain_client import pull

MINUTE_MS = 60_000
WINDOW = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 10 * MINUTE_MS}
INVALID_CONTINUATION = {"errorCode": 100006, "message": "Invalid Continuation ID"}


def _rels(body: dict) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in body.get("links", [])}


# ----------------------------------------------------------------- 1. continuation ids
def test_a_continuation_id_never_issued_is_400_an_expired_one_404(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=2, link_ttl_seconds=20)
    session = session_for(emu)
    running = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW).json()
    self_href = _rels(running)["Self"]
    entry_id = running["id"]
    garbled = [
        entry_id[:-3] + ("0" if entry_id[-3] != "0" else "1") + entry_id[-2:],  # one digit off
        entry_id[: len(entry_id) // 2],  # truncated
        entry_id.replace(":", "-"),
        "not-a-running-query",
        "00000000-0000-0000-0000-000000000000:1:" + "0" * 40 + "::" + "0" * 40 + ":",
    ]
    for bad in garbled:
        for prefix in ("", "/log_search"):
            response = session.get(f"{emu.base_url}{prefix}/query/{bad}")
            assert response.status_code == 400, bad
            assert response.json() == INVALID_CONTINUATION
    assert session.get(self_href).status_code == 200, "the real link is unharmed"
    emu.update_options(fixed_now_ms=NOW_MS + 21_000)
    expired = session.get(self_href)
    assert expired.status_code == 404
    assert expired.json() == {"message": "HTTP 404 Not Found"}
    stats = emu.stats()
    assert stats["faults"]["expired_links"] == 1
    assert stats["requests"]["invalid_continuations"] == 10


def test_ids_of_another_emulator_are_invalid_here(emulator_factory, session_for):
    one = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=2)
    other = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=2)
    running = (
        session_for(one).get(f"{one.base_url}/query/logs/{one.log_ids[0]}", params=WINDOW).json()
    )
    foreign = session_for(other).get(f"{other.base_url}/query/{running['id']}")
    assert foreign.status_code == 400
    assert foreign.json() == INVALID_CONTINUATION


# ----------------------------------------------------------------- 2. non-JSON bodies
def test_post_without_a_json_body_is_415_malformed_json_400(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs"
    good = {"logs": [emu.log_ids[0]], "leql": {"statement": "", "during": WINDOW}}
    not_json = [
        {"data": b"logs=x&from=1"},  # no Content-Type at all
        {"data": b"logs=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"data": b"{}", "headers": {"Content-Type": "text/plain"}},
        {"data": {"logs": "x"}},  # requests sends it as a form
    ]
    for kwargs in not_json:
        response = session.post(url, **kwargs)
        assert response.status_code == 415, kwargs
        assert response.json() == {"errorCode": 100007, "message": "Data not specified as JSON"}
    malformed = session.post(
        url, data=b"{not json", headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["errorCode"] == 100005
    assert session.post(url, json=good).status_code == 200
    vendor = session.post(
        url, data=b'{"logs": []}', headers={"Content-Type": "application/vnd.api+json"}
    )
    assert vendor.status_code == 400, "a +json type is JSON; the body itself is invalid"


def test_get_with_a_non_json_body_is_415(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    response = session.get(url, params=WINDOW, data=b"hello")
    assert response.status_code == 415
    assert response.json()["message"] == "Non-JSON request body was given"
    assert session.get(url, params=WINDOW, data=b"{}").status_code == 200
    assert session.get(url, params=WINDOW).status_code == 200


# ----------------------------------------------------------------- 3. time_range
DAY_MS = 86_400_000
MIDNIGHT = NOW_MS - NOW_MS % DAY_MS  # NOW_MS is 2024-05-01T12:00:00Z


@pytest.mark.parametrize(
    ("time_range", "from_ms", "to_ms"),
    [
        ("today", MIDNIGHT, NOW_MS),
        ("Yesterday", MIDNIGHT - DAY_MS, MIDNIGHT),
        ("last 5 min", NOW_MS - 5 * MINUTE_MS, NOW_MS),
        ("last 5 mins", NOW_MS - 5 * MINUTE_MS, NOW_MS),
        ("last 1 minute", NOW_MS - MINUTE_MS, NOW_MS),
        ("Last 20 Minutes", NOW_MS - 20 * MINUTE_MS, NOW_MS),
        ("last 1 hr", NOW_MS - HOUR_MS, NOW_MS),
        ("last 2 hrs", NOW_MS - 2 * HOUR_MS, NOW_MS),
        ("LAST 3 HOURS", NOW_MS - 3 * HOUR_MS, NOW_MS),
        ("last 1 day", NOW_MS - DAY_MS, NOW_MS),
        ("last 2 weeks", NOW_MS - 14 * DAY_MS, NOW_MS),
        ("last 1 month", NOW_MS - 30 * DAY_MS, NOW_MS),  # April has 30 days
        ("last 3 months", NOW_MS - (29 + 31 + 30) * DAY_MS, NOW_MS),  # to 2024-02-01
        ("last 1 year", NOW_MS - 366 * DAY_MS, NOW_MS),  # 2023-05-01: 2024 is a leap year
    ],
)
def test_time_range_forms_resolve_and_are_echoed(
    emulator_factory, session_for, time_range, from_ms, to_ms
):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1, retention_days=None)
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    started = session.get(url, params={"time_range": time_range, "per_page": 1})
    assert started.status_code == 202
    during = {"from": from_ms, "to": to_ms, "time_range": time_range}
    assert started.json()["leql"]["during"] == during
    self_href = _rels(started.json())["Self"]
    assert self_href.endswith("?" + urlencode({"time_range": time_range}))
    page = session.get(self_href).json()
    assert page["leql"]["during"] == during, "the Self link carries time_range back"
    next_href = _rels(page)["Next"]
    assert "time_range" not in next_href, "Next pages by absolute from/to"


def test_time_range_in_a_post_body_is_echoed_and_a_poll_echoes_only_what_it_is_sent(
    emulator_factory, session_for
):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1)
    session = session_for(emu)
    body = {"logs": [emu.log_ids[0]], "leql": {"during": {"time_range": "last 1 hour"}}}
    started = session.post(f"{emu.base_url}/query/logs", json=body).json()
    during = {"from": NOW_MS - HOUR_MS, "to": NOW_MS, "time_range": "last 1 hour"}
    assert started["leql"]["during"] == during
    bare = f"{emu.base_url}/query/{started['id']}"
    assert session.get(bare).json()["leql"]["during"] == {"from": NOW_MS - HOUR_MS, "to": NOW_MS}


@pytest.mark.parametrize(
    "time_range",
    [
        "last minute",
        "last hour",
        "last 0 days",
        "last -1 days",
        "last 2 fortnights",
        "next week",
        "last 1.5 hours",
        "",
        "last 5 secs",
    ],
)
def test_time_range_outside_rapid7s_grammar_is_400(emulator_factory, session_for, time_range):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    response = session_for(emu).get(
        f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params={"time_range": time_range}
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == 100001


def test_time_range_with_from_and_to_is_400(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    response = session_for(emu).get(
        f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params={**WINDOW, "time_range": "today"}
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == 100001


# ----------------------------------------------------------------- 4. labels
@pytest.mark.parametrize("lowercase_rels", [False, True])
def test_event_labels_link_to_their_management_label(emulator_factory, session_for, lowercase_rels):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, lowercase_rels=lowercase_rels)
    session = session_for(emu)
    self_rel = "self" if lowercase_rels else "Self"
    for prefix in ("", "/log_search"):
        base = emu.base_url + prefix
        page = session.get(
            f"{base}/query/logs/{':'.join(emu.log_ids)}", params={**WINDOW, "per_page": 500}
        ).json()
        labelled = [e for e in page["events"] if e["labels"]]
        assert labelled, "about 5% of events carry a label"
        assert all(e["labels"] == [] for e in page["events"] if e not in labelled)
        for event in labelled:
            (label,) = event["labels"]
            assert set(label) == {"id", "links"}
            assert label["links"] == [
                {"rel": self_rel, "href": f"{base}/management/labels/{label['id']}"}
            ]
        label_href = next(
            e["labels"][0]["links"][0]["href"]
            for e in labelled
            if e["labels"][0]["id"] == "00000000-0000-0000-0000-000000000006"
        )
        answer = session.get(label_href)
        assert answer.status_code == 200
        assert answer.json() == {
            "label": {
                "id": "00000000-0000-0000-0000-000000000006",
                "sn": 6,
                "name": "Out of order entry",
                "color": "ff0000",
                "reserved": True,
            }
        }


def test_unknown_label_is_rapid7s_404(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    answer = session_for(emu).get(
        f"{emu.base_url}/management/labels/00000000-0000-0000-0000-000000000099"
    )
    assert answer.status_code == 404
    assert answer.json() == {"code": 404, "message": "HTTP 404 Not Found"}


# ----------------------------------------------------------------- label filters
LABEL_ID = "00000000-0000-0000-0000-000000000006"


@pytest.mark.parametrize(
    "params",
    [
        {"label": LABEL_ID},
        {"labels": f"00000000-0000-0000-0000-000000000007:{LABEL_ID}"},
        {"labels": LABEL_ID, "label": "00000000-0000-0000-0000-000000000007"},  # labels wins
    ],
)
def test_label_filters_keep_only_labelled_entries_across_pages(emulator_factory, params):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    path = f"/query/logs/{':'.join(emu.log_ids)}"
    window = {"from": NOW_MS - HOUR_MS, "to": NOW_MS}
    everything = pull(emu.base_url, emu.api_key, path, {**window, "per_page": 500}).events
    expected = [
        e["sequence_number_str"] for e in everything if LABEL_ID in {x["id"] for x in e["labels"]}
    ]
    assert expected
    assert len(expected) < sum(1 for e in everything if e["labels"]), "other labels exist too"
    filtered = pull(emu.base_url, emu.api_key, path, {**window, **params, "per_page": 7})
    assert [e["sequence_number_str"] for e in filtered.events] == expected
    assert filtered.pages > 1, "Next links keep the filter"


def test_label_filter_without_matches_and_on_statistics(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    none = session.get(url, params={**WINDOW, "label": "00000000-0000-0000-0000-000000000007"})
    assert none.json()["events"] == []
    count = session.get(url, params={**WINDOW, "label": LABEL_ID, "query": "calculate(count)"})
    assert count.json()["statistics"]["count"] == len(
        emu.truth(WINDOW["from"], WINDOW["to"], emu.log_ids[0])
    ), "Rapid7: label filters only work with non-statistical queries"
