"""max_concurrent_queries: several window queries in flight, records and STATE as sequential."""

from __future__ import annotations

import threading

import pytest

from tap_rapid7.logsearch import WindowReport
from tap_rapid7.runner import ConcurrentRunner, SequentialRunner, WindowTask
from tap_rapid7.windows import Window
from tests.tap.fake_api import FakeLogSearch
from tests.tap.test_tap_state import config, make_events, run_tap


class BarrierClient:
    """read_group blocks until `parties` windows are being read at the same moment.

    A runner that queried one window at a time would never get past the barrier.
    """

    def __init__(self, parties: int, fail_on: str | None = None) -> None:
        self.parties = parties
        self.barrier = threading.Barrier(parties, timeout=10)
        self.fail_on = fail_on
        self.calls = 0
        self.lock = threading.Lock()

    def read_group(self, log_ids, window, resumes, statement, reports: dict[str, WindowReport]):
        (log_id,) = log_ids
        with self.lock:
            self.calls += 1
            first_ones = self.calls <= self.parties
        if first_ones:  # the first `parties` windows must all be in flight together
            self.barrier.wait()
        if log_id == self.fail_on:
            msg = f"boom in {log_id}"
            raise RuntimeError(msg)
        for start in range(window.from_ms, window.to_ms, 10):
            yield [{"log_id": log_id, "timestamp": start}]


def tasks(logs=("a", "b", "c")) -> list[WindowTask]:
    return [WindowTask((log,), Window(i * 100, (i + 1) * 100)) for log in logs for i in range(3)]


def drain(runner, plan):
    return [
        (rec["log_id"], rec["timestamp"])
        for task in plan
        for b in runner.batches(task)
        for rec in b
    ]


def test_queries_really_overlap_and_records_keep_their_order():
    plan = tasks()
    runner = ConcurrentRunner(BarrierClient(parties=3), plan, max_concurrent=3, buffered_pages=2)
    got = drain(runner, plan)
    expected = [
        (t.log_ids[0], ts) for t in plan for ts in range(t.window.from_ms, t.window.to_ms, 10)
    ]
    assert got == expected
    assert runner.max_active == 3


def test_sequential_runner_reads_one_window_at_a_time():
    class Recorder:
        def __init__(self):
            self.calls = []

        def read_group(self, log_ids, window, resumes, statement, reports):
            self.calls.append((log_ids, window))
            yield [{"log_id": log_ids[0], "timestamp": window.from_ms}]

    client = Recorder()
    plan = tasks()
    assert len(drain(SequentialRunner(client), plan)) == 9
    assert client.calls == [(t.log_ids, t.window) for t in plan]


def test_a_failing_window_surfaces_in_order_and_stops_the_workers():
    plan = tasks()
    runner = ConcurrentRunner(BarrierClient(parties=2, fail_on="b"), plan, max_concurrent=2)
    seen = []

    def consume():
        for task in plan:
            for batch in runner.batches(task):
                seen.extend(rec["log_id"] for rec in batch)

    with pytest.raises(RuntimeError, match="boom in b"):
        consume()
    assert set(seen) == {"a"}  # log a went out completely before b's error was raised
    assert len(seen) == 30


@pytest.mark.parametrize("limit", [2, 4])
def test_concurrent_sync_emits_exactly_what_a_sequential_one_does(
    monkeypatch, requests_mock, limit
):
    api = FakeLogSearch(make_events(), polls=2)
    api.install(requests_mock)
    sequential = run_tap(monkeypatch, config(state_every_records=5, max_concurrent_queries=1))
    concurrent = run_tap(monkeypatch, config(state_every_records=5, max_concurrent_queries=limit))
    strip = [{k: v for k, v in m.items() if k != "time_extracted"} for m in sequential]
    assert [{k: v for k, v in m.items() if k != "time_extracted"} for m in concurrent] == strip


def test_never_more_queries_in_flight_than_the_limit():
    plan = tasks(logs=("a", "b", "c", "d"))
    runner = ConcurrentRunner(BarrierClient(parties=2), plan, max_concurrent=2, buffered_pages=1)
    assert runner.workers == 4  # more workers than slots: lookahead without more queries
    got = drain(runner, plan)
    assert len(got) == 12 * 10
    assert runner.max_active == 2
