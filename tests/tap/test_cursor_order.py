"""An exact resume whatever order a millisecond's sequence numbers are served in (issue 19).

Rapid7 identifies an entry by log, timestamp and sequence number and promises nothing about
the order inside one millisecond (§11). A cursor of "the last sequence number" skipped 20 when a
millisecond came as 10, 30 | 20 and the tap stopped between the pages, and repeated 30 when it
came as 30, 10 | 20. The STATE now lists the sequence numbers emitted in its millisecond.

Each order is served by a fake; the tap gets SIGTERM at a page boundary, resumes from the STATE
it wrote, and so on until a run completes: the union of the runs is the truth, exactly once.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from plugin_io.log_events import parse_fields
from tap_rapid7.stopping import StopSignal
from tap_rapid7.tap import TapRapid7
from tap_rapid7.windows import (
    CURSOR_EMITTED_KEY,
    MAX_EMITTED_IN_STATE,
    Cursor,
    SequenceOrder,
    Window,
    WindowFilter,
    add_emitted,
)
from tests.tap.order_fake import BASE, LOG, OrderedLogSearch

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
BURST = T0 + 5_000  # a burst inside the first window
EDGE = T0 + 10_000  # a burst on the boundary between the two windows
PLAIN_WAITING = StopSignal.waiting

ORDERS = {
    "ascending": [10, 20, 30],
    "descending": [30, 20, 10],
    "interleaved": [10, 30, 20],  # with 2 a page: 10, 30 | 20 (the reported loss)
    "high-first": [30, 10, 20],  # 30, 10 | 20 (the reported repeat)
}


def served(order: list[int]) -> list[tuple[int, int]]:
    """One log in server order: single events, and two bursts served in ``order``."""
    events = [(T0 + 1_000, 7), (T0 + 3_000, 99)]
    events += [(BURST, seq) for seq in order]
    events += [(T0 + 7_000, 1)]
    events += [(EDGE, seq * 1000) for seq in order]
    events += [(T0 + 12_000, seq // 10) for seq in order[:2]]
    return events


def config(**overrides) -> dict:
    cfg = {
        "api_key": "unit-key-order",
        "base_url": BASE,
        "log_ids": [LOG],
        "start_date": "2024-01-01T00:00:00Z",
        "end_date": "2024-01-01T00:00:20Z",
        "window_seconds": 10,
        "per_page": 2,
        "poll_interval_seconds": 0,
        "backoff_base_seconds": 0,
        "max_concurrent_queries": 1,
    }
    cfg.update(overrides)
    return cfg


def run(monkeypatch, state: dict | None, stop_at_wait: int | None) -> tuple[list[dict], bool]:
    """One run of the tap; SIGTERM as it enters its ``stop_at_wait``-th wait for the API."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr("sys.stdout", out)
    # the SDK keeps (and updates) the state dict it is given: hand it a copy
    tap = TapRapid7(config=config(), state=copy.deepcopy(state), setup_mapper=True)
    waits = [0]

    @contextmanager
    def waiting(self: StopSignal) -> Iterator[None]:
        waits[0] += 1
        if waits[0] == stop_at_wait:
            self.request(signal.SIGTERM)
        with PLAIN_WAITING(self):
            yield

    monkeypatch.setattr(StopSignal, "waiting", waiting)
    code: object = None
    try:
        tap.sync_all()
    except SystemExit as exit_:
        code = exit_.code
    out.flush()
    stopped = code is not None
    assert code in (None, 128 + signal.SIGTERM)
    messages = [json.loads(line) for line in out.buffer.getvalue().decode().splitlines()]
    return messages, stopped


def records_of(messages: list[dict]) -> list[tuple[int, int]]:
    return [
        (m["record"]["timestamp"], m["record"]["sequence_number"])
        for m in messages
        if m["type"] == "RECORD" and m["stream"] == "events"
    ]


def last_state(messages: list[dict], previous: dict | None) -> dict | None:
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    return states[-1] if states else previous


def partition(state: dict) -> dict:
    (part,) = state["bookmarks"]["events"]["partitions"]
    return part


def at_the_end(state: dict | None) -> bool:
    """The events stream is done (a later stop lands in the management streams)."""
    if not state or "partitions" not in state.get("bookmarks", {}).get("events", {}):
        return False
    part = partition(state)
    return part.get("next_from_millis") == T0 + 20_000 and not part.get(CURSOR_EMITTED_KEY)


def figures(runs: list[list[tuple[int, int]]], truth: set[tuple[int, int]]) -> dict:
    union = Counter(key for records in runs for key in records)
    return {
        "per_run": [len(records) for records in runs],
        "union": len(union),
        "duplicates": sum(n - 1 for n in union.values()),
        "missing": len(truth - set(union)),
        "extra": len(set(union) - truth),
    }


def runs_stopped_at_each_second_batch(
    monkeypatch, state: dict | None
) -> list[list[tuple[int, int]]]:
    """Runs from ``state``, each stopped while it waits for its second batch (a page boundary
    inside a burst) and resumed from its last STATE, until one completes; their records."""
    runs: list[list[tuple[int, int]]] = []
    for _ in range(30):
        # waits: the plan, the runner, then one per batch: the 4th is the wait for batch 2
        messages, stopped = run(monkeypatch, state, stop_at_wait=4)
        runs.append(records_of(messages))
        state = last_state(messages, state)
        if not stopped or at_the_end(state):
            return runs
    pytest.fail("the runs never completed")


def old_state(floor: int) -> dict:
    """A STATE written before the list existed: the burst's millisecond up to ``floor``."""
    partition = {
        "context": {"log_id": LOG},
        "replication_key": "received_at",
        "replication_key_value": "2024-01-01T00:00:05.000+00:00",
        "next_from_millis": BURST,
        "next_from_sequence_number_str": str(floor),
    }
    return {"bookmarks": {"events": {"partitions": [partition]}}}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_stopping_at_each_first_page_boundary_and_resuming_is_exact(
    monkeypatch, requests_mock, order
):
    """Every run is stopped while it waits for its second batch (a page boundary inside a
    burst, as in the report) and the next resumes from its STATE, until one completes."""
    api = OrderedLogSearch(served(order))
    api.install(requests_mock)
    runs = runs_stopped_at_each_second_batch(monkeypatch, None)
    result = figures(runs, api.truth(T0, T0 + 20_000))
    print(order, result, file=sys.__stderr__)  # the figures for the report (-s)
    assert result["missing"] == 0
    assert result["duplicates"] == 0
    assert result["extra"] == 0
    assert result["union"] == 11
    assert len(runs) > 3  # really cut into several runs, many inside a burst


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_a_stop_at_any_single_wait_then_a_full_resume_is_exact(monkeypatch, requests_mock, order):
    api = OrderedLogSearch(served(order))
    api.install(requests_mock)
    truth = api.truth(T0, T0 + 20_000)
    cut_inside_a_burst = 0
    for wait in range(1, 14):
        first, stopped = run(monkeypatch, None, stop_at_wait=wait)
        state = last_state(first, None)
        rest, _ = run(monkeypatch, state, stop_at_wait=None) if stopped else ([], False)
        result = figures([records_of(first), records_of(rest)], truth)
        assert (result["missing"], result["duplicates"], result["extra"]) == (0, 0, 0), (
            wait,
            result,
        )
        if state and "partitions" in state.get("bookmarks", {}).get("events", {}):
            part = partition(state)
            if part.get("next_from_millis") in (BURST, EDGE) and part.get(CURSOR_EMITTED_KEY):
                cut_inside_a_burst += 1
    assert cut_inside_a_burst >= 2


def test_the_state_lists_the_identities_emitted_in_its_millisecond(monkeypatch, requests_mock):
    """Stopped while waiting for 20 after 10, 30: the STATE says so, and the resume emits 20."""
    api = OrderedLogSearch(served(ORDERS["interleaved"]))
    api.install(requests_mock)
    waits_to_20 = 5  # plan, runner, [7, 99], [10 (BURST)]... until 30 is out and 20 is next
    for wait in range(3, 12):
        messages, stopped = run(monkeypatch, None, stop_at_wait=wait)
        emitted = records_of(messages)
        if emitted and emitted[-1] == (BURST, 30):
            waits_to_20 = wait
            break
    else:
        pytest.fail("no stop landed between 30 and 20")
    assert stopped
    part = partition(last_state(messages, None))
    assert part["next_from_millis"] == BURST
    assert part[CURSOR_EMITTED_KEY] == "10,30"
    assert part["next_from_sequence_number_str"] == "30"  # the last one, as before
    assert all(isinstance(v, int | str) for k, v in part.items() if k != "context")
    rest, _ = run(monkeypatch, last_state(messages, None), stop_at_wait=None)
    assert records_of(rest)[0] == (BURST, 20)
    assert waits_to_20 >= 3


def test_a_broken_order_is_logged_once_per_millisecond_naming_log_and_numbers(
    monkeypatch, requests_mock, caplog
):
    api = OrderedLogSearch(served(ORDERS["descending"]))
    api.install(requests_mock)
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        messages, stopped = run(monkeypatch, None, stop_at_wait=None)
    assert not stopped
    assert len(records_of(messages)) == 11
    lines = [
        parse_fields(r.getMessage().split(" ", 1)[1])
        for r in caplog.records
        if r.getMessage().startswith("logsearch_sequence_order ")
    ]
    found = sorted(
        (f["millis"], f["previous_sequence_number"], f["sequence_number"]) for f in lines
    )
    # the two bursts (30 > 20 > 10), and T0 + 12_000 served as 3, 2: each once
    assert found == [(BURST, 30, 20), (EDGE, 30_000, 20_000), (T0 + 12_000, 3, 2)]
    assert all(f["log_id"] == LOG for f in lines)


def test_ascending_order_logs_no_order_warning(monkeypatch, requests_mock, caplog):
    OrderedLogSearch(served(ORDERS["ascending"])).install(requests_mock)
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        run(monkeypatch, None, stop_at_wait=None)
    assert not [r for r in caplog.records if "logsearch_sequence_order" in r.getMessage()]


@pytest.mark.parametrize("floor", [10, 20, 30])
def test_a_state_from_before_the_list_still_resumes_exactly(monkeypatch, requests_mock, floor):
    """Old STATE (``next_from_sequence_number_str`` only) meant "up to it" and was written from
    an ascending server: it resumes as it did, and the next STATE is still exact."""
    api = OrderedLogSearch(served(ORDERS["ascending"]))
    api.install(requests_mock)
    earlier = {(ts, seq) for ts, seq in api.served if ts < BURST or (ts == BURST and seq <= floor)}
    old = old_state(floor)
    # stopped right after its first batch, then resumed again from that STATE
    first, stopped = run(monkeypatch, old, stop_at_wait=4)
    assert stopped
    second, _ = run(monkeypatch, last_state(first, old), stop_at_wait=None)
    result = figures(
        [sorted(earlier), records_of(first), records_of(second)], api.truth(T0, T0 + 20_000)
    )
    assert (result["missing"], result["duplicates"], result["extra"]) == (0, 0, 0), result


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_an_old_floor_then_any_order_stopped_at_every_boundary_is_exact(
    monkeypatch, requests_mock, order
):
    """An old STATE (a floor of 5 in the burst's millisecond) resumed by a server that now
    serves the rest of that millisecond in any order, stopped at every page boundary."""
    api = OrderedLogSearch(served([5, *order]))
    api.install(requests_mock)
    earlier = {(ts, seq) for ts, seq in api.served if ts < BURST or (ts == BURST and seq <= 5)}
    runs = [sorted(earlier), *runs_stopped_at_each_second_batch(monkeypatch, old_state(5))]
    result = figures(runs, api.truth(T0, T0 + 20_000))
    assert (result["missing"], result["duplicates"], result["extra"]) == (0, 0, 0), result


def test_cursor_round_trip_with_the_emitted_list():
    cursor = Cursor.from_state(
        {
            "next_from_millis": 1500,
            "next_from_sequence_number_str": "10",
            CURSOR_EMITTED_KEY: "30,10",
        }
    )
    assert cursor == Cursor(1500, 10, frozenset({10, 30}))
    assert cursor.already_emitted(1500, 30)
    assert not cursor.already_emitted(1500, 20)  # below the last one, never emitted
    assert cursor.already_emitted(1499, 10**18)
    assert not cursor.already_emitted(1501, 10)
    assert cursor.state_fields()[CURSOR_EMITTED_KEY] == "10,30"
    assert Cursor.from_state(cursor.state_fields()) == cursor
    with pytest.raises(ValueError, match=CURSOR_EMITTED_KEY):
        Cursor.from_state({"next_from_millis": 1, CURSOR_EMITTED_KEY: [1, 2]})


def test_the_emitted_list_is_capped_keeping_the_newest():
    text, dropped = "", False
    for seq in range(MAX_EMITTED_IN_STATE):
        text, dropped = add_emitted(text, str(seq))
        assert not dropped
    text, dropped = add_emitted(text, str(MAX_EMITTED_IN_STATE))
    assert dropped
    kept = text.split(",")
    assert len(kept) == MAX_EMITTED_IN_STATE
    assert kept[0] == "1"
    assert kept[-1] == str(MAX_EMITTED_IN_STATE)
    # safe: what was dropped is emitted again on resume (a repeat), never skipped (a loss)
    cursor = Cursor(7, None, frozenset(int(k) for k in kept))
    assert not cursor.already_emitted(7, 0)


def test_sequence_order_reports_each_millisecond_once_and_forgets_across_queries():
    order = SequenceOrder()
    assert order.check(5, 10) is None
    assert order.check(5, 30) is None
    assert order.check(5, 20) == 30
    assert order.check(5, 10) is None  # the same millisecond again: already reported
    assert order.check(6, 1) is None  # a new millisecond may start lower
    order.restart()
    assert order.check(6, 0) is None  # a new query follows nothing


def test_filter_skips_exactly_the_listed_identities():
    filt = WindowFilter(Window(1000, 2000), resume=Cursor(1500, 30, frozenset({10, 30})))
    taken = [seq for seq in (10, 30, 20, 5) if filt.accept(1500, seq, str(seq))]
    assert taken == [20, 5]
    assert filt.resume_skipped == 2


def test_the_stream_caps_the_list_once_per_millisecond_and_keeps_the_newest(caplog):
    stream = TapRapid7(config=config(), setup_mapper=False).streams["events"]
    total = MAX_EMITTED_IN_STATE + 5
    with caplog.at_level(logging.WARNING):
        for seq in range(total):
            stream.advance_state(
                {"log_id": LOG, "timestamp": BURST, "sequence_number_str": str(seq),
                 "received_at": "2024-01-01T00:00:05.000+00:00"}
            )  # fmt: skip
    state = stream.get_context_state({"log_id": LOG})
    kept = state[CURSOR_EMITTED_KEY].split(",")
    assert kept == [str(seq) for seq in range(5, total)]
    assert state["next_from_sequence_number_str"] == str(total - 1)
    capped = [r for r in caplog.records if r.getMessage().startswith("tap_cursor_capped ")]
    assert len(capped) == 1
    assert f"millis={BURST}" in capped[0].getMessage()
