"""pytest fixtures: `emulator` (default options) and `emulator_factory(**overrides)`.

Register with `pytest_plugins = ["tap_rapid7.emulator.testing"]` in a conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tap_rapid7.emulator.options import EmulatorOptions
from tap_rapid7.emulator.server import RunningEmulator


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
