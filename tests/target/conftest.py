"""Helpers for the target tests: run the target in-process or as a process, read the dataset."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from target_parquet_parts.target import TargetParquetParts
from tests.target.singer_data import events_lines

TARGET_BIN = str(Path(sys.executable).with_name("target-parquet-parts"))


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """An in-process target installs SIGINT/SIGTERM handlers (the SDK does, in __init__);
    put pytest's back afterwards so Ctrl-C still stops the test run."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class StateCapture(io.TextIOBase):
    """Stands in for stdout: keeps every STATE line, calling ``on_state`` as each arrives."""

    def __init__(self, on_state: Callable[[Any], None] | None = None) -> None:
        self.states: list[Any] = []
        self.lines: list[str] = []
        self.on_state = on_state
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line.strip():
                self.lines.append(line)
                value = json.loads(line)
                if self.on_state:
                    self.on_state(value)
                self.states.append(value)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def buffer(self) -> _BinaryLayer:  # type: ignore[override]
        """The binary layer the target writes its STATE lines to (``plugin_io.singer_lines``)."""
        return _BinaryLayer(self)


class _BinaryLayer(io.RawIOBase):
    """``StateCapture.buffer``: bytes written here are decoded into the capture."""

    def __init__(self, capture: StateCapture) -> None:
        super().__init__()
        self.capture = capture

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        return self.capture.write(bytes(data).decode("utf-8"))


def run_target(
    output_dir: Path,
    lines: Iterable[str],
    monkeypatch: pytest.MonkeyPatch,
    on_state: Callable[[Any], None] | None = None,
    **config: Any,
) -> tuple[TargetParquetParts, StateCapture]:
    """Run the target in-process over ``lines``; return it and the STATE lines it wrote."""
    del monkeypatch  # kept in the signature: callers patch other things with it
    capture = StateCapture(on_state)
    target = TargetParquetParts(config={"output_dir": str(output_dir), **config})
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", capture)
        target.listen(file_input=io.BytesIO(data))
    return target, capture


def part_files(output_dir: Path) -> list[Path]:
    """Every file that looks like a part (what a reader's ``**/*.parquet`` glob would see)."""
    return sorted(output_dir.rglob("*.parquet"))


def journal_lines(output_dir: Path) -> list[str]:
    """The local journal's lines less the ``{"stateful": true}`` marker: what it remembers."""
    text = (output_dir / "_journal" / "journal.jsonl").read_text()
    return [line for line in text.splitlines() if line != '{"stateful":true}']


def temp_files(output_dir: Path) -> list[Path]:
    """Leftover temporary files."""
    return sorted(output_dir.rglob("*.tmp"))


def read_rows(output_dir: Path, stream_dir: str = "events") -> list[dict[str, Any]]:
    """All rows of a stream directory, part by part (each part read on its own)."""
    rows: list[dict[str, Any]] = []
    for part in sorted((output_dir / stream_dir).rglob("*.parquet")):
        rows.extend(pq.read_table(part).to_pylist())
    return rows


def start_target_process(output_dir: Path, **config: Any) -> subprocess.Popen:
    """The target as a real process reading a pipe we control (stderr goes to a file)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{len(list(output_dir.parent.glob('target-*.json')))}"
    config_path = output_dir.parent / f"target-{tag}.json"
    config_path.write_text(json.dumps({"output_dir": str(output_dir), **config}))
    with (output_dir.parent / f"target-{tag}.stderr").open("wb") as stderr:
        return subprocess.Popen(
            [TARGET_BIN, "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )


def listen_lazily(target: TargetParquetParts, lines: Iterable[str], capture: StateCapture) -> None:
    """Feed the lines lazily (a generator runs on the reading thread, between messages)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", capture)
        target.listen(file_input=((line + "\n").encode("utf-8") for line in lines))


def stopped_by_sigterm_at_batch_two(
    target: TargetParquetParts,
    in_flight: threading.Event,
    signalled: threading.Event,
    *,
    wait: float,
) -> tuple[StateCapture, list[Any]]:
    """Run ``target`` over 1000 events (a STATE every 50; batches of 100): once record 199
    handed batch 2 over and the writer holds it (``in_flight``), a SIGTERM as Python runs its
    handler (on the reading thread, between two messages), then ``signalled``. Returns the
    STATEs written and those sent; the run must end with exit code 143."""
    capture = StateCapture()
    sent: list[Any] = []

    def lines() -> Iterator[str]:
        for number, line in enumerate(events_lines(1000, state_every=50)):
            if '"STATE"' in line:
                sent.append(json.loads(line)["value"])
            yield line
            if number == 200 + 3:  # record 199 (line 200 + 3 STATEs) handed batch 2 over
                assert in_flight.wait(wait)
                target._handle_termination(signal.SIGTERM, None)
                signalled.set()

    with pytest.raises(SystemExit) as exited:
        listen_lazily(target, lines(), capture)
    assert exited.value.code == 143
    return capture, sent


def events_then_set(moved_on: threading.Event, *, after: str) -> Iterator[str]:
    """1000 events with a STATE every 50, setting ``moved_on`` once the line holding
    ``after`` was read (the reader is then past a given batch's hand-over)."""
    for line in events_lines(1000, state_every=50):
        yield line
        if after in line:
            moved_on.set()
