"""One writer per ``output_dir``: every run holds an exclusive lock on ``_journal/lock``.

Taken when the first stream's SCHEMA arrives (before anything is written), whatever the streams'
key properties, and held until the end of input. A second target on the same ``output_dir`` fails
at once, naming ``output_dir`` and the holder: the holder writes its pid, host, run id and start
time into the lock file. Without the lock two writers would remove each other's temporary files
(each run sweeps the ones a crashed run left) and interleave journal entries.

``flock`` (not ``lockf``): it belongs to the open file, so a second target in the same process is
refused too, and closing another descriptor of the file does not drop it. The kernel releases it
when the process dies, so ``kill -9`` never leaves a stale lock; the holder text it leaves behind
is overwritten by the next run.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import weakref
from pathlib import Path

from target_parquet_parts.naming import JOURNAL_DIR, open_no_follow, resolve_inside
from target_parquet_parts.parts import ensure_dir

__all__ = ["LOCK_FILE", "OutputDirInUseError", "RunLock", "lock_output_dir"]

LOCK_FILE = "lock"


class OutputDirInUseError(RuntimeError):
    """Another run holds the output_dir's lock."""


class RunLock:
    """The exclusive lock of one ``output_dir`` (released by ``release`` or process exit)."""

    def __init__(self, path: Path, output_dir: Path, run_id: str) -> None:
        self.path = path
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_holder(fd)
            os.close(fd)
            msg = (
                f"output_dir '{output_dir}' is in use by another target-parquet-parts process "
                f"({other}; lock file '{path}'): give each concurrent run its own output_dir, "
                "or wait for that run to end"
            )
            raise OutputDirInUseError(msg) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        # A run that never reaches its end (an exception in a library caller) still unlocks
        # once its lock object is collected, not only at process exit.
        self._closer = weakref.finalize(self, os.close, fd)
        started = datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "run": run_id, "since": started}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)

    def check(self) -> None:
        """Nothing to check: the kernel holds a flock until this process ends."""

    def release(self) -> None:
        """Forget the holder text and unlock (idempotent)."""
        if not self._closer.alive:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        self._closer()  # closing the only descriptor releases the flock


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        holder = json.loads(text)
        return (
            f"pid {holder['pid']} on host {holder['host']}, run {holder['run']}, "
            f"since {holder['since']}"
        )
    except (OSError, ValueError, TypeError, KeyError):
        return "holder unknown"


def lock_output_dir(output_dir: Path, run_id: str) -> RunLock:
    """Create ``_journal/`` if needed and take ``output_dir``'s lock for this run."""
    directory = resolve_inside(output_dir, JOURNAL_DIR)
    ensure_dir(directory)
    return RunLock(directory / LOCK_FILE, Path(os.path.realpath(output_dir)), run_id)
