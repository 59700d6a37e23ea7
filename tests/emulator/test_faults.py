"""Fault injection options, one by one (the budgets and their 429s: test_budgets.py)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from tests.emulator.conftest import HOUR_MS, NOW_MS
from tests.emulator.plain_client import pull

MINUTE_MS = 60_000
WINDOW = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 10 * MINUTE_MS}


def test_force_429_on_nth_request(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, force_429_on_request=(2, 4))
    session = session_for(emu)
    statuses = [session.get(f"{emu.base_url}/management/logs").status_code for _ in range(5)]
    assert statuses == [200, 429, 200, 429, 200]
    emu.update_options(force_429_on_request=6)
    response = session.get(f"{emu.base_url}/management/logs")
    assert response.status_code == 429
    # like a spent budget: NOW_MS starts a 900 s window, so the family resets in 900 s
    assert response.headers["Retry-After"] == response.headers["X-RateLimit-Reset"] == "900"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["Content-Type"] == "text/plain"
    assert response.text == "API rate limit exceeded"
    assert emu.stats()["faults"]["forced_429"] == 3
    assert emu.stats()["faults"]["rate_limited"] == 0


def _statuses(emu, n: int) -> list[int | str]:
    session = requests.Session()
    session.headers["X-Api-Key"] = emu.api_key
    out: list[int | str] = []
    for _ in range(n):
        try:
            out.append(session.get(f"{emu.base_url}/management/logs", timeout=10).status_code)
        except requests.ConnectionError:
            out.append("dropped")
    return out


def test_error_rate_answers_random_5xx(emulator_factory):
    assert set(_statuses(emulator_factory(error_rate=1.0), 30)) == {500, 502, 503}
    assert set(_statuses(emulator_factory(error_rate=0.0), 10)) == {200}
    half = Counter(_statuses(emulator_factory(error_rate=0.5, fault_seed=1), 60))
    assert 10 < half[200] < 50


def test_drop_rate_closes_connections_without_answer(emulator_factory):
    emu = emulator_factory(drop_rate=1.0)
    assert set(_statuses(emu, 5)) == {"dropped"}
    assert emu.stats()["faults"]["dropped"] == 5
    assert emu.stats()["status_counts"] == {"0": 5}


def test_fault_seed_makes_faults_deterministic(emulator_factory):
    options = {"error_rate": 0.3, "drop_rate": 0.2}
    a = _statuses(emulator_factory(fault_seed=42, **options), 40)
    b = _statuses(emulator_factory(fault_seed=42, **options), 40)
    c = _statuses(emulator_factory(fault_seed=43, **options), 40)
    assert a == b
    assert a != c
    assert "dropped" in a
    assert any(isinstance(s, int) and s >= 500 for s in a)


@pytest.mark.parametrize(
    ("polls_before_ready", "next_is_async"), [(1, True), (0, True), (2, False)]
)
def test_duplicate_next_repeats_a_followed_href_once(
    emulator_factory, polls_before_ready, next_is_async
):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        polls_before_ready=polls_before_ready,
        next_is_async=next_is_async,
        duplicate_next=True,
    )
    log_id = emu.log_ids[0]
    result = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}", {**WINDOW, "per_page": 100})
    assert result.repeated_next == 1
    assert len(result.next_hrefs) == len(set(result.next_hrefs)) + 1
    truth = emu.truth(WINDOW["from"], WINDOW["to"], log_id)
    assert len(result.keys) == len(truth) + 100, "the repeated page was served twice"
    assert list(dict.fromkeys(result.keys)) == truth
    assert emu.stats()["faults"]["duplicate_next"] == 1
    again = pull(emu.base_url, emu.api_key, f"/query/logs/{log_id}", {**WINDOW, "per_page": 100})
    assert again.repeated_next == 0, "only once"


def test_request_latency_adds_delay(emulator_factory, session_for):
    emu = emulator_factory(request_latency_ms=150)
    session = session_for(emu)
    started = time.perf_counter()
    session.get(f"{emu.base_url}/management/logs")
    assert time.perf_counter() - started >= 0.15


@pytest.mark.parametrize("per_page", [1, 500])
def test_plain_client_gets_truth_over_logsets_with_all_faults(emulator_factory, per_page):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        burst_probability=0.5,
        polls_before_ready=1,
        lowercase_rels=True,
        error_rate=0.1,
        drop_rate=0.05,
        fault_seed=9,
        force_429_on_request=(1, 3),
    )
    span = 40_000 if per_page == 1 else 15 * MINUTE_MS
    window = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + span, "per_page": per_page}
    keys = []
    for logset in emu.logsets:
        keys += pull(
            emu.base_url,
            emu.api_key,
            f"/log_search/query/logsets/{logset['id']}",
            window,
            max_polls=100_000,
        ).keys
    truth = emu.truth(window["from"], window["to"])
    assert Counter(keys) == Counter(truth)


def test_changing_fault_seed_at_runtime_restarts_the_dice(emulator_factory):
    options = {"error_rate": 0.5, "fault_seed": 5}
    fresh = _statuses(emulator_factory(**options), 20)
    emu = emulator_factory(error_rate=0.5, fault_seed=6)
    _statuses(emu, 7)
    emu.update_options(fault_seed=5)
    assert _statuses(emu, 20) == fresh


def _page_shapes(emu, n: int) -> list[str]:
    """Start `n` immediate queries (retrying 5xx/drops) and name what each 200 carried."""
    session = requests.Session()
    session.headers["X-Api-Key"] = emu.api_key
    shapes: list[str] = []
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    while len(shapes) < n:
        try:
            response = session.get(url, params={**WINDOW, "per_page": 3}, timeout=10)
        except requests.ConnectionError:
            continue
        if response.status_code != 200:
            continue
        body = response.json()
        shapes.append(
            "page"
            if isinstance(body.get("events"), list)
            else ",".join(sorted(body)) + ":" + repr(body.get("events"))
        )
    session.close()
    return shapes


def test_non_page_dice_are_seeded_and_independent_of_request_faults(emulator_factory):
    options = {"fixed_now_ms": NOW_MS, "polls_before_ready": 0, "non_page_rate": 0.3}
    a = _page_shapes(emulator_factory(fault_seed=8, **options), 60)
    b = _page_shapes(emulator_factory(fault_seed=8, error_rate=0.3, drop_rate=0.1, **options), 60)
    c = _page_shapes(emulator_factory(fault_seed=9, **options), 60)
    assert a == b, "request faults do not move the non-page dice"
    assert a != c
    assert 5 < sum(s != "page" for s in a) < 35
    assert len(set(a)) == 5, "a page and all four non-page bodies"
