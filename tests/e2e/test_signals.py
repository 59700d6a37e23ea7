"""SIGTERM / SIGINT stop the tap between records, with an honest STATE (issue 11, finding 9).

The SDK's handler wrote STATE and exited 0 from wherever the main thread was: a scheduler that
cancelled the run saw success. Now the tap stops between two records, the last STATE is the
cursor of the last RECORD written (never ahead: resuming from it loses nothing), and the exit
code is 128 + the signal's number.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tap_rapid7.windows import Cursor, iso_to_millis
from tests.e2e.pipeline import TAP
from tests.tap.loopback import LoopbackServer, read_request

pytestmark = pytest.mark.e2e

START = "2026-03-01T00:00:00Z"
END = "2026-03-01T00:10:00Z"


def tap_command(workdir: Path, config: dict, state: dict | None, name: str) -> list[str]:
    (workdir / f"{name}.json").write_text(json.dumps(config))
    command = [TAP, "--config", str(workdir / f"{name}.json")]
    if state is not None:
        (workdir / f"{name}-state.json").write_text(json.dumps(state))
        command += ["--state", str(workdir / f"{name}-state.json")]
    return command


def run_and_signal(
    command: list[str], stderr: Path, signum: int, after_records: int
) -> tuple[int, list[dict]]:
    """Run the tap, send ``signum`` once ``after_records`` RECORD lines were read, read the rest."""
    messages: list[dict] = []
    records = 0
    with (
        stderr.open("wb") as err,
        # PYTHONUNBUFFERED=1 (many images and CI set it): a signal can cut a write in pieces
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        ) as tap,
    ):
        assert tap.stdout is not None
        for raw in tap.stdout:
            message = json.loads(raw)  # every line whole: the tap never stops mid-line
            messages.append(message)
            if message["type"] == "RECORD" and message["stream"] == "events":
                records += 1
                if records == after_records:
                    tap.send_signal(signum)
        code = tap.wait(timeout=120)
    return code, messages


def events_of(messages: list[dict]) -> list[tuple[str, int, str]]:
    return [
        (m["record"]["log_id"], m["record"]["timestamp"], m["record"]["sequence_number_str"])
        for m in messages
        if m["type"] == "RECORD" and m["stream"] == "events"
    ]


def cursors(state: dict) -> dict[str, Cursor]:
    partitions = state.get("bookmarks", {}).get("events", {}).get("partitions", [])
    found = {p["context"]["log_id"]: Cursor.from_state(p) for p in partitions}
    return {log_id: cursor for log_id, cursor in found.items() if cursor is not None}


@pytest.mark.parametrize(
    ("signum", "concurrency"),
    [(signal.SIGTERM, 1), (signal.SIGTERM, 4), (signal.SIGINT, 4)],
)
def test_a_signal_stops_between_records_with_a_state_that_resumes_exactly(
    emulator_factory, tmp_path, signum, concurrency
):
    emu = emulator_factory(
        seed=11, log_count=3, events_per_second=3.0, burst_probability=0.2, burst_size=100
    )
    config = {
        "api_key": emu.api_key, "base_url": emu.base_url, "log_ids": emu.log_ids,
        "start_date": START, "end_date": END, "window_seconds": 120, "per_page": 100,
        "poll_interval_seconds": 0.005, "poll_interval_max_seconds": 0.05,
        "max_concurrent_queries": concurrency, "logs_per_query": 1,
    }  # fmt: skip
    truth = emu.truth(iso_to_millis(START), iso_to_millis(END))
    assert len(truth) > 2000
    code, first = run_and_signal(
        tap_command(tmp_path, config, None, "first"), tmp_path / "first.stderr", signum, 700
    )
    stderr = (tmp_path / "first.stderr").read_text()
    assert code == 128 + signum, stderr[-3000:]
    assert f"tap_stopped signal={signal.Signals(signum).name} exit_code={128 + signum}" in stderr
    assert first[-1]["type"] == "STATE"
    emitted = events_of(first)
    assert 700 <= len(emitted) < len(truth)  # stopped soon after the signal, not at the end
    state = first[-1]["value"]
    stored = cursors(state)
    for log_id in emu.log_ids:
        mine = [(ts, int(seq)) for log, ts, seq in emitted if log == log_id]
        cursor = stored.get(log_id)
        # every record written is covered by the last STATE ...
        assert all(cursor is not None and cursor.already_emitted(*key) for key in mine)
        # ... and the STATE is never ahead of them: what it claims was written, was
        claimed = {
            (ts, seq) for log, ts, seq in truth
            if log == log_id and cursor is not None and cursor.already_emitted(ts, int(seq))
        }  # fmt: skip
        assert claimed <= {(ts, seq) for log, ts, seq in emitted if log == log_id}

    resumed = subprocess.run(
        tap_command(tmp_path, config, state, "second"), capture_output=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = [json.loads(line) for line in resumed.stdout.splitlines()]
    together = emitted + events_of(second)
    assert sorted(set(together)) == sorted(truth)  # nothing lost
    assert len(together) == len(truth)  # and nothing twice


def silent(conn, server) -> None:
    """A server that takes the request and never answers."""
    server.record(read_request(conn))
    server.stopped.wait()


def waiting_config(server: LoopbackServer) -> dict:
    """The tap against ``silent``: it waits for an answer (request_timeout_seconds 300)."""
    return {
        "api_key": "k-signal-test-0123", "base_url": server.url, "log_ids": ["log-a"],
        "start_date": START, "end_date": END, "request_timeout_seconds": 300,
        "max_concurrent_queries": 1,
    }  # fmt: skip


def test_a_signal_while_waiting_for_the_api_stops_at_once(tmp_path):
    """The tap waits on a server that never answers (request_timeout_seconds 300): the signal
    ends the wait instead of letting it run out."""
    state = {"bookmarks": {"events": {"partitions": [
        {"context": {"log_id": "log-a"}, "next_from_millis": iso_to_millis(START),
         "next_from_sequence_number_str": "7"},
    ]}}}  # fmt: skip
    with LoopbackServer(silent) as server:
        command = tap_command(tmp_path, waiting_config(server), state, "waiting")
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tap:
            assert server.request_seen.wait(timeout=60)  # the tap is waiting for its answer
            tap.send_signal(signal.SIGTERM)
            out, err = tap.communicate(timeout=60)
    assert tap.returncode == 143, err.decode()[-3000:]
    messages = [json.loads(line) for line in out.splitlines()]
    assert [m["type"] for m in messages if m["type"] != "SCHEMA"] == ["STATE", "STATE"]
    assert cursors(messages[-1]["value"]) == cursors(state)  # the state it has: nothing read
    assert b"tap_stopped signal=SIGTERM exit_code=143" in err


def test_a_cancel_that_closed_the_target_first_still_exits_128_plus_signal(tmp_path):
    """A cancel stops the target too, and it stops reading first: the tap's STATE write then
    meets a closed pipe. That is the cancel, not a tap failure: exit 143, not 1 with a
    traceback (nor 120 from the exit's flush)."""
    with LoopbackServer(silent) as server:
        command = tap_command(tmp_path, waiting_config(server), None, "closed")
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tap:
            assert tap.stdout is not None
            assert server.request_seen.wait(timeout=60)  # the tap is waiting for its answer
            tap.stdout.close()  # the target is gone
            tap.send_signal(signal.SIGTERM)
            err = tap.stderr.read() if tap.stderr else b""
            code = tap.wait(timeout=60)
    assert code == 143, err.decode()[-3000:]
    assert b"tap_stopped signal=SIGTERM exit_code=143" in err
    assert b"the target closed its input" in err
    assert b"Traceback" not in err


def test_a_cancel_while_records_fill_a_closed_pipe_exits_128_plus_signal(
    emulator_factory, tmp_path
):
    """The same while the tap is writing records (the target, the slower side, fell behind)."""
    emu = emulator_factory(seed=5, log_count=2, events_per_second=5.0)
    config = {
        "api_key": emu.api_key, "base_url": emu.base_url, "log_ids": emu.log_ids,
        "start_date": START, "end_date": END, "window_seconds": 120, "per_page": 100,
        "poll_interval_seconds": 0.005, "poll_interval_max_seconds": 0.05,
    }  # fmt: skip
    command = tap_command(tmp_path, config, None, "records")
    with (
        (tmp_path / "records.stderr").open("wb") as err,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err) as tap,
    ):
        assert tap.stdout is not None
        for count, _ in enumerate(tap.stdout, start=1):
            if count == 200:
                break
        tap.send_signal(signal.SIGTERM)
        tap.stdout.close()
        code = tap.wait(timeout=60)
    stderr = (tmp_path / "records.stderr").read_bytes()
    assert code == 143, stderr.decode()[-3000:]
    assert b"tap_stopped signal=SIGTERM exit_code=143" in stderr
    assert b"Traceback" not in stderr
