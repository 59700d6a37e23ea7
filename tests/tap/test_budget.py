"""Budget headers and the per-family pacer (fake clock: every wait is exact)."""

from __future__ import annotations

import logging
import threading

import pytest

from tap_rapid7.logsearch.budget import (
    BudgetPacer,
    parse_rate_limit_wait,
    rate_limit_headers,
)
from tests.tap.conftest import FakeTime


def test_parse_wait_prefers_retry_after_then_reset():
    wall = lambda: 1_700_000_000.0  # noqa: E731
    assert parse_rate_limit_wait({"Retry-After": "3", "X-RateLimit-Reset": "9"}, wall) == (
        3.0,
        "Retry-After",
    )
    assert parse_rate_limit_wait({"x-ratelimit-reset": "9"}, wall) == (9.0, "X-RateLimit-Reset")
    assert parse_rate_limit_wait({"X-RateLimit-Reset": "1700000030"}, wall) == (
        30.0,
        "X-RateLimit-Reset",
    )
    assert parse_rate_limit_wait({"Retry-After": "Tue, 14 Nov 2023 22:13:40 GMT"}, wall) == (
        20.0,
        "Retry-After",
    )
    assert parse_rate_limit_wait({"Retry-After": "soon"}, wall) is None
    assert parse_rate_limit_wait({}, wall) is None


def test_rate_limit_headers_parse_all_three_or_nothing():
    headers = {
        "X-RateLimit-Limit": "1500",
        "X-RateLimit-Remaining": "12",
        "X-RateLimit-Reset": "2.5",
    }
    assert rate_limit_headers(headers) == (1500, 12, 2.5)
    assert rate_limit_headers({**headers, "X-RateLimit-Reset": "nan"}) is None
    assert rate_limit_headers({"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "1"}) is None


def budget(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }


def pacer(fake: FakeTime, **kwargs) -> BudgetPacer:
    kwargs.setdefault("window_seconds", 100.0)
    return BudgetPacer(clock=fake.clock, sleep=fake.sleep, wall_clock=fake.wall_clock, **kwargs)


def test_nothing_known_means_no_wait():
    fake = FakeTime()
    assert pacer(fake).acquire("query") == 0.0
    assert fake.sleeps == []


def test_a_quarter_goes_at_once_then_the_rest_is_spread_to_the_reset():
    fake = FakeTime()
    p = pacer(fake)  # reserve 5 of 100, burst 25
    p.observe("query", budget(100, 100, 100))  # a fresh window, 100 s to the reset
    waits = [p.acquire("query") for _ in range(27)]
    assert waits[:25] == [0.0] * 25
    # the 26th may go once burst + 70 * elapsed / 100 >= 26: elapsed = 100 / 70
    assert waits[25] == pytest.approx(100 / 70)
    assert waits[26] == pytest.approx(100 / 70)


def test_spent_budget_waits_for_the_refill_and_keeps_the_reserve():
    fake = FakeTime()
    p = pacer(fake)
    p.observe("query", budget(100, 7, 1))  # 93 used, 1 s before the reset
    assert p.acquire("query") == 0.0  # 94th: the pacing line is at 94.3
    assert p.acquire("query") == pytest.approx(1.0)  # the 95th would eat the reserve of 5
    snap = p.snapshot()
    assert snap["query_requests"] == 2
    assert snap["query_remaining"] == 99  # the refilled window, one request sent in it


def test_budget_used_by_others_beyond_the_line_waits_for_the_line():
    fake = FakeTime()
    p = pacer(fake)
    p.observe("query", budget(100, 50, 50))  # half-way, 50 used: the line is at 60
    waits = [p.acquire("query") for _ in range(11)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] == pytest.approx(100 / 70)


def test_families_are_paced_independently():
    fake = FakeTime()
    p = pacer(fake)
    p.observe("query", budget(100, 0, 50))
    p.hold("query", 50)
    assert p.acquire("poll") == 0.0  # a running query's poll is never held by queries
    assert p.acquire("management") == 0.0
    assert p.acquire("query") == pytest.approx(50.0)
    assert p.snapshot()["query_rate_limited"] == 1


def test_max_wait_bounds_a_poll_wait():
    fake = FakeTime()
    p = pacer(fake)
    p.hold("poll", 30)
    assert p.acquire("poll", max_wait=10) == pytest.approx(10.0)
    assert fake.sleeps == [10.0]


def test_answers_from_the_same_window_never_raise_the_estimate():
    fake = FakeTime()
    p = pacer(fake)
    p.observe("query", budget(100, 50, 60))
    p.acquire("query")
    p.acquire("query")
    p.observe("query", budget(100, 49, 60))  # an older answer arriving late
    assert p.snapshot()["query_remaining"] == 48
    assert p.snapshot()["query_lowest_remaining"] == 49


def test_pacing_is_shared_across_threads():
    p = BudgetPacer(window_seconds=1.0, burst_share=0.0, reserve_share=0.0)
    p.observe("query", budget(20, 20, 1.0))
    done: list[float] = []
    threads = [threading.Thread(target=lambda: done.append(p.acquire("query"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert p.snapshot()["query_requests"] == 4
    assert sum(1 for waited in done if waited > 0) >= 3  # spread out, not all at once


def test_budget_lines_carry_every_family(caplog):
    fake = FakeTime()
    p = pacer(fake, log_interval_seconds=10)
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        p.acquire("query")
        p.observe("query", budget(1500, 1499, 899))
        fake.sleep(11)
        p.acquire("poll")
        p.observe("poll", budget(10000, 9999, 888))
        p.count_events(500)
        p.log_summary()
    lines = [m for m in caplog.messages if m.startswith("logsearch_budget")]
    assert len(lines) == 2
    assert lines[0].startswith("logsearch_budget query_requests=1 ")
    assert "poll_remaining=9999" in lines[0]
    assert lines[1].startswith("logsearch_budget_summary ")
    assert "events_per_query=500.0" in lines[1]
    assert "query_lowest_remaining=1499" in lines[1]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="budget_window_seconds"):
        BudgetPacer(window_seconds=0)
    with pytest.raises(ValueError, match="budget_reserve_share"):
        BudgetPacer(reserve_share=1.5)


def test_a_429_naming_an_earlier_reset_replaces_the_estimate_instead_of_waiting_the_window():
    fake = FakeTime()
    p = pacer(fake, window_seconds=900)
    p.observe("query", budget(1500, 1400, 300))  # the window resets in 300 s
    p.observe("query", budget(1500, 0, 1))  # a 429: spent, but only for 1 s
    assert p.acquire("query") == pytest.approx(1.0)  # not the 300 s left of the old window
