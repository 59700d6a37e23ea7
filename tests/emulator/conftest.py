"""Shared helpers for the emulator tests."""

from __future__ import annotations

import pytest
import requests

# A fixed "now" (2024-05-01T12:00:00Z) keeps tests independent of the wall clock.
NOW_MS = 1_714_564_800_000
HOUR_MS = 3_600_000


@pytest.fixture
def session_for():
    """`session_for(emu)` -> a requests.Session with the emulator's API key."""
    sessions: list[requests.Session] = []

    def make(emu, key: str | None = None) -> requests.Session:
        session = requests.Session()
        session.headers["X-Api-Key"] = key if key is not None else emu.api_key
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()
