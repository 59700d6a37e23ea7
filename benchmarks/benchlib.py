"""Shared pieces of the benchmark scripts: Rapid7-shaped Singer records, child processes, output.

Every benchmark compares the product against a baseline measured in the same run, because the
machines are shared and noisy: absolute times mean little, ratios mean more. Child processes are
reaped with ``os.wait4`` so that each one's own CPU time is known exactly (not the sum over all
children, as ``RUSAGE_CHILDREN`` would give); peak RSS comes from sampling ``VmHWM`` in /proc
(see ``PeakRssWatcher``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

from tap_rapid7.streams import EventsStream

STREAM = "events"
# A fixed epoch (2026-11-01T00:00:00Z) keeps generated data and partitions reproducible.
BASE_MILLIS = 1_793_491_200_000
BASE_SEQUENCE = 3_237_201_778_429_120_512  # > 2**53: exact int64 handling matters
LOG_IDS = [str(uuid.UUID(int=0x5EED_0000_0000_4000_8000_0000_0000_0000 + n)) for n in range(8)]
LABEL = [{"id": "00000000-0000-0000-0000-000000000006"}]

# The tap's own `events` stream schema and key: the benchmarks measure what the pipeline carries.
EVENTS_SCHEMA: dict[str, Any] = EventsStream.schema
KEY_PROPERTIES = list(EventsStream.primary_keys)

_encode = msgspec.json.Encoder().encode

# The environment of every measured process. PYTHONUNBUFFERED is removed by default: `meltano run`
# does not set it, so a user's tap and target get block-buffered stdout. Some environments (many
# Docker images, CI) set it; `--unbuffered` measures that case (see add_env_argument).
CHILD_ENV: dict[str, str] = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def parse_run_sizes(description: str, default_records: int) -> tuple[int, int]:
    """The comparing scripts' common command line: (records, repeat), the environment applied.

    ``--quick`` (3,000 records, 1 run: the smoke test), ``--records`` (``default_records``),
    ``--repeat`` (runs of each, best counts: 2) and ``--unbuffered``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument(
        "--records", type=int, help=f"records through the target ({default_records})"
    )
    parser.add_argument("--repeat", type=int, help="runs of each, best counts (2; quick: 1)")
    add_env_argument(parser)
    args = parser.parse_args()
    configure_env(args)
    records = args.records or (3_000 if args.quick else default_records)
    return records, args.repeat or (1 if args.quick else 2)


def add_env_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--unbuffered`` flag every benchmark takes."""
    parser.add_argument(
        "--unbuffered",
        action="store_true",
        help="run the measured processes with PYTHONUNBUFFERED=1 (default: without it)",
    )


def configure_env(args: argparse.Namespace) -> None:
    """Apply ``--unbuffered`` to ``CHILD_ENV``."""
    if args.unbuffered:
        CHILD_ENV["PYTHONUNBUFFERED"] = "1"
    else:
        CHILD_ENV.pop("PYTHONUNBUFFERED", None)


def schema_line() -> bytes:
    """The SCHEMA message for the `events` stream, newline-terminated."""
    message = {
        "type": "SCHEMA",
        "stream": STREAM,
        "schema": EVENTS_SCHEMA,
        "key_properties": KEY_PROPERTIES,
        "bookmark_properties": [EventsStream.replication_key],
    }
    return _encode(message) + b"\n"


def make_record(index: int) -> dict[str, Any]:
    """Record number ``index``: deterministic, realistic sizes (about 450 bytes as a line).

    Several records share a millisecond (sequence step 4096 inside it, as the API does); one in
    64 has a label, one in 50 has a message that is not JSON (Rapid7 messages are raw text).
    """
    millis = BASE_MILLIS + index // 3 * 7
    when = dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)
    iso = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if index % 50 == 7:
        message = f"<134>1 {iso} fw01 kernel - - DROP IN=eth0 SRC=10.1.{index % 250}.9 DPT=443"
    else:
        message = _encode(
            {
                "timestamp": iso,
                "user": f"user{index % 977}@corp",
                "source_ip": f"10.{index % 256}.{index // 256 % 256}.{index % 7 + 1}",
                "action": "LOGIN",
                "result": "SUCCESS" if index % 11 else "FAILED",
                "host": f"host-{index % 131:03d}",
            }
        ).decode()
    sequence = BASE_SEQUENCE + index * 4096
    return {
        "log_id": LOG_IDS[index % len(LOG_IDS)],
        "timestamp": millis,
        "sequence_number": sequence,
        "sequence_number_str": str(sequence),
        "message": message,
        "labels": LABEL if index % 64 == 5 else [],
        "received_at": when.isoformat(timespec="milliseconds"),  # as the tap writes it
        # the message's own time, as the tap extracts it with event_time_fields set
        "event_time": (when - dt.timedelta(seconds=index % 23)).isoformat(timespec="milliseconds"),
    }


def record_line(index: int) -> bytes:
    """Record ``index`` as a Singer RECORD line."""
    message = {
        "type": "RECORD",
        "stream": STREAM,
        "record": make_record(index),
        "time_extracted": "2026-11-26T07:00:00.000000+00:00",
    }
    return _encode(message) + b"\n"


def state_line(index: int) -> bytes:
    """A STATE message naming the last record sent (what a tap emits now and then)."""
    return _encode({"type": "STATE", "value": {"bookmarks": {STREAM: {"last": index}}}}) + b"\n"


def singer_lines(count: int, state_every: int = 10_000) -> Iterator[bytes]:
    """SCHEMA, ``count`` RECORD lines with a STATE every ``state_every`` records, a final STATE."""
    yield schema_line()
    for index in range(count):
        yield record_line(index)
        if (index + 1) % state_every == 0:
            yield state_line(index)
    yield state_line(count - 1)


def write_singer_file(path: Path, count: int) -> int:
    """Write the Singer stream of ``count`` records to ``path``; return its size in bytes."""
    size = 0
    with path.open("wb") as handle:
        buffer: list[bytes] = []
        for line in singer_lines(count):
            buffer.append(line)
            if len(buffer) >= 4096:
                size += handle.write(b"".join(buffer))
                buffer.clear()
        size += handle.write(b"".join(buffer))
    return size


@dataclass
class ChildResult:
    """How one child process ran: wall seconds, own CPU seconds, own peak RSS."""

    returncode: int
    wall_seconds: float
    cpu_seconds: float
    max_rss_mib: float


def run_child(
    argv: Sequence[str],
    *,
    stdin: IO[bytes] | int | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
    feed: Iterator[bytes] | None = None,
    env: dict[str, str] | None = None,
) -> ChildResult:
    """Run ``argv`` to completion and measure it; ``feed`` streams lines to its stdin."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if feed is not None else stdin,
        stdout=stdout,
        stderr=stderr,
        env=CHILD_ENV if env is None else env,
    )
    watcher = PeakRssWatcher(process.pid)
    if feed is not None:
        assert process.stdin is not None
        try:
            buffer: list[bytes] = []
            for line in feed:
                buffer.append(line)
                if len(buffer) >= 2048:
                    process.stdin.write(b"".join(buffer))
                    buffer.clear()
            process.stdin.write(b"".join(buffer))
        except BrokenPipeError:
            pass  # the child died early; its return code says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
    return wait_child(process, started, watcher)


class PeakRssWatcher:
    """Samples a process's ``VmHWM`` (its own peak RSS) from /proc until it exits.

    ``ru_maxrss`` from ``wait4`` cannot be used: a child started with vfork/fork inherits the
    parent's high-water mark at exec time, so a big benchmark process (an emulator holding data)
    would inflate every child's figure. ``VmHWM`` belongs to the child's own address space and
    only grows, so the last sample before exit is its peak (within one sampling period).
    """

    def __init__(self, pid: int, period_seconds: float = 0.02) -> None:
        self.peak_kib = 0
        self._path = Path(f"/proc/{pid}/status")
        self._period = period_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            text = self._path.read_text()
        except OSError:
            return  # exited (or a zombie whose status no longer has memory lines)
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                return

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._period)

    def stop(self) -> float:
        """Stop sampling; return the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def wait_child(
    process: subprocess.Popen[bytes], started: float, watcher: PeakRssWatcher | None = None
) -> ChildResult:
    """Reap ``process`` with ``wait4`` to get its own CPU time; ``started`` is perf_counter()."""
    if watcher is None:
        watcher = PeakRssWatcher(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return ChildResult(
        returncode=process.returncode,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        max_rss_mib=watcher.stop(),
    )


def venv_bin(name: str) -> str:
    """Path of a console script installed next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    if not candidate.exists():
        raise SystemExit(f"{name} not found next to {sys.executable}: install the project first")
    return str(candidate)


def fail_unless_ok(name: str, result: ChildResult, stderr_path: Path | None = None) -> None:
    """Stop the benchmark loudly when a child failed, showing the end of its stderr."""
    if result.returncode == 0:
        return
    tail = ""
    if stderr_path is not None and stderr_path.exists():
        tail = "\n".join(stderr_path.read_text(errors="replace").splitlines()[-20:])
    raise SystemExit(f"{name} exited with {result.returncode}\n{tail}")


def rate(count: float, seconds: float) -> float:
    """Items per second, guarding against a zero duration."""
    return count / seconds if seconds > 0 else float("inf")


def print_header(title: str, details: dict[str, Any]) -> None:
    """One line naming the benchmark and its parameters, for the record."""
    details = {
        **details,
        "PYTHONUNBUFFERED": CHILD_ENV.get("PYTHONUNBUFFERED", "unset"),
        "cpus": os.cpu_count(),
        "loadavg_1m": f"{os.getloadavg()[0]:.2f}",  # how busy the machine was: read ratios so
    }
    fields = " ".join(f"{key}={value}" for key, value in details.items())
    print(f"== {title}: {fields}", flush=True)


def print_ratio(name: str, value: float, goal: str, met: bool) -> None:
    """The line the smoke test and the README look for: ``RATIO name=value goal=... met=...``."""
    print(f"RATIO {name}={value:.3f} goal={goal} met={'yes' if met else 'no'}", flush=True)
    # the load when the ratio was taken (the header has it at the start): a shared machine
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"context: {name} loadavg_1m_5m_15m={load}", flush=True)


def profiled(argv: Sequence[str], profile_path: Path) -> list[str]:
    """``argv`` (a console script and its arguments) run under cProfile, saving to a file."""
    if Path(argv[0]).name.startswith("python"):
        argv = argv[1:]  # profile the script the interpreter would run
    script, *rest = argv
    return [sys.executable, "-m", "cProfile", "-o", str(profile_path), script, *rest]


def print_profile(profile_path: Path, limit: int = 25) -> None:
    """Print the top of a cProfile file, by own time and by cumulative time."""
    import pstats

    for order in ("tottime", "cumulative"):
        print(f"-- profile {profile_path.name} sorted by {order} (top {limit})", flush=True)
        stats = pstats.Stats(str(profile_path), stream=sys.stdout)
        stats.strip_dirs().sort_stats(order).print_stats(limit)
        sys.stdout.flush()


def print_run(
    name: str, items: int, result: ChildResult, unit: str = "records", **extra: Any
) -> None:
    """One line of figures for one measured process."""
    fields = {
        unit: items,
        **extra,
        "wall_s": f"{result.wall_seconds:.2f}",
        "cpu_s": f"{result.cpu_seconds:.2f}",
        f"{unit}_per_s": f"{rate(items, result.wall_seconds):.0f}",
        "max_rss_mib": f"{result.max_rss_mib:.0f}",
    }
    print(f"{name}: " + " ".join(f"{key}={value}" for key, value in fields.items()), flush=True)
