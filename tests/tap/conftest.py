"""Shared helpers for tap-rapid7 unit tests: a fake clock and a client built on it."""

from __future__ import annotations

import pytest

from tap_rapid7.logsearch import LogSearchClient
from tap_rapid7.settings import TapSettings

BASE = "https://logs.test"
API_KEY = "sekret-api-key-0123456789"
LOG = "log-a"
START_URL = f"{BASE}/query/logs/{LOG}"
# Shaped like a real Rapid7 sequence number: above 2**53, a multiple of 4096 (so a double holds
# it exactly; BIG + 1 it cannot, so the test of a float on the way uses BIG + 1)
BIG = 3237201778429120512


class FakeTime:
    """A monotonic and wall clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_700_000_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return self.wall

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
        self.wall += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(fake_time):
    clients: list[LogSearchClient] = []

    def build(**overrides) -> LogSearchClient:
        kwargs = {
            "api_key": API_KEY,
            "base_url": BASE,
            "per_page": 3,
            "poll_interval_seconds": 1.0,
            "poll_interval_max_seconds": 4.0,
            "poll_timeout_seconds": 60.0,
            "max_retries": 3,
            "backoff_base_seconds": 0.5,
            "backoff_max_seconds": 8.0,
        }
        kwargs.update(overrides)
        clocks = {
            "clock": kwargs.pop("clock", fake_time.clock),
            "sleep": kwargs.pop("sleep", fake_time.sleep),
            "wall_clock": kwargs.pop("wall_clock", fake_time.wall_clock),
        }
        client = LogSearchClient(TapSettings.from_config(kwargs), **clocks)
        clients.append(client)
        return client

    yield build
    for client in clients:  # kept-alive sockets of tests against real loopback servers
        client.close()


def event(ts: int, seq: int, log_id: str = LOG, message: str = "line") -> dict:
    return {
        "timestamp": ts,
        "sequence_number": seq,
        "sequence_number_str": str(seq),
        "log_id": log_id,
        "message": message,
        "labels": [],
        "links": [{"rel": "Context", "href": f"{BASE}/query/context/{seq}"}],
    }


def running(self_href: str, progress: int = 0, rel: str = "Self") -> dict:
    return {
        "logs": [LOG],
        "progress": progress,
        "id": "q:1:abc::def:",
        "events": [],
        "links": [{"rel": rel, "href": self_href}],
    }


def page(events: list[dict], next_href: str | None = None, rel: str = "Next") -> dict:
    body: dict = {"logs": [LOG], "events": events}
    if next_href:
        body["links"] = [{"rel": rel, "href": next_href}]
    return body
