"""Query-semantics options, one by one: each test fails if its knob did nothing."""

from __future__ import annotations

import pytest

from tests.emulator.conftest import HOUR_MS, NOW_MS
from tests.emulator.plain_client import pull

MINUTE_MS = 60_000
WINDOW = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 10 * MINUTE_MS}


def _rels(body: dict) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in body.get("links", [])}


def test_polls_before_ready_counts_polls_and_progress_grows(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=3)
    session = session_for(emu)
    first = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW)
    assert first.status_code == 202
    body = first.json()
    assert body["progress"] == 0
    assert body["events"] == []
    assert ":" in body["id"]
    progress = [body["progress"]]
    for _ in range(2):
        response = session.get(_rels(body)["Self"])
        assert response.status_code == 200, "polls answer 200 while running"
        body = response.json()
        progress.append(body["progress"])
    assert progress == sorted(progress)
    assert progress[-1] < 100
    done = session.get(_rels(body)["Self"]).json()
    assert "progress" not in done
    assert "Self" not in _rels(done)
    assert len(done["events"]) == 50
    again = session.get(_rels(body)["Self"]).json()
    assert again == done, "a finished query answers the same page again (safe retries)"


def test_polls_before_ready_zero_answers_200_with_the_page(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    response = session_for(emu).get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}",
                                    params=WINDOW)
    assert response.status_code == 200
    assert len(response.json()["events"]) == 50


def test_ready_after_seconds_follows_the_clock(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, ready_after_seconds=30)
    session = session_for(emu)
    body = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW).json()
    for _ in range(3):
        body = session.get(_rels(body)["Self"]).json()
        assert "progress" in body
    emu.update_options(fixed_now_ms=NOW_MS + 30_000)
    body = session.get(_rels(body)["Self"]).json()
    assert "progress" not in body
    assert body["events"]


@pytest.mark.parametrize("next_is_async", [True, False])
def test_next_is_async(emulator_factory, session_for, next_is_async):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1,
                           next_is_async=next_is_async)
    session = session_for(emu)
    body = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW).json()
    body = session.get(_rels(body)["Self"]).json()
    response = session.get(_rels(body)["Next"])
    if next_is_async:
        assert response.status_code == 202
        assert response.json()["events"] == []
        assert "Self" in _rels(response.json())
    else:
        assert response.status_code == 200
        assert len(response.json()["events"]) == 50


def test_lowercase_rels(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1, lowercase_rels=True)
    session = session_for(emu)
    running = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW).json()
    assert set(_rels(running)) == {"self"}
    page = session.get(_rels(running)["self"]).json()
    assert set(_rels(page)) == {"next"}
    assert page["events"][0]["links"][0]["rel"] == "context"
    emu.update_options(lowercase_rels=False)
    page = session.get(_rels(running)["self"]).json()
    assert set(_rels(page)) == {"Next"}
    assert page["events"][0]["links"][0]["rel"] == "Context"


def test_default_per_page_and_max_per_page_clamp(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, default_per_page=20,
                           max_per_page=100)
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    assert len(session.get(url, params=WINDOW).json()["events"]) == 20
    assert len(session.get(url, params={**WINDOW, "per_page": 5000}).json()["events"]) == 100
    emu.update_options(per_page_over_max="reject")
    rejected = session.get(url, params={**WINDOW, "per_page": 101})
    assert rejected.status_code == 400
    assert rejected.json()["errorCode"] == 100004
    assert len(session.get(url, params={**WINDOW, "per_page": 100}).json()["events"]) == 100


def test_reject_per_page_on_stats(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    session = session_for(emu)
    params = {**WINDOW, "query": "calculate(count)", "per_page": 50}
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    rejected = session.get(url, params=params)
    assert rejected.status_code == 400
    assert rejected.json()["errorCode"] == 101009
    emu.update_options(reject_per_page_on_stats=False)
    accepted = session.get(url, params=params)
    assert accepted.status_code == 200
    assert accepted.json()["statistics"]["count"] == len(
        emu.truth(WINDOW["from"], WINDOW["to"], emu.log_ids[0]))


def test_link_ttl_expires_self_and_next_links(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1, link_ttl_seconds=60)
    session = session_for(emu)
    running = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW).json()
    page = session.get(_rels(running)["Self"]).json()
    next_href = _rels(page)["Next"]
    emu.update_options(fixed_now_ms=NOW_MS + 61_000)
    for href in (_rels(running)["Self"], next_href):
        expired = session.get(href)
        assert expired.status_code == 404
        assert expired.json() == {"message": "HTTP 404 Not Found"}
    assert emu.stats()["faults"]["expired_links"] == 2


def test_links_live_without_ttl(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1, link_ttl_seconds=None)
    session = session_for(emu)
    running = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW).json()
    emu.update_options(fixed_now_ms=NOW_MS + 10 * HOUR_MS)
    assert session.get(_rels(running)["Self"]).status_code == 200


@pytest.mark.parametrize("to_inclusive", [False, True])
def test_to_inclusive(emulator_factory, to_inclusive):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, to_inclusive=to_inclusive)
    log_id = emu.log_ids[0]
    events = emu.events(log_id, WINDOW["from"], WINDOW["to"])
    edge = events[len(events) // 2]["timestamp"]
    at_edge = {e["sequence_number_str"] for e in events if e["timestamp"] == edge}
    result = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}",
                  {"from": WINDOW["from"], "to": edge})
    served = {key[1] for key in result.keys}
    if to_inclusive:
        assert at_edge <= served
    else:
        assert served.isdisjoint(at_edge)
    assert {k[1] for k in emu.truth(WINDOW["from"], edge, log_id)}.isdisjoint(at_edge), \
        "ground truth is always half-open"


def test_late_arrival_hides_recent_events_and_truth_agrees(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, late_arrival_seconds=120)
    log_id = emu.log_ids[0]
    window = {"from": NOW_MS - 10 * MINUTE_MS, "to": NOW_MS}
    early = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}", window)
    early_truth = emu.truth(window["from"], window["to"], log_id)
    assert early.keys == early_truth
    emu.update_options(fixed_now_ms=NOW_MS + 120_000)
    late_truth = emu.truth(window["from"], window["to"], log_id)
    assert set(early_truth) < set(late_truth), "late entries appeared in the old window"
    late = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}", window)
    assert late.keys == late_truth
    emu.update_options(late_arrival_seconds=0)
    assert emu.truth(window["from"], window["to"], log_id) == late_truth, \
        "after the full lag every entry is visible"


def test_fixed_now_hides_the_future(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    log_id = emu.log_ids[0]
    result = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}",
                  {"from": NOW_MS - MINUTE_MS, "to": NOW_MS + HOUR_MS})
    assert result.events
    assert max(e["timestamp"] for e in result.events) <= NOW_MS
    emu.update_options(fixed_now_ms=NOW_MS + HOUR_MS)
    later = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}",
                 {"from": NOW_MS - MINUTE_MS, "to": NOW_MS + HOUR_MS})
    assert max(e["timestamp"] for e in later.events) > NOW_MS


def test_expired_continuations_are_pruned(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1, link_ttl_seconds=60)
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    for _ in range(3):
        session.get(url, params=WINDOW)
    assert emu.stats()["live_continuations"] == 3
    emu.update_options(fixed_now_ms=NOW_MS + 61_000)
    session.get(url, params=WINDOW)
    assert emu.stats()["live_continuations"] == 1
