"""Message lines reach standard output whole, even when the OS takes a write in pieces.

With ``PYTHONUNBUFFERED=1`` a SIGTERM arriving while a large RECORD was written to a full pipe
cut the line: the rest was dropped and the STATE that followed was glued to it (found in CI by
``tests/e2e/test_signals.py``). These tests recreate each way a write is taken in pieces.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from plugin_io.singer_lines import flush_all, write_all, write_line


class Trickle(io.RawIOBase):
    """A raw stream that takes at most ``step`` bytes per call, as a pipe may under a signal."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step
        self.data = bytearray()
        self.calls = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.calls += 1
        taken = bytes(data[: self.step])
        self.data += taken
        return len(taken)


@pytest.mark.parametrize("data", [b"x" * 10_001 + b"\n", bytearray(b'{"type":"STATE"}\n')])
def test_a_write_taken_in_pieces_is_completed_in_order(data):
    stream = Trickle(step=4096)
    write_all(stream, data)
    assert bytes(stream.data) == bytes(data)
    assert stream.calls == -(-len(data) // 4096)


@pytest.mark.parametrize("buffered", [False, True], ids=["raw", "buffered"])
def test_a_full_non_blocking_pipe_is_waited_for_not_dropped(buffered):
    """A non-blocking pipe: a raw ``write`` returns None when full (and partial counts); a
    buffered one raises BlockingIOError saying how much it took, and so may its flush."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    data = bytes(range(256)) * 4096  # 1 MiB: far more than a pipe holds
    received = bytearray()

    def drain() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as reader:
            while chunk := reader.read(65536):
                received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_fd, "wb", buffering=8192 if buffered else 0) as writer:
        write_all(writer, data)
        write_all(writer, b"end\n")
        flush_all(writer)
    reader.join()
    assert bytes(received) == data + b"end\n"


def test_write_line_writes_to_the_current_stdout_and_flushes_when_asked(monkeypatch):
    raw = Trickle(step=3)
    buffered = io.BufferedWriter(raw, buffer_size=64)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffered, encoding="utf-8"))
    write_line(b'{"type":"RECORD"}\n', flush=False)
    assert bytes(raw.data) == b""  # a RECORD may wait in the buffer
    write_line(b'{"type":"STATE"}\n', flush=True)
    assert bytes(raw.data) == b'{"type":"RECORD"}\n{"type":"STATE"}\n'


_WRITER = textwrap.dedent(
    """
    import signal, sys
    from plugin_io.singer_lines import write_line
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    big, small = b"x" * 200_000 + b"\\n", b"y" * 500 + b"\\n"
    count = 0
    while not stop:
        write_line(big if count % 5 == 0 else small, flush=False)
        count += 1
    write_line(b"END\\n", flush=True)
    """
)


@pytest.mark.e2e
def test_a_signal_during_large_unbuffered_writes_cuts_no_line():
    """The CI failure itself: stdout unbuffered, the reader behind, SIGTERM mid-write."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _ in range(3):
        with subprocess.Popen(
            [sys.executable, "-c", _WRITER], stdout=subprocess.PIPE, env=env
        ) as writer:
            assert writer.stdout is not None
            lines = []
            for line in writer.stdout:
                lines.append(line)
                if len(lines) == 50:
                    writer.send_signal(signal.SIGTERM)
            assert writer.wait(timeout=60) == 0
        assert lines[-1] == b"END\n"
        cut = [
            len(line)
            for line in lines[:-1]
            if line not in (b"x" * 200_000 + b"\n", b"y" * 500 + b"\n")
        ]
        assert cut == []
