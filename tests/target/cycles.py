"""Crash and cancel loops: a tap-like feeder, a real target process, a stop at a chosen point.

One cycle starts the target, feeds it events ``start..total-1`` with a STATE (``{"last": i}``)
every ``state_every`` records, watches its stdout (STATE lines) and stderr (log lines) as they
come, and stops it (signal, ``kill -9``) when ``trigger`` says so. The next cycle resumes from the
last STATE the target wrote, as an orchestrator would. No sleeps: ``select`` on the two pipes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from target_parquet_parts.storage import arrow_filesystem
from tests.target.conftest import TARGET_BIN, part_files
from tests.target.singer_data import (
    BASE_SEQUENCE,
    event,
    record_message,
    schema_message,
    state_message,
)

_CHUNK = 200  # lines per write to the pipe


@dataclass
class Cycle:
    """What one run did, as seen from outside (filled while it runs)."""

    start: int
    states: list[Any] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    sent: int = 0  # records written to the pipe: an upper bound on what the target read
    paused: threading.Event = field(default_factory=threading.Event)
    pause_state: Any = None  # the STATE sent just before the feeder went quiet
    triggered: bool = False
    returncode: int | None = None

    @property
    def resume_from(self) -> int | None:
        """First record to send again (after the last STATE written), None if none written."""
        return self.states[-1]["last"] + 1 if self.states else None

    def journal_keys_loaded(self) -> int:
        """Keys the run read back from the journal at start (0 when it loaded none)."""
        total = 0
        for line in self.stderr:
            match = re.search(r"journal_loaded stream=\S+ parts=\d+ keys=(\d+)", line)
            if match:
                total += int(match.group(1))
        return total


def run_cycle(
    workdir: Path,
    *,
    start: int,
    total: int,
    state_every: int,
    config: dict[str, Any],
    trigger: Callable[[Cycle, str, str], bool],
    action: Callable[[subprocess.Popen], None],
    pause_after: int | None = None,
    feeder_trigger: int | None = None,
    env: dict[str, str] | None = None,
) -> Cycle:
    """Run the target once from record ``start`` (see module docstring).

    ``trigger(cycle, kind, line)`` is asked for each stdout (``kind == "out"``) and stderr line;
    the first True runs ``action(proc)``. ``pause_after``: the feeder sends that many records and
    a STATE (0: the SCHEMA alone), then goes quiet (the tap waiting on a slow query) until the
    target exits.
    ``feeder_trigger``: the feeder itself runs ``action`` after writing that many records.
    ``env``: added to the target's environment (an object store's endpoint and credentials).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"target-{start}-{len(list(workdir.glob('target-*.json')))}.json"
    config_path.write_text(json.dumps(config))
    cycle = Cycle(start)
    done = threading.Event()
    fire_lock = threading.Lock()

    with subprocess.Popen(
        [TARGET_BIN, "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    ) as proc:

        def fire() -> None:
            with fire_lock:
                if not cycle.triggered:
                    cycle.triggered = True
                    action(proc)

        feeder = threading.Thread(
            target=_feed,
            kwargs={
                "proc": proc,
                "cycle": cycle,
                "total": total,
                "state_every": state_every,
                "pause_after": pause_after,
                "feeder_trigger": feeder_trigger,
                "fire": fire,
                "done": done,
            },
            name="feeder",
        )
        feeder.start()
        try:
            _watch(proc, cycle, trigger, fire)
            cycle.returncode = proc.wait()
        finally:
            done.set()
            feeder.join()
    return cycle


def _feed(
    *,
    proc: subprocess.Popen,
    cycle: Cycle,
    total: int,
    state_every: int,
    pause_after: int | None,
    feeder_trigger: int | None,
    fire: Callable[[], None],
    done: threading.Event,
) -> None:
    stdin = proc.stdin
    assert stdin is not None
    try:
        lines = [schema_message()]
        if pause_after == 0:  # the SCHEMA only, then quiet: a run stopped before any record
            stdin.write((lines[0] + "\n").encode("utf-8"))
            stdin.flush()
            cycle.paused.set()
            done.wait()
            return
        for i in range(cycle.start, total):
            lines.append(record_message(event(i)))
            count = i + 1 - cycle.start
            if (i + 1) % state_every == 0 or i + 1 == total:
                lines.append(state_message({"last": i}))
            if count == pause_after:
                if not lines[-1].startswith('{"type": "STATE"'):
                    lines.append(state_message({"last": i}))
                cycle.pause_state = {"last": i}
            if len(lines) >= _CHUNK or count in (pause_after, feeder_trigger):
                stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
                stdin.flush()
                cycle.sent = count
                lines = []
            if count == feeder_trigger:
                fire()
            if count == pause_after:
                cycle.paused.set()
                done.wait()  # quiet until the target has exited
                return
        if lines:
            stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
            stdin.flush()
        cycle.sent = total - cycle.start
    except (BrokenPipeError, ConnectionResetError):
        pass  # the target stopped reading: what a tap sees when its target goes away
    finally:
        with contextlib.suppress(BrokenPipeError):
            stdin.close()


def _watch(
    proc: subprocess.Popen,
    cycle: Cycle,
    trigger: Callable[[Cycle, str, str], bool],
    fire: Callable[[], None],
) -> None:
    assert proc.stdout is not None
    assert proc.stderr is not None
    kinds = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    pending = dict.fromkeys(kinds, b"")
    open_fds = set(kinds)
    while open_fds:
        ready, _, _ = select.select(sorted(open_fds), [], [])
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                open_fds.discard(fd)  # a torn last line (kill -9) is dropped with the buffer
                continue
            *complete, pending[fd] = (pending[fd] + chunk).split(b"\n")
            for raw in complete:
                text = raw.decode("utf-8", errors="replace")
                if kinds[fd] == "out":
                    if text.strip():
                        cycle.states.append(json.loads(text))
                else:
                    cycle.stderr.append(text)
                if not cycle.triggered and trigger(cycle, kinds[fd], text):
                    fire()


def dataset_indexes(out: Path | str) -> list[int]:
    """Record numbers of every row in the dataset (duplicates included): a local directory or
    an object-store URI (read as the target's readers do, ``storage.arrow_filesystem``)."""
    if isinstance(out, Path) or "://" not in out:
        indexes: list[int] = []
        for part in part_files(Path(out)):
            column = pq.read_table(part, columns=["sequence_number"]).column(0)
            indexes.extend(seq - BASE_SEQUENCE for seq in column.to_pylist())
        return indexes
    filesystem, root = arrow_filesystem(out)
    selector = pafs.FileSelector(f"{root}/events", recursive=True, allow_not_found=True)
    parts = [
        info.path
        for info in filesystem.get_file_info(selector)
        if info.base_name.startswith("part-") and info.base_name.endswith(".parquet")
    ]
    if not parts:
        return []
    table = ds.dataset(parts, filesystem=filesystem, format="parquet").to_table(
        columns=["sequence_number"]
    )
    return [seq - BASE_SEQUENCE for seq in table.column(0).to_pylist()]
