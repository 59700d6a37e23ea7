"""Query-semantics options, one by one: each test fails if its knob did nothing."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from logsearch_emulator import EmulatorOptions
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
    response = session_for(emu).get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW)
    assert response.status_code == 200
    assert len(response.json()["events"]) == 50


def test_ready_after_seconds_follows_the_clock(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, ready_after_seconds=30)
    session = session_for(emu)
    body = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW).json()
    for _ in range(3):
        body = session.get(_rels(body)["Self"]).json()
        assert "progress" in body
    emu.update_options(fixed_now_ms=NOW_MS + 15_000)  # polled within the 20 s link TTL
    body = session.get(_rels(body)["Self"]).json()
    assert "progress" in body
    emu.update_options(fixed_now_ms=NOW_MS + 30_000)
    body = session.get(_rels(body)["Self"]).json()
    assert "progress" not in body
    assert body["events"]


@pytest.mark.parametrize("next_is_async", [True, False])
def test_next_is_async(emulator_factory, session_for, next_is_async):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1, next_is_async=next_is_async)
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
    emu = emulator_factory(
        fixed_now_ms=NOW_MS, polls_before_ready=0, default_per_page=20, max_per_page=100
    )
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
        emu.truth(WINDOW["from"], WINDOW["to"], emu.log_ids[0])
    )


def test_link_ttl_expires_self_links_but_not_next_links(emulator_factory, session_for):
    """Polling links expire; a Next link is a new query, so it cannot expire."""
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1, link_ttl_seconds=60)
    session = session_for(emu)
    running = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW).json()
    page = session.get(_rels(running)["Self"]).json()
    next_href = _rels(page)["Next"]
    emu.update_options(fixed_now_ms=NOW_MS + 61_000)
    expired = session.get(_rels(running)["Self"])
    assert expired.status_code == 404
    assert expired.json() == {"message": "HTTP 404 Not Found"}
    assert emu.stats()["faults"]["expired_links"] == 1
    restarted = session.get(next_href)
    assert restarted.status_code == 202
    later = session.get(_rels(restarted.json())["Self"]).json()
    assert later["events"][0]["sequence_number_str"] != page["events"][0]["sequence_number_str"]
    assert [e["timestamp"] for e in later["events"]] >= [e["timestamp"] for e in page["events"]]


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
    result = pull(
        emu.base_url, emu.api_key, f"/query/logs/{log_id}", {"from": WINDOW["from"], "to": edge}
    )
    served = {key[2] for key in result.keys}
    if to_inclusive:
        assert at_edge <= served
    else:
        assert served.isdisjoint(at_edge)
    assert {k[2] for k in emu.truth(WINDOW["from"], edge, log_id)}.isdisjoint(at_edge), (
        "ground truth is always half-open"
    )


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
    assert emu.truth(window["from"], window["to"], log_id) == late_truth, (
        "after the full lag every entry is visible"
    )


def test_fixed_now_hides_the_future(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    log_id = emu.log_ids[0]
    result = pull(
        emu.base_url,
        emu.api_key,
        f"/query/logs/{log_id}",
        {"from": NOW_MS - MINUTE_MS, "to": NOW_MS + HOUR_MS},
    )
    assert result.events
    assert max(e["timestamp"] for e in result.events) <= NOW_MS
    emu.update_options(fixed_now_ms=NOW_MS + HOUR_MS)
    later = pull(
        emu.base_url,
        emu.api_key,
        f"/query/logs/{log_id}",
        {"from": NOW_MS - MINUTE_MS, "to": NOW_MS + HOUR_MS},
    )
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


@pytest.mark.parametrize("from_inclusive", [True, False])
def test_from_inclusive(emulator_factory, from_inclusive):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        polls_before_ready=0,
        burst_probability=1.0,
        from_inclusive=from_inclusive,
    )
    log_id = emu.log_ids[0]
    events = emu.events(log_id, WINDOW["from"], WINDOW["to"])
    edge = next(
        e["timestamp"] for i, e in enumerate(events[1:]) if e["timestamp"] == events[i]["timestamp"]
    )
    at_edge = {(log_id, edge, e["sequence_number_str"]) for e in events if e["timestamp"] == edge}
    assert len(at_edge) >= 2
    result = pull(
        emu.base_url,
        emu.api_key,
        f"/query/logs/{log_id}",
        {"from": edge, "to": WINDOW["to"], "per_page": 500},
    )
    truth = emu.truth(edge, WINDOW["to"], log_id)
    assert at_edge <= set(truth), "ground truth is always half-open: `from` included"
    if from_inclusive:
        assert result.keys == truth
    else:
        assert result.keys == [k for k in truth if k not in at_edge]
        assert all(k[1] > edge for k in result.keys)


@pytest.mark.parametrize(
    ("from_inclusive", "to_inclusive"), [(True, False), (False, False), (True, True), (False, True)]
)
def test_calculate_count_follows_inclusivity_and_sequence_number(
    emulator_factory, session_for, from_inclusive, to_inclusive
):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        polls_before_ready=0,
        burst_probability=1.0,
        from_inclusive=from_inclusive,
        to_inclusive=to_inclusive,
    )
    session = session_for(emu)
    log_id = emu.log_ids[1]
    events = emu.events(log_id, WINDOW["from"], WINDOW["to"] + 1)
    stamps = Counter(e["timestamp"] for e in events)
    crowded = sorted(ts for ts, n in stamps.items() if n >= 3)
    from_ms, to_ms = crowded[0], crowded[-1]
    url = f"{emu.base_url}/query/logs/{log_id}"
    window = {"from": from_ms, "to": to_ms}
    paged = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}", {**window, "per_page": 500})
    counted = session.get(url, params={**window, "query": "calculate(count)"}).json()
    assert counted["statistics"]["count"] == len(paged.keys)
    expected = (
        len(emu.truth(from_ms, to_ms + 1, log_id))
        - (0 if to_inclusive else stamps[to_ms])
        - (0 if from_inclusive else stamps[from_ms])
    )
    assert len(paged.keys) == expected
    middle = next(e for e in events if e["timestamp"] == from_ms)  # the first of its ms
    seq = int(middle["sequence_number_str"])
    with_seq = {**window, "sequence_number": seq}
    rest = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}", {**with_seq, "per_page": 500})
    counted = session.get(url, params={**with_seq, "query": "calculate(count)"}).json()
    assert (
        counted["statistics"]["count"]
        == len(rest.keys)
        == expected - (1 if from_inclusive else 1 - stamps[from_ms])
    )


def _beyond(response) -> bool:
    return response.headers.get("x-beyond-retention") == "true"


def test_retention_hides_old_entries_and_flags_queries_beyond_it(emulator_factory, session_for):
    assert EmulatorOptions().retention_days == 396
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1, retention_days=1)
    session = session_for(emu)
    log_id = emu.log_ids[0]
    horizon = NOW_MS - 86_400_000
    window = {"from": horizon - 10 * MINUTE_MS, "to": horizon + 10 * MINUTE_MS}
    truth = emu.truth(window["from"], window["to"], log_id)
    assert truth
    assert min(k[1] for k in truth) >= horizon, "ground truth drops what retention dropped"
    assert emu.truth(window["from"], horizon, log_id) == []
    url = f"{emu.base_url}/query/logs/{log_id}"
    started = session.get(url, params={**window, "per_page": 500})
    assert started.status_code == 202
    assert _beyond(started)
    assert "retention" in started.headers["x-beyond-retention-message"]
    page = session.get(_rels(started.json())["Self"])
    assert _beyond(page)
    assert [
        (e["log_id"], e["timestamp"], e["sequence_number_str"]) for e in page.json()["events"]
    ] == truth[:500]
    pulled = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}", window)
    assert pulled.keys == truth
    assert pulled.beyond_retention[0]
    assert not any(pulled.beyond_retention[1:]), "Next links start inside the retention"
    stats = session.get(url, params={**window, "query": "calculate(count)"})
    stats = session.get(_rels(stats.json())["Self"])
    assert _beyond(stats)
    assert stats.json()["statistics"]["count"] == len(truth)
    inside = session.get(url, params={"from": horizon + MINUTE_MS, "to": window["to"]})
    assert not _beyond(inside)
    assert "x-beyond-retention-message" not in inside.headers
    pending = session.get(url, params=window)
    assert _beyond(pending)
    emu.update_options(retention_days=None)
    still = session.get(_rels(pending.json())["Self"])
    assert _beyond(still), "decided when the query started"
    assert still.headers["x-beyond-retention-message"]
    everything = session.get(url, params=window)
    assert not _beyond(everything)
    assert len(emu.truth(window["from"], window["to"], log_id)) > len(truth)


def test_retention_moves_with_the_clock(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, retention_days=396)
    old = (NOW_MS - 395 * 86_400_000, NOW_MS - 395 * 86_400_000 + MINUTE_MS)
    keys = emu.truth(*old)
    assert keys
    emu.update_options(fixed_now_ms=NOW_MS + 2 * 86_400_000)
    assert emu.truth(*old) == []
    assert (
        pull(
            emu.base_url,
            emu.api_key,
            f"/query/logs/{emu.log_ids[0]}",
            {"from": old[0], "to": old[1]},
        ).keys
        == []
    )


@pytest.mark.parametrize("polls_before_ready", [0, 1])
def test_non_page_rate_answers_bodies_without_a_page(
    emulator_factory, session_for, polls_before_ready
):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS, polls_before_ready=polls_before_ready, non_page_rate=1.0
    )
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    bodies = []
    for _ in range(40):
        response = session.get(url, params=WINDOW)
        if polls_before_ready:
            self_href = _rels(response.json())["Self"]
            response = session.get(self_href)
        assert response.status_code == 200
        bodies.append(response.json())
        if polls_before_ready:  # the same Self link again: the entry stayed ready
            page = session.get(self_href)
            assert len(page.json()["events"]) == 50
            assert "Next" in _rels(page.json())
    shapes = Counter(json.dumps(sorted(b)) + json.dumps(b.get("events")) for b in bodies)
    assert set(shapes) == {"[]null", '["events"]null', '["leql", "logs"]null', '["events"]{}'}
    assert emu.stats()["faults"]["non_page_bodies"] == 40
    emu.update_options(non_page_rate=0.0)
    result = pull(emu.base_url, emu.api_key, f"/query/logs/{emu.log_ids[0]}", WINDOW)
    assert result.non_pages == 0
    assert result.keys == emu.truth(WINDOW["from"], WINDOW["to"], emu.log_ids[0])


def test_non_page_rate_spares_statistics(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, non_page_rate=1.0)
    body = (
        session_for(emu)
        .get(
            f"{emu.base_url}/query/logs/{emu.log_ids[0]}",
            params={**WINDOW, "query": "calculate(count)"},
        )
        .json()
    )
    assert body["statistics"]["count"] > 0
    assert emu.stats()["faults"]["non_page_bodies"] == 0
