"""A stop signal landing at the very edge of a wait for the API still stops the tap cleanly.

The handler raises ``StopRequested`` whenever the main thread counts as waiting. When the wait
was a ``with`` block, a signal arriving as the block was left (its ``__exit__`` running in the
stream's frame, the wait still counted) raised it outside the handler: a CI run ended with exit 1
and a traceback instead of exit 130 and a STATE. ``TapRapid7.wait_for_api`` is a call, so every
moment counted as waiting runs inside its handler. Here the signal is delivered at both edges of
the n-th wait (entering, and leaving after the API answered), where a real handler can run.
"""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tap_rapid7.stopping import StopSignal
from tap_rapid7.tap import TapRapid7
from tap_rapid7.windows import Cursor
from tests.tap.fake_api import FakeLogSearch
from tests.tap.test_tap_state import config, make_events


@pytest.fixture
def fake(requests_mock) -> FakeLogSearch:
    api = FakeLogSearch(make_events())
    api.install(requests_mock)
    return api


def deliver_signal_at(monkeypatch, wait_number: int, edge: str) -> list[int]:
    """Make the ``wait_number``-th wait for the API receive SIGINT at ``edge`` (enter/exit)."""
    plain = StopSignal.waiting
    waits: list[int] = []

    @contextmanager
    def waiting(self: StopSignal) -> Iterator[None]:
        waits.append(len(waits) + 1)
        if len(waits) == wait_number and edge == "enter":
            self.request(signal.SIGINT)  # before the wait is counted: recorded, then refused
        with plain(self):
            yield
            if len(waits) == wait_number and edge == "exit":
                self.request(signal.SIGINT)  # the API answered; still counted as waiting

    monkeypatch.setattr(StopSignal, "waiting", waiting)
    return waits


@pytest.mark.parametrize("edge", ["enter", "exit"])
@pytest.mark.parametrize("wait_number", [4, 7])
def test_a_signal_at_the_edge_of_a_wait_exits_130_with_an_exact_state(
    monkeypatch, fake, wait_number, edge
):
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr("sys.stdout", out)
    tap = TapRapid7(config=config(), state=None, setup_mapper=True)
    waits = deliver_signal_at(monkeypatch, wait_number, edge)
    with pytest.raises(SystemExit) as stopped:
        tap.sync_all()
    out.flush()
    assert stopped.value.code == 128 + signal.SIGINT
    assert len(waits) == wait_number  # stopped at that wait, not later
    messages = [json.loads(line) for line in out.buffer.getvalue().decode().splitlines()]
    assert messages[-1]["type"] == "STATE"
    written = [m["record"] for m in messages if m["type"] == "RECORD"]
    events = make_events()
    assert 0 < len(written) < sum(len(v) for v in events.values())  # part way
    partitions = messages[-1]["value"]["bookmarks"]["events"]["partitions"]
    cursors = {p["context"]["log_id"]: Cursor.from_state(p) for p in partitions}
    for log_id, keys in events.items():
        mine = {(r["timestamp"], r["sequence_number"]) for r in written if r["log_id"] == log_id}
        cursor = cursors.get(log_id)
        # the STATE claims exactly what was written for this log: no more, no less
        claimed = {key for key in keys if cursor is not None and cursor.already_emitted(*key)}
        assert claimed == mine


def test_a_second_signal_while_the_stop_writes_its_state_is_only_recorded(monkeypatch, fake):
    """The first signal ends a wait at its very edge, before the wait lowered its count (the
    handler can run as ``__exit__`` starts); then a second one (Ctrl-C, then the scheduler's
    SIGTERM) arrives while the STATE is written. It must not raise again: exit 130, one STATE."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr("sys.stdout", out)
    tap = TapRapid7(config=config(), state=None, setup_mapper=True)
    waits: list[int] = []

    @contextmanager
    def waiting(self: StopSignal) -> Iterator[None]:
        waits.append(len(waits) + 1)
        self._waiting += 1  # no finally: as when the handler ran before the wait's own exit
        yield
        if len(waits) == 5:
            self.request(signal.SIGINT)
        self._waiting -= 1

    write_state = tap.state_writer.write_state

    def second_signal_then_write(state):
        if tap.stop_signal.signum is not None:  # the stop's own STATE
            tap.on_stop_signal(signal.SIGTERM)
        write_state(state)

    monkeypatch.setattr(StopSignal, "waiting", waiting)
    monkeypatch.setattr(tap.state_writer, "write_state", second_signal_then_write)
    with pytest.raises(SystemExit) as stopped:
        tap.sync_all()
    out.flush()
    assert stopped.value.code == 128 + signal.SIGINT  # the first signal decides the exit code
    messages = [json.loads(line) for line in out.buffer.getvalue().decode().splitlines()]
    assert messages[-1]["type"] == "STATE"
