"""pytest fixtures: `emulator` (default options) and `emulator_factory(**overrides)`.

Loaded by pytest through the `pytest11` entry point of the logsearch-emulator distribution:
installing the emulator is enough, no conftest.py registration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from logsearch_emulator.options import EmulatorOptions
from logsearch_emulator.server import RunningEmulator


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., RunningEmulator]]:
    """Start emulators with option overrides; all are stopped at teardown."""
    started: list[RunningEmulator] = []

    def factory(**overrides: Any) -> RunningEmulator:
        emulator = RunningEmulator(EmulatorOptions(**overrides), port=0).start()
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., RunningEmulator]) -> RunningEmulator:
    """An emulator with default options on a free loopback port."""
    return emulator_factory()
