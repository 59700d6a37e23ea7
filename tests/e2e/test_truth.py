"""tap-rapid7 piped into target-parquet-parts, against the emulator with faults on, vs truth.

Each case prints one `E2E case=...` line with the figures (run with -s to see them).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from logsearch_emulator import EmulatorOptions, running_emulator
from tap_rapid7.windows import iso_to_millis, millis_to_iso
from tests.e2e.pipeline import compare, dataset_keys, final_cursor, start

pytestmark = pytest.mark.e2e

START = "2026-03-01T00:00:00Z"
END = "2026-03-01T00:08:00Z"
START_MS, END_MS = iso_to_millis(START), iso_to_millis(END)

FAULTS = {
    "error_rate": 0.05,  # random 500/502/503
    "drop_rate": 0.02,  # connection closed without a response
    "force_429_on_request": (3, 41),  # rate limited, with Retry-After
    "forced_429_retry_after": 1.0,
    "duplicate_next": True,  # a Next link repeats once (loop guard)
}


def emulator_options(**overrides) -> EmulatorOptions:
    values = {
        "seed": 5,
        "log_count": 3,
        "events_per_second": 3.0,
        "burst_probability": 0.3,
        "burst_size": 200,
        **FAULTS,
        **overrides,
    }
    return EmulatorOptions(**values)


def tap_config(emu, **overrides) -> dict:
    config = {
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "log_ids": emu.log_ids,
        "start_date": START,
        "end_date": END,
        "window_seconds": 120,
        "per_page": 200,
        "poll_interval_seconds": 0.005,
        "poll_interval_max_seconds": 0.05,
        "backoff_base_seconds": 0.02,
        "backoff_max_seconds": 0.5,
        "max_retries": 10,
        # The product default (4): concurrent queries; the sequential path is in tests/tap.
        "max_concurrent_queries": 4,
    }
    config.update(overrides)
    return config


def target_config(output: Path, **overrides) -> dict:
    return {"output_dir": str(output), "batch_size_rows": 1000, **overrides}


def truth(emu, from_ms: int, to_ms: int) -> list[tuple[str, int, str]]:
    return list(emu.truth(from_ms, to_ms))


def biggest_burst(emu, from_ms: int, to_ms: int) -> tuple[int, int]:
    """(millisecond, size) of the largest same-millisecond burst in the range."""
    counts = Counter(e["timestamp"] for log in emu.log_ids for e in emu.events(log, from_ms, to_ms))
    millis, size = counts.most_common(1)[0]
    return millis, size


def window_sums(stderr: str, field: str) -> int:
    return sum(
        int(m.group(1))
        for line in stderr.splitlines()
        if "logsearch_window_complete" in line
        for m in [re.search(rf"\b{field}=(\d+)", line)]
        if m
    )


def check(case: str, emu, rows, from_ms: int, to_ms: int) -> None:
    result = compare(truth(emu, from_ms, to_ms), rows)
    print(result.line(case))
    assert result.exact, result.line(case)


def test_a_one_sync_with_faults(tmp_path):
    with running_emulator(emulator_options(fault_seed=1)) as emu:
        pipe = start(tmp_path, tap_config(emu), target_config(tmp_path / "out"))
        states = pipe.finish()
        assert {v[0] for v in final_cursor(states).values()} == {END_MS}
        check("a", emu, dataset_keys(tmp_path / "out"), START_MS, END_MS)
        faults = emu.stats()["faults"]
        assert faults["server_errors"] + faults["dropped"] > 0
        assert faults["forced_429"] >= 1
        assert faults["duplicate_next"] == 1
        print(f"E2E case=a faults={faults}")


def test_b_two_syncs_split_at_a_burst(tmp_path):
    with running_emulator(emulator_options(fault_seed=2)) as emu:
        split_ms, size = biggest_burst(emu, START_MS, END_MS)
        assert size >= 50
        out = tmp_path / "out"
        first = start(
            tmp_path,
            tap_config(emu, end_date=millis_to_iso(split_ms)),
            target_config(out),
            run="first",
        )
        states = first.finish()
        cursor = final_cursor(states)
        assert {v[0] for v in cursor.values()} == {split_ms}
        second = start(
            tmp_path, tap_config(emu), target_config(out), state=states[-1], run="second"
        )
        second.finish()
        rows = dataset_keys(out)
        assert sum(1 for _, ts, _ in rows if ts == split_ms) == size
        print(f"E2E case=b split_ms={split_ms} burst_size={size}")
        check("b", emu, rows, START_MS, END_MS)


def _after_cursor(cursor: dict[str, tuple[int, str]], row: tuple[str, int, str]) -> bool:
    """Whether a (log_id, timestamp, seq_str) row comes after the log's resume cursor."""
    log_id, ts, seq = row
    if log_id not in cursor:
        return True
    millis, tie = cursor[log_id]
    return ts > millis or (ts == millis and (tie == "" or int(seq) > int(tie)))


def test_c_sigkill_after_first_part_then_resume(tmp_path):
    with running_emulator(emulator_options(fault_seed=3)) as emu:
        out = tmp_path / "out"
        tap_cfg = tap_config(emu, state_every_records=300, per_page=100)
        first = start(tmp_path, tap_cfg, target_config(out, batch_size_rows=400), run="killed")
        assert first.next_state() is not None  # a part landed and the target vouched for it
        states = first.kill()
        rows_before = dataset_keys(out)
        assert len(rows_before) > 0
        resume_from = states[-1]
        cursor = final_cursor(states)
        # It really was cut short: some log not started or not at the end yet.
        assert len(cursor) < len(emu.log_ids) or any(ms < END_MS for ms, _ in cursor.values())
        second = start(
            tmp_path,
            tap_cfg,
            target_config(out, batch_size_rows=400),
            state=resume_from,
            run="resumed",
        )
        second.finish()
        # The rows already on disk beyond the resume cursor are re-delivered by the tap; the
        # target's exactly-once journal must drop exactly those (the part that landed after
        # the last emitted STATE always holds some: a STATE arrives after its batch filled).
        beyond = [row for row in rows_before if _after_cursor(cursor, row)]
        dropped = sum(
            int(m) for m in re.findall(r"journal_duplicates_dropped stream=events rows=(\d+)",
                                       second.stderr("target"))
        )  # fmt: skip
        assert len(beyond) > 0
        assert dropped == len(beyond)
        print(
            f"E2E case=c rows_before_kill={len(rows_before)} journal_dropped={dropped} "
            f"resumed_from={cursor}"
        )
        check("c", emu, dataset_keys(out), START_MS, END_MS)


def test_d_server_treats_to_as_inclusive(tmp_path):
    with running_emulator(emulator_options(fault_seed=4, to_inclusive=True)) as emu:
        end_ms, size = biggest_burst(emu, START_MS, END_MS)  # the burst sits right on `to`
        pipe = start(
            tmp_path,
            tap_config(emu, end_date=millis_to_iso(end_ms)),
            target_config(tmp_path / "out"),
        )
        pipe.finish()
        dropped = window_sums(pipe.stderr("tap"), "out_of_window_dropped")
        assert dropped >= size
        print(
            f"E2E case=d end_ms={end_ms} burst_at_to={size} out_of_window_dropped_by_tap={dropped}"
        )
        check("d", emu, dataset_keys(tmp_path / "out"), START_MS, end_ms)


def test_e_late_arrivals_covered_by_lag(tmp_path):
    late_seconds = 2.0
    options = emulator_options(
        fault_seed=6, late_arrival_seconds=late_seconds, force_429_on_request=None
    )
    with running_emulator(options) as emu:
        start_iso = millis_to_iso(time.time_ns() // 1_000_000 - 30_000)
        runs = {}
        for name, lag in (("lagged", late_seconds + 1), ("no_lag", 0)):
            cfg = tap_config(
                emu, start_date=start_iso, end_date=None, lag_seconds=lag, window_seconds=10
            )
            del cfg["end_date"]
            out = tmp_path / name
            states = start(tmp_path, cfg, target_config(out), run=name).finish()
            runs[name] = (out, max(ms for ms, _ in final_cursor(states).values()))
        emu.update_options(late_arrival_seconds=0.0)  # everything that will ever arrive, visible
        out, end_ms = runs["lagged"]
        check("e", emu, dataset_keys(out), iso_to_millis(start_iso), end_ms)
        out, end_ms = runs["no_lag"]
        without_lag = compare(truth(emu, iso_to_millis(start_iso), end_ms), dataset_keys(out))
        print(without_lag.line("e-lag0"))
        assert without_lag.missing > 0
        assert without_lag.duplicates == without_lag.outside == 0


def test_f_expired_links_restart_from_the_cursor(tmp_path):
    # Sequential, so the emulator's request numbers are deterministic: request 3 is a poll of
    # the first query; its 429 (Retry-After: 1) outlives the 0.2 s link, so the retry gets 404.
    options = emulator_options(fault_seed=7, link_ttl_seconds=0.2, force_429_on_request=(3,))
    with running_emulator(options) as emu:
        cfg = tap_config(emu, max_concurrent_queries=1, per_page=100)
        pipe = start(tmp_path, cfg, target_config(tmp_path / "out"))
        pipe.finish()
        expired = emu.stats()["faults"]["expired_links"]
        assert expired >= 1
        assert "expired link" in pipe.stderr("tap")
        print(f"E2E case=f expired_links={expired}")
        check("f", emu, dataset_keys(tmp_path / "out"), START_MS, END_MS)


# Each reading of Rapid7's published contract that our default emulator does not take (§11),
# one at a time, then all at once: the dataset must equal the truth exactly under each.
READINGS = {
    "from_exclusive": {"from_inclusive": False},
    "to_inclusive": {"to_inclusive": True},
    "recurring_sequence_numbers": {"sequence_numbers": "per_ms"},
    "non_page_bodies": {"non_page_rate": 0.1},
    "all_at_once": {
        "from_inclusive": False,
        "to_inclusive": True,
        "sequence_numbers": "per_ms",
        "non_page_rate": 0.1,
    },
}


@pytest.mark.parametrize("reading", sorted(READINGS))
def test_g_every_reading_of_the_contract_is_exact(tmp_path, reading):
    options = emulator_options(fault_seed=8, **READINGS[reading])
    with running_emulator(options) as emu:
        # The sync starts and ends on bursts: the edges are where the readings differ.
        middle = (START_MS + END_MS) // 2
        first_ms, first_size = biggest_burst(emu, START_MS, middle)
        last_ms, last_size = biggest_burst(emu, middle, END_MS)
        pipe = start(
            tmp_path,
            tap_config(
                emu, start_date=millis_to_iso(first_ms), end_date=millis_to_iso(last_ms),
                window_seconds=60,
            ),
            target_config(tmp_path / "out"),
        )  # fmt: skip
        pipe.finish()
        rows = dataset_keys(tmp_path / "out")
        stats = emu.stats()
        print(
            f"E2E case=g reading={reading} bursts_on_edges={first_size},{last_size} "
            f"non_page_bodies={stats['faults'].get('non_page_bodies', 0)} "
            f"queries={stats['requests'].get('queries_started', 0)}"
        )
        check(f"g-{reading}", emu, rows, first_ms, last_ms)
        if "non_page_rate" in READINGS[reading]:
            assert stats["faults"]["non_page_bodies"] > 0
        if reading in ("recurring_sequence_numbers", "all_at_once"):
            seqs = Counter(seq for _, _, seq in rows)
            assert max(seqs.values()) > 1, "sequence numbers really recur across milliseconds"


def test_h_crash_and_resume_inside_a_burst_of_recurring_sequence_numbers(tmp_path):
    options = emulator_options(fault_seed=9, **READINGS["all_at_once"])
    with running_emulator(options) as emu:
        stamps = Counter(ts for _, ts, _ in emu.truth(START_MS, END_MS))
        out = tmp_path / "out"
        tap_cfg = tap_config(emu, state_every_records=37, per_page=50, max_concurrent_queries=1)
        first = start(tmp_path, tap_cfg, target_config(out, batch_size_rows=60), run="killed")
        mid_burst = None
        while first.next_state() is not None:
            for log_id, (millis, tie) in final_cursor(first.states).items():
                # The cursor sits inside a burst: some of its millisecond emitted, some not.
                if tie and stamps[millis] > 1:
                    emitted = [
                        k for k in emu.truth(millis, millis + 1, log_id) if int(k[2]) <= int(tie)
                    ]
                    if 0 < len(emitted) < len(emu.truth(millis, millis + 1, log_id)):
                        mid_burst = (log_id, millis, tie, len(emitted))
            if mid_burst:
                break
        assert mid_burst, "no STATE landed inside a burst: the scenario did not happen"
        states = first.kill()
        resume_from = states[-1]
        second = start(
            tmp_path, tap_cfg, target_config(out, batch_size_rows=60), state=resume_from,
            run="resumed",
        )  # fmt: skip
        second.finish()
        print(f"E2E case=h cursor_inside_burst={mid_burst} states_before_kill={len(states)}")
        check("h", emu, dataset_keys(out), START_MS, END_MS)
