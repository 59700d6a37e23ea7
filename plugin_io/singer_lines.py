"""Singer message lines written whole to standard output, whatever one ``write`` call manages.

With ``PYTHONUNBUFFERED=1`` (set by many Docker images and CI runners) ``sys.stdout.buffer`` is
the raw file itself, and its ``write`` makes one system call and returns how many bytes went
out. A write to a full pipe that a signal interrupts returns early; singer-sdk's writers and
``sys.stdout.write`` do not look at the count, so the rest is dropped and a reader gets a cut
RECORD or STATE line glued to the next message (seen with a SIGTERM during a 30 KB RECORD). A
buffered stdout completes such writes itself; this module does so for either kind, so the
plugins need not care how Python was started. In ``plugin_io``, shared by the tap and the
target, which must not import each other.
"""

from __future__ import annotations

import select
import sys
from typing import BinaryIO

__all__ = ["flush_all", "write_all", "write_line"]


def write_all(stream: BinaryIO, data: bytes | bytearray) -> None:
    """Write every byte of ``data`` to the binary ``stream``, however many calls it takes.

    A raw stream may take part of the data (a partial write: returns the count) or, when it is
    a full non-blocking pipe, none (returns ``None``); a buffered one on such a pipe raises
    ``BlockingIOError`` saying how much it took. The rest is written once the stream can take
    more. ``data`` is passed as it is (no copy, no view that would pin the SDK's reused
    message buffer); only a rest left over is copied.
    """
    remaining: bytes | bytearray = data
    while remaining:
        try:
            written = stream.write(remaining)
        except BlockingIOError as exc:
            written = exc.characters_written
            _wait_until_writable(stream)
        if written is None:
            _wait_until_writable(stream)
            continue
        if written >= len(remaining):
            return
        remaining = bytes(remaining[written:])


def flush_all(stream: BinaryIO) -> None:
    """Flush ``stream``, waiting while a non-blocking pipe is full."""
    while True:
        try:
            stream.flush()
        except BlockingIOError:
            _wait_until_writable(stream)
        else:
            return


def _wait_until_writable(stream: BinaryIO) -> None:
    select.select([], [stream], [])


def write_line(line: bytes | bytearray, *, flush: bool) -> None:
    """Write one message line, its newline included, whole to ``sys.stdout``'s binary layer.

    ``sys.stdout`` is looked up at each call (tests and the SDK may replace it). ``flush`` is
    False for a RECORD that may wait in the buffer (a flush is a system call per record).
    """
    binary = sys.stdout.buffer
    write_all(binary, line)
    if flush:
        flush_all(binary)
