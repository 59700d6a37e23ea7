"""Run `tap-rapid7 | target-parquet-parts` as real processes and compare the dataset with truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

BIN = Path(sys.executable).parent
TAP = str(BIN / "tap-rapid7")
TARGET = str(BIN / "target-parquet-parts")


@dataclass
class Pipeline:
    """A running tap | target pair; the target's stdout is read line by line."""

    tap: subprocess.Popen
    target: subprocess.Popen
    workdir: Path
    states: list[dict] = field(default_factory=list)

    def next_state(self) -> dict | None:
        """Block until the target emits its next STATE line (None at end of output)."""
        for raw in self.target.stdout:
            line = raw.strip()
            if line:  # a Singer target prints each completed state value, one per line
                value = json.loads(line)
                self.states.append(value)
                return value
        return None

    def finish(self) -> list[dict]:
        """Read the target's output to the end; both processes must succeed."""
        try:
            while self.next_state() is not None:
                pass
            target_rc = self.target.wait(timeout=120)
            tap_rc = self.tap.wait(timeout=120)
        finally:
            self.close()
        assert tap_rc == 0, f"tap failed ({tap_rc}): {self.stderr('tap')[-3000:]}"
        assert target_rc == 0, f"target failed ({target_rc}): {self.stderr('target')[-3000:]}"
        return self.states

    def kill(self) -> list[dict]:
        """SIGKILL both processes, then collect the STATE lines the target had written."""
        try:
            for process in (self.tap, self.target):
                os.kill(process.pid, signal.SIGKILL)
            while self.next_state() is not None:
                pass
            self.target.wait(timeout=30)
            self.tap.wait(timeout=30)
        finally:
            self.close()
        return self.states

    def close(self) -> None:
        """Kill whatever still runs, reap both processes and close the pipe we read from."""
        for process in (self.tap, self.target):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        if self.target.stdout is not None:
            self.target.stdout.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stderr(self, who: str) -> str:
        return (self.workdir / f"{who}.stderr").read_text(errors="replace")


def start(workdir: Path, tap_config: dict, target_config: dict, state: dict | None = None,
          run: str = "run") -> Pipeline:  # fmt: skip
    """Start `tap-rapid7 --config c.json [--state s.json] | target-parquet-parts --config t.json`.

    Both are the installed console scripts, as a user runs them.
    """
    workdir = workdir / run
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "c.json").write_text(json.dumps(tap_config))
    (workdir / "t.json").write_text(json.dumps(target_config))
    tap_cmd = [TAP, "--config", str(workdir / "c.json")]
    if state is not None:
        (workdir / "s.json").write_text(json.dumps(state))
        tap_cmd += ["--state", str(workdir / "s.json")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        (workdir / "tap.stderr").open("wb") as tap_err,
        (workdir / "target.stderr").open("wb") as t_err,
    ):
        tap = subprocess.Popen(tap_cmd, stdout=subprocess.PIPE, stderr=tap_err, env=env)
        target = subprocess.Popen(
            [TARGET, "--config", str(workdir / "t.json")],
            stdin=tap.stdout, stdout=subprocess.PIPE, stderr=t_err, env=env, text=True,
        )  # fmt: skip
    tap.stdout.close()  # the target owns the read end now
    return Pipeline(tap, target, workdir)


def dataset_keys(output_dir: Path, stream: str = "events") -> list[tuple[str, int, str]]:
    """Every row's identity ``(log_id, timestamp, sequence_number_str)`` in the stream's parts."""
    rows: list[tuple[str, int, str]] = []
    for part in sorted((output_dir / stream).rglob("part-*.parquet")):
        table = pq.read_table(part, columns=["log_id", "timestamp", "sequence_number_str"])
        columns = table.to_pydict()
        rows.extend(
            zip(
                columns["log_id"], columns["timestamp"], columns["sequence_number_str"], strict=True
            )
        )
    return rows


@dataclass
class Comparison:
    expected: int
    got: int
    missing: int
    duplicates: int
    outside: int

    def line(self, case: str) -> str:
        return (
            f"E2E case={case} expected={self.expected} got={self.got} missing={self.missing} "
            f"duplicates={self.duplicates} out_of_window={self.outside}"
        )

    @property
    def exact(self) -> bool:
        return self.expected == self.got and not (self.missing or self.duplicates or self.outside)


def compare(truth: list[tuple[str, int, str]], rows: list[tuple[str, int, str]]) -> Comparison:
    """Dataset rows against the emulator's truth, both by identity ``(log_id, ts, seq_str)``:
    missing, written twice, not in the window."""
    expected = set(truth)
    counts = Counter(rows)
    return Comparison(
        expected=len(expected),
        got=len(rows),
        missing=len(expected - counts.keys()),
        duplicates=sum(n - 1 for n in counts.values() if n > 1),
        outside=len(counts.keys() - expected),
    )


def final_cursor(states: list[dict]) -> dict[str, tuple[int, str]]:
    """Per log that has started: (next_from_millis, tie-breaker) of the last STATE."""
    parts = states[-1]["bookmarks"]["events"]["partitions"]
    return {
        p["context"]["log_id"]: (p["next_from_millis"], p["next_from_sequence_number_str"])
        for p in parts
        if "next_from_millis" in p
    }
