"""The target's own threads block SIGTERM and SIGINT, so the kernel hands them to the main thread.

Read from the kernel's view of each thread (``SigBlk`` in ``/proc/self/task/<tid>/status``), not
from Python: that mask is what decides which thread a ``kill`` wakes.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

from target_parquet_parts import objectstore, reader, writes
from target_parquet_parts.threads import STOP_SIGNALS


def _blocked(native_id: int) -> set[int]:
    """The signal numbers the thread ``native_id`` of this process blocks."""
    for line in Path(f"/proc/self/task/{native_id}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError(f"no SigBlk for thread {native_id}")


def _blocks_the_stop_signals(native_id: int | None) -> bool:
    assert native_id is not None
    return {int(s) for s in STOP_SIGNALS} <= _blocked(native_id)


def test_the_main_thread_receives_the_stop_signals() -> None:
    assert not _blocked(threading.main_thread().native_id) & {int(s) for s in STOP_SIGNALS}


def test_the_idle_watcher_leaves_them_to_the_main_thread() -> None:
    class Reader:
        def __init__(self) -> None:
            self.called = threading.Event()

        def _run_idle_callback(self) -> None:
            self.called.set()

    fake = Reader()
    watcher = reader._IdleWatcher(fake, 0.001)  # type: ignore[arg-type]
    watcher.start()
    try:
        assert fake.called.wait(10)  # the loop runs, so the mask is set
        assert _blocks_the_stop_signals(watcher.native_id)
    finally:
        watcher.stop()


def test_the_lock_heartbeat_leaves_them_to_the_main_thread() -> None:
    renewed = threading.Event()

    class Lock:
        def renew(self) -> bool:
            renewed.set()
            return True

    lock = Lock()
    stop = threading.Event()
    heartbeat = threading.Thread(
        target=objectstore._heartbeat, args=(weakref.ref(lock), stop, 0.001), daemon=True
    )
    heartbeat.start()
    try:
        assert renewed.wait(10)  # a renewal comes after the mask is set
        assert _blocks_the_stop_signals(heartbeat.native_id)
    finally:
        stop.set()
        heartbeat.join()


def test_the_journal_writer_leaves_them_to_the_main_thread() -> None:
    seen: list[bool] = []

    def write(_: str) -> None:
        seen.append(_blocks_the_stop_signals(threading.get_native_id()))

    writes.BackgroundCall(write, "line").wait()
    assert seen == [True]


def test_the_part_writer_leaves_them_to_the_main_thread() -> None:
    seen: list[bool] = []

    def write() -> None:
        seen.append(_blocks_the_stop_signals(threading.get_native_id()))

    worker = writes.PartWrites(overlap=True)
    try:
        worker.submit(write)
        worker.wait()
    finally:
        worker.close()
    assert seen == [True]
