"""Parts written behind the reader: one batch encoded and made durable while the next is read.

Why: decoding the input holds the GIL, while Parquet encoding, zstd compression, fsync and an
upload mostly release it. On a machine with two cores, writing a batch on a worker thread while
the main thread goes on decoding the next one makes the target faster than a single-threaded
decode-then-write loop. The same mechanism serves local parts (encode, fsync, journal, rename)
and object-store parts (encode, journal PUT, part PUT): the sink hands the whole write of a
flushed batch over (``PartWrites.submit``), whatever the storage does inside it.

What stays true (``target.py`` relies on it):

* **One batch in flight, at most.** ``submit`` waits until the worker has finished the previous
  batch before it hands over the next one: a second batch never queues, whatever the batch size.
  So memory holds at most the batch being written, the next one's Arrow table waiting for the
  worker, and the records being read.
* **In order.** One worker runs the batches in the order they were handed over; ``done`` counts
  the finished ones, ``submitted`` the handed-over ones. A STATE is emitted once ``done`` reaches
  the ``submitted`` count taken when its last record was handed over, so every part before it is
  durable (the journal line of each part still goes before the part inside the write).
* **A failure stops everything after it.** The worker keeps the error and runs nothing more;
  the next ``submit``, ``wait`` or ``raise_if_failed`` (which guards every STATE) raises that
  same error on the caller's thread: the run ends with the one line the write would have given
  on the reading thread, and no later STATE.
* **Bounded waits.** A wait for the worker runs in slices; between slices ``check`` runs (the
  run lock's lease check: a lease lost while waiting stops the run). The worker's own steps
  have their deadlines (object-store requests end within the lease; see ``objectstore.py``).
* **Signals stay with the main thread** (``threads.py``): the worker blocks SIGTERM and SIGINT.

``overlap_writes: false`` runs each write on the caller's thread instead (``PartWrites`` with
``overlap=False``): the same counters, no thread.
"""

from __future__ import annotations

import logging
import threading
import typing as t

from target_parquet_parts.threads import leave_stop_signals_to_main_thread

if t.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BackgroundCall", "PartWrites"]

logger = logging.getLogger(__name__)

# How often a waiting caller looks at the run lock's lease (and lets the interpreter run a
# signal handler, though a lock wait is interrupted by signals anyway).
_WAIT_SLICE_SECONDS = 0.5
# How long closing waits for a write still running after a failure elsewhere (a local fsync
# or an upload, each bounded by its own deadline) before giving up on it.
_CLOSE_SECONDS = 120.0


class PartWrites:
    """The worker that writes handed-over batches, one at a time, in order (module docstring)."""

    def __init__(
        self,
        *,
        overlap: bool,
        on_done: Callable[[], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self.overlap = overlap
        self.submitted = 0  # batches handed over (or, without overlap, written)
        self.done = 0  # batches durable, in hand-over order
        self._on_done = on_done
        self._check = check
        self._cond = threading.Condition()
        self._job: Callable[[], None] | None = None  # handed over, not finished
        self._job_counts = True  # the job is a batch a STATE may wait for (submit)
        self._error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- the caller's side --------------------------------------------------------------------
    def submit(self, job: Callable[[], None], *, counts: bool = True) -> None:
        """Hand ``job`` (write one batch's parts) over; wait while the previous one runs.

        Without overlap, ``job`` runs here. Raises the error of an earlier write, if any.
        ``counts=False``: a job no STATE waits for, as it writes nothing (opening a catalog
        ahead of its first use): not in ``submitted`` nor ``done``, in order all the same.
        """
        if not self.overlap:
            self.raise_if_failed()
            try:
                job()
            except BaseException as exc:
                self._error = exc
                raise
            self.submitted += 1
            self.done += 1
            if self._on_done is not None:
                self._on_done()
            return
        with self._cond:
            self._wait_until(lambda: self._job is None)
            self._raise_error()
            self._job = job
            self._job_counts = counts
            if counts:
                self.submitted += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="target-parquet-parts-writer", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait(self) -> None:
        """Return once every handed-over batch is durable; raise a write's error."""
        if self.overlap:
            with self._cond:
                self._wait_until(lambda: self._job is None)
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        """Raise the error a write failed with (the same error, every time)."""
        with self._cond:
            self._raise_error()

    @property
    def failed(self) -> bool:
        """A write failed: nothing after it may be emitted."""
        return self._error is not None

    @property
    def idle(self) -> bool:
        """No batch is being written."""
        return self._job is None

    def close(self) -> None:
        """Stop the worker after the write it is running (the run ended or failed).

        Never raises a write's error (``wait`` does): after a failure elsewhere, the part in
        flight still lands, journaled, as it would have on the reading thread.
        """
        thread = self._thread
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(_CLOSE_SECONDS)
            if thread.is_alive():  # pragma: no cover - a write past every deadline
                logger.warning(
                    "a part write still runs %.0f s after the run ended; not waiting for it",
                    _CLOSE_SECONDS,
                )

    def _wait_until(self, ready: Callable[[], bool]) -> None:
        """Wait (holding ``_cond``) until ``ready()`` or a write failed, checking the lease."""
        while not ready() and self._error is None:
            if self._thread is not None and not self._thread.is_alive():  # pragma: no cover
                msg = "the part writer thread ended without finishing its write"
                raise RuntimeError(msg)
            if self._check is not None:
                self._check()  # a lease lost while waiting stops the run here
            self._cond.wait(_WAIT_SLICE_SECONDS)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the worker's side --------------------------------------------------------------------
    def _run(self) -> None:
        leave_stop_signals_to_main_thread()
        while True:
            with self._cond:
                while self._job is None and not self._closing:
                    self._cond.wait()
                job = self._job
                if job is None:
                    return
                counts = self._job_counts
            try:
                job()
            except BaseException as exc:  # handed to the caller by submit / wait
                with self._cond:
                    self._error = exc
                    self._job = None
                    self._cond.notify_all()
                self._tell()  # wake the STATE check, which raises the error
                return  # nothing after a failed write is written
            with self._cond:
                if counts:
                    self.done += 1
                self._job = None
                self._cond.notify_all()
            if counts:
                self._tell()

    def _tell(self) -> None:
        if self._on_done is not None:
            try:
                self._on_done()
            except Exception:  # pragma: no cover - a notification must not kill the worker
                logger.exception("part writer: the completion callback failed")


class BackgroundCall:
    """``function(argument)`` on its own thread; ``wait()`` joins it and re-raises its error.

    Within one part's write on an object store: the journal line's PUT runs while the part is
    encoded (``objectstore.ObjectPartWriter``).
    """

    def __init__(self, function: Callable[[str], None], argument: str) -> None:
        self._function = function
        self._argument = argument
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="target-parquet-parts-journal")
        self._thread.start()

    def _run(self) -> None:
        leave_stop_signals_to_main_thread()
        try:
            self._function(self._argument)
        except BaseException as exc:  # handed to the writer's thread by wait()
            self._error = exc

    def wait(self, *, raise_error: bool = True) -> None:
        """Join the thread (its request has its own deadline), then raise its error."""
        self._thread.join()
        if self._error is not None and raise_error:
            error, self._error = self._error, None
            raise error
