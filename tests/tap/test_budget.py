"""The shared rate-limit gate and header parsing."""

from __future__ import annotations

import threading

from tap_rapid7.logsearch.budget import RateLimitGate, parse_rate_limit_wait
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


def test_gate_holds_every_thread_until_the_shared_moment():
    fake = FakeTime()
    gate = RateLimitGate(clock=fake.clock, sleep=fake.sleep, wall_clock=fake.wall_clock)
    assert gate.wait() == 0.0
    gate.hold(5.0)
    gate.hold(2.0)  # never shortens a longer hold
    assert gate.wait() == 5.0
    assert gate.wait() == 0.0


def test_gate_closes_when_remaining_reaches_zero():
    fake = FakeTime()
    gate = RateLimitGate(clock=fake.clock, sleep=fake.sleep, wall_clock=fake.wall_clock)
    gate.observe({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "9"})
    assert gate.wait() == 0.0
    gate.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9"})
    assert gate.wait() == 9.0


def test_gate_is_shared_across_threads():
    gate = RateLimitGate()
    gate.hold(0.05)
    waited = []
    threads = [threading.Thread(target=lambda: waited.append(gate.wait())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(waited) == 3
    assert all(w > 0 for w in waited)
