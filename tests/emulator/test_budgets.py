"""Rapid7's published budget model: per key and family (query, poll, management), fixed windows
on the emulator clock, X-RateLimit-* on every API answer, text/plain 429s, sliding Self links.

Time only moves when a test moves it (`fixed_now_ms` + `update_options`). NOW_MS is a multiple
of 900 s (and so of 60, 30 and 6 s): a window starts exactly there.
"""

from __future__ import annotations

import re

import pytest
import requests

from logsearch_emulator import EmulatorOptions
from tests.emulator.conftest import HOUR_MS, NOW_MS

MINUTE_MS = 60_000
WINDOW = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 10 * MINUTE_MS}
NOT_FOUND = {"message": "HTTP 404 Not Found"}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def _rate(response: requests.Response) -> tuple[str, str, str]:
    """(Limit, Remaining, Reset) as sent."""
    return tuple(response.headers[name] for name in RATE_HEADERS)  # type: ignore[return-value]


def _self_href(response: requests.Response) -> str:
    return next(link["href"] for link in response.json()["links"] if link["rel"] == "Self")


def _assert_rate_limited(response: requests.Response, limit: str, reset: str) -> None:
    """Rapid7's 429: text/plain body, Remaining 0, Retry-After equal to Reset."""
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "text/plain"
    assert response.text == "API rate limit exceeded"
    assert _rate(response) == (limit, "0", reset)
    assert response.headers["Retry-After"] == reset


def _at(emu, offset_ms: int) -> None:
    emu.update_options(fixed_now_ms=NOW_MS + offset_ms)


def test_defaults_are_rapid7s_published_budgets():
    options = EmulatorOptions()
    assert options.budgets is True
    assert (options.query_budget, options.poll_budget, options.management_budget) == (
        1500,
        10000,
        1500,
    )
    assert options.budget_window_seconds == 900.0
    assert options.link_ttl_seconds == 20.0
    assert [options.budget_for(f) for f in ("query", "poll", "management")] == [1500, 10000, 1500]
    off = EmulatorOptions(budgets=False)
    assert [off.budget_for(f) for f in ("query", "poll", "management")] == [None, None, None]


def test_each_family_spends_only_its_own_budget(emulator_factory, session_for):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        polls_before_ready=50,
        query_budget=2,
        poll_budget=3,
        management_budget=2,
    )
    session = session_for(emu)
    start_url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    first = session.get(start_url, params=WINDOW)
    second = session.get(start_url, params=WINDOW)
    assert (first.status_code, second.status_code) == (202, 202)
    assert [_rate(first), _rate(second)] == [("2", "1", "900"), ("2", "0", "900")]
    _assert_rate_limited(session.get(start_url, params=WINDOW), "2", "900")

    # a spent query budget does not block polls of a running query
    polls = [session.get(_self_href(first)) for _ in range(3)]
    assert [p.status_code for p in polls] == [200, 200, 200]
    assert [_rate(p) for p in polls] == [("3", "2", "900"), ("3", "1", "900"), ("3", "0", "900")]
    _assert_rate_limited(session.get(_self_href(first)), "3", "900")

    # neither blocks management (on either prefix)
    logs = session.get(f"{emu.base_url}/management/logs")
    logsets = session.get(f"{emu.base_url}/log_search/management/logsets")
    assert (logs.status_code, logsets.status_code) == (200, 200)
    assert [_rate(logs), _rate(logsets)] == [("2", "1", "900"), ("2", "0", "900")]
    _assert_rate_limited(session.get(f"{emu.base_url}/management/logs"), "2", "900")

    # and spent poll and management budgets do not block a query the query budget allows
    emu.update_options(query_budget=3)
    third = session.get(start_url, params=WINDOW)
    assert third.status_code == 202
    assert _rate(third) == ("3", "0", "900")
    # nor a poll the poll budget allows, while query and management stay spent
    emu.update_options(poll_budget=4)
    assert session.get(_self_href(second)).status_code == 200
    _assert_rate_limited(session.get(start_url, params=WINDOW), "3", "900")


def test_every_query_start_costs_a_query_and_only_self_links_cost_polls(
    emulator_factory, session_for
):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS, polls_before_ready=0, query_budget=100, poll_budget=100
    )
    session = session_for(emu)
    log_id = emu.log_ids[0]
    logset = emu.logsets[0]
    page = session.get(f"{emu.base_url}/query/logs/{log_id}", params={**WINDOW, "per_page": 5})
    body = page.json()
    next_href = next(link["href"] for link in body["links"] if link["rel"] == "Next")
    answers = [
        page,
        session.get(next_href),  # Next: a new query
        session.get(body["events"][0]["links"][0]["href"]),  # Context
        session.post(
            f"{emu.base_url}/query/logs",
            json={"logs": [log_id], "leql": {"statement": "", "during": WINDOW}},
        ),
        session.get(f"{emu.base_url}/query/logsets/{logset['id']}", params=WINDOW),
        session.get(
            f"{emu.base_url}/log_search/query/logsets",
            params={**WINDOW, "logset_name": logset["name"]},
        ),
        session.get(f"{emu.base_url}/query/logs/not-a-log", params=WINDOW),  # 404, still a query
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 200, 404]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == [
        str(n) for n in range(99, 92, -1)
    ]
    poll = session.get(f"{emu.base_url}/query/not-a-running-query")
    assert poll.status_code == 400, "an id never issued: Invalid Continuation ID"
    assert _rate(poll) == ("100", "99", "900"), "an unknown Self link is still a poll"
    budgets = emu.stats()["budgets"]
    assert budgets["query"]["requests"] == 7
    assert budgets["poll"]["requests"] == 1
    assert budgets["management"] == {
        "requests": 0,
        "rate_limited": 0,
        "forced_429": 0,
        "min_remaining": None,
    }


@pytest.mark.parametrize(
    ("window_seconds", "offset_ms", "reset"),
    [
        (900, 0, "900"),
        (900, 1, "900"),  # 899.999 s: rounded up
        (900, 899_001, "1"),
        (900, 899_999, "1"),
        (60, 1, "60"),  # a minute: still whole seconds
        (60, 59_500, "1"),
        (30, 1, "29.999"),  # below a minute: milliseconds
        (6, 0, "6.000"),
        (6, 3_655, "2.345"),
        (6, 5_999, "0.001"),
    ],
)
def test_reset_is_whole_seconds_from_a_minute_up_else_milliseconds(
    emulator_factory, session_for, window_seconds, offset_ms, reset
):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS + offset_ms, budget_window_seconds=window_seconds, management_budget=1
    )
    session = session_for(emu)
    allowed = session.get(f"{emu.base_url}/management/logs")
    assert allowed.status_code == 200
    assert _rate(allowed) == ("1", "0", reset)
    assert "Retry-After" not in allowed.headers
    assert "X-RateLimit-Family" not in allowed.headers  # Rapid7 sends no such header
    _assert_rate_limited(session.get(f"{emu.base_url}/management/logs"), "1", reset)


def test_scaled_down_window_resets_on_the_emulator_clock(emulator_factory, session_for):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS + 1_000,
        budget_window_seconds=6,
        query_budget=60,
        link_ttl_seconds=1,
        polls_before_ready=0,
    )
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    params = {**WINDOW, "per_page": 1}
    answers = [session.get(url, params=params) for _ in range(60)]
    assert {a.status_code for a in answers} == {200}
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == [
        str(n) for n in range(59, -1, -1)
    ]
    assert {a.headers["X-RateLimit-Reset"] for a in answers} == {"5.000"}
    _assert_rate_limited(session.get(url, params=params), "60", "5.000")
    _at(emu, 5_999)  # the last millisecond of the window
    _assert_rate_limited(session.get(url, params=params), "60", "0.001")
    _at(emu, 6_000)  # the next window: the budget is whole again
    refilled = session.get(url, params=params)
    assert refilled.status_code == 200
    assert _rate(refilled) == ("60", "59", "6.000")
    assert emu.stats()["faults"]["rate_limited"] == 2


def test_forced_429_answers_like_a_spent_budget_and_spends_nothing(emulator_factory, session_for):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS + 100_000,
        polls_before_ready=5,
        poll_budget=10,
        force_429_on_request=2,
    )
    session = session_for(emu)
    started = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW)
    assert started.status_code == 202
    _assert_rate_limited(session.get(_self_href(started)), "10", "800")
    poll = session.get(_self_href(started))
    assert poll.status_code == 200
    assert _rate(poll) == ("10", "9", "800"), "the forced 429 consumed no poll"
    stats = emu.stats()
    assert stats["faults"]["forced_429"] == 1
    assert stats["faults"]["rate_limited"] == 0
    assert stats["budgets"]["poll"] == {
        "requests": 2,
        "rate_limited": 0,
        "forced_429": 1,
        "min_remaining": 0,
    }
    emu.update_options(budgets=False, force_429_on_request=4)
    _assert_rate_limited(session.get(_self_href(started)), "1000000", "800")


def test_forced_429_retry_after_sets_a_known_wait(emulator_factory, session_for):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS + 100_000, force_429_on_request=(1, 2), forced_429_retry_after=0.5
    )
    session = session_for(emu)
    _assert_rate_limited(session.get(f"{emu.base_url}/management/logs"), "1500", "0.5")
    emu.update_options(forced_429_retry_after=None)  # back to the family's window: 800 s
    _assert_rate_limited(session.get(f"{emu.base_url}/management/logs"), "1500", "800")


def test_self_links_slide_while_polled_and_expire_20_s_after_the_last_poll(
    emulator_factory, session_for
):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=100)
    assert emu.options.link_ttl_seconds == 20.0
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    polled = _self_href(session.get(url, params=WINDOW))
    never = _self_href(session.get(url, params=WINDOW))
    for step in range(1, 7):  # every 15 s for 90 s: far past 20 s after the start
        _at(emu, 15_000 * step)
        answer = session.get(polled)
        assert answer.status_code == 200
        assert answer.json()["progress"] == step
    assert session.get(never).status_code == 404, "the start is its only touch, 90 s ago"
    assert emu.stats()["faults"]["expired_links"] == 1

    _at(emu, 90_000 + 21_000)  # 21 s without a poll
    gone = session.get(polled)
    assert gone.status_code == 404
    assert gone.json() == NOT_FOUND
    assert emu.stats()["faults"]["expired_links"] == 2
    assert session.get(polled).status_code == 404
    assert emu.stats()["faults"]["expired_links"] == 2, "one link expires once"

    # exactly 20 s after the last touch is still in time; a millisecond later is not
    start = 200_000
    _at(emu, start)
    link = _self_href(session.get(url, params=WINDOW))
    _at(emu, start + 20_000)
    assert session.get(link).status_code == 200
    _at(emu, start + 40_001)
    assert session.get(link).status_code == 404
    assert emu.stats()["faults"]["expired_links"] == 3


def test_a_pruned_expired_link_still_counts_as_expired(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1)
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    old = _self_href(session.get(url, params=WINDOW))
    _at(emu, 21_000)
    session.get(url, params=WINDOW)  # starting a query prunes the expired one
    assert emu.stats()["live_continuations"] == 1
    answer = session.get(old)
    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND
    assert emu.stats()["faults"]["expired_links"] == 1


def test_a_rate_limited_poll_does_not_refresh_the_link(emulator_factory, session_for):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS, polls_before_ready=100, poll_budget=3, budget_window_seconds=30
    )
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    link_a = _self_href(session.get(url, params=WINDOW))
    link_b = _self_href(session.get(url, params=WINDOW))
    _at(emu, 14_000)
    assert session.get(link_a).status_code == 200  # A's last successful poll
    assert session.get(link_b).status_code == 200
    _at(emu, 16_000)
    assert session.get(link_b).status_code == 200  # the poll budget is spent
    _at(emu, 20_000)
    _assert_rate_limited(session.get(link_a), "3", "10.000")
    _at(emu, 31_000)  # a new window
    assert session.get(link_b).status_code == 200
    _at(emu, 35_000)  # 21 s after A's last successful poll, 15 s after its 429
    expired = session.get(link_a)
    assert expired.status_code == 404
    assert expired.json() == NOT_FOUND
    assert session.get(link_b).status_code == 200
    stats = emu.stats()
    assert stats["faults"]["expired_links"] == 1
    assert stats["budgets"]["poll"]["rate_limited"] == 1


def test_budgets_false_means_no_budget_but_headers_still_sent(emulator_factory, session_for):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        polls_before_ready=0,
        budgets=False,
        query_budget=1,
        management_budget=0,
    )
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    answers = [session.get(url, params=WINDOW) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [_rate(a) for a in answers] == [
        ("1000000", "999999", "900"),
        ("1000000", "999998", "900"),
        ("1000000", "999997", "900"),
    ]
    management = session.get(f"{emu.base_url}/management/logs")
    assert management.status_code == 200
    assert _rate(management) == ("1000000", "999999", "900")
    emu.update_options(budgets=True)  # the same window: the query budget is long spent
    _assert_rate_limited(session.get(url, params=WINDOW), "1", "900")
    _assert_rate_limited(session.get(f"{emu.base_url}/management/logs"), "0", "900")
    emu.update_options(query_budget=None)  # one family unlimited, the others not
    unlimited = session.get(url, params=WINDOW)
    assert unlimited.status_code == 200
    assert _rate(unlimited) == ("1000000", "999996", "900")
    _assert_rate_limited(session.get(f"{emu.base_url}/management/logs"), "0", "900")
    assert emu.stats()["faults"]["rate_limited"] == 3


def test_headers_on_every_api_answer_but_not_on_emulator_endpoints(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, management_budget=5)
    session = session_for(emu)
    logs_url = f"{emu.base_url}/management/logs"
    unauthorized = requests.get(logs_url, timeout=10)
    forbidden = session_for(emu, key=emu.options.forbidden_api_key).get(logs_url)
    assert (unauthorized.status_code, forbidden.status_code) == (401, 403)
    assert _rate(unauthorized) == _rate(forbidden) == ("5", "5", "900"), "they spend nothing"
    unknown = session.get(f"{logs_url}/not-a-log")
    assert unknown.status_code == 404
    assert _rate(unknown) == ("5", "4", "900")
    emu.update_options(error_rate=1.0)
    failed = session.get(logs_url)
    assert failed.status_code in (500, 502, 503)
    assert _rate(failed) == ("5", "4", "900"), "an injected 5xx spends nothing"
    emu.update_options(error_rate=0.0)
    bad = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}")  # no window: 400
    assert bad.status_code == 400
    assert _rate(bad) == ("1500", "1499", "900")
    assert _rate(session.get(logs_url)) == ("5", "3", "900")
    for path in ("/_emulator/stats", "/_emulator/truth?from=0&to=1", "/_emulator/nothing"):
        internal = requests.get(f"{emu.base_url}{path}", timeout=10)
        assert not any(name in internal.headers for name in RATE_HEADERS), path
        assert "Retry-After" not in internal.headers


def test_stats_count_requests_429s_and_lowest_remaining_per_family(emulator_factory, session_for):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        polls_before_ready=1,
        query_budget=1,
        poll_budget=5,
        management_budget=1,
        force_429_on_request=5,
    )
    empty = {"requests": 0, "rate_limited": 0, "forced_429": 0, "min_remaining": None}
    assert emu.stats()["budgets"] == {"query": empty, "poll": empty, "management": empty}
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    started = session.get(url, params=WINDOW)  # 1: query, Remaining 0
    limited = session.get(url, params=WINDOW)  # 2: query 429
    first_poll = session.get(_self_href(started))  # 3: poll, Remaining 4
    management = session.get(f"{emu.base_url}/management/logs")  # 4: Remaining 0
    forced = session.get(f"{emu.base_url}/management/logs")  # 5: forced 429
    spent = session.get(f"{emu.base_url}/management/logs")  # 6: budget 429
    second_poll = session.get(_self_href(started))  # 7: poll, Remaining 3
    statuses = [
        r.status_code for r in (started, limited, first_poll, management, forced, spent)
    ] + [second_poll.status_code]
    assert statuses == [202, 429, 200, 200, 429, 429, 200]
    stats = emu.stats()
    assert stats["budgets"] == {
        "query": {"requests": 2, "rate_limited": 1, "forced_429": 0, "min_remaining": 0},
        "poll": {"requests": 2, "rate_limited": 0, "forced_429": 0, "min_remaining": 3},
        "management": {"requests": 3, "rate_limited": 1, "forced_429": 1, "min_remaining": 0},
    }
    assert stats["faults"]["rate_limited"] == 2
    assert stats["faults"]["forced_429"] == 1
    assert stats["status_counts"] == {"200": 3, "202": 1, "429": 3}
    assert stats["requests"]["queries_started"] == 1
    # polls of a running query: the second poll got the finished page again
    assert stats["requests"]["polls"] == 1
    assert (
        stats["requests"]["query_requests"],
        stats["requests"]["poll_requests"],
        stats["requests"]["management_requests"],
    ) == (2, 2, 3)
    assert session.get(f"{emu.base_url}/_emulator/stats").json() == stats  # same connection


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"query_budget": -1}, "query_budget must be >= 0 or None"),
        ({"poll_budget": -1}, "poll_budget must be >= 0 or None"),
        ({"management_budget": -2}, "management_budget must be >= 0 or None"),
        ({"budget_window_seconds": 0}, "budget_window_seconds must be >= 0.001"),
        ({"budget_window_seconds": -6}, "budget_window_seconds must be >= 0.001"),
        ({"link_ttl_seconds": 0}, "link_ttl_seconds must be > 0 or None"),
        ({"forced_429_retry_after": -1}, "forced_429_retry_after must be >= 0 or None"),
    ],
)
def test_validation_names_the_option(emulator_factory, overrides, message):
    with pytest.raises(ValueError, match=re.escape(f"EmulatorOptions: {message}")):
        EmulatorOptions(**overrides).validate()
    emu = emulator_factory()
    with pytest.raises(ValueError, match=re.escape(message)):
        emu.update_options(**overrides)
    assert emu.options == EmulatorOptions(), "a refused change leaves the options as they were"


def test_scaled_down_and_zero_budgets_are_valid():
    EmulatorOptions(budget_window_seconds=6, query_budget=60, link_ttl_seconds=1).validate()
    EmulatorOptions(query_budget=0, poll_budget=None, budget_window_seconds=0.001).validate()
