"""The target's own background threads leave SIGTERM and SIGINT to the main thread.

A process-directed signal goes to any thread that does not block it. Python runs the handler on
the main thread, but only once that thread executes bytecode again: when the kernel picks a
background thread while the main thread is blocked reading stdin (a tap that went quiet), the
stop waits for the next input line, possibly forever. Every thread the target starts itself
(the idle watcher, the lock heartbeat, the journal writer) therefore blocks both signals first,
so the kernel delivers them to the main thread, whose read is interrupted at once. Threads
started by libraries (pyarrow's, pyiceberg's pools) are not ours to change.
"""

from __future__ import annotations

import signal

__all__ = ["STOP_SIGNALS", "leave_stop_signals_to_main_thread"]

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def leave_stop_signals_to_main_thread() -> None:
    """Block SIGTERM and SIGINT in the calling thread (call it first in a thread's run)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
