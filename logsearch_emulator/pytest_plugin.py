"""pytest fixtures: `emulator` (default options) and `emulator_factory(**overrides)`.

Named in a ``conftest.py`` (``pytest_plugins = ["logsearch_emulator.pytest_plugin"]``), not an
automatic ``pytest11`` entry point: the plugins' users install this package too, and their own
test runs must not gain fixtures named ``emulator`` behind their back.
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
