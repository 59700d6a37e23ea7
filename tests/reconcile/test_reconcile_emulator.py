"""`tap-rapid7-reconcile` end to end: the real client's `calculate(count)` over loopback HTTP.

The dataset is built from the emulator's own events (what a perfect pipeline would have written,
in the target's column types, with each message's own time as `event_time`), then damaged; the
command must pass the first and name the damage in the second. The two-clock figures are checked
against the emulator's ground truth of every message's own time.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_tools.reconcile.cli import main

NOW_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z, hour aligned
HOUR = 3_600_000
FROM = NOW_MS - 2 * HOUR
MICROS = pa.timestamp("us", tz="UTC")  # how target-parquet-parts writes date-time columns
SCHEMA = pa.schema([
    ("log_id", pa.string()), ("timestamp", pa.int64()), ("received_at", MICROS),
    ("event_time", MICROS), ("sequence_number", pa.int64()),
    ("sequence_number_str", pa.string()), ("message", pa.string()),
])  # fmt: skip


def record(event: dict, event_ms: int | None) -> dict:
    """The tap's record of one API event (date-times as epoch µs for pyarrow)."""
    return {
        "log_id": event["log_id"], "timestamp": event["timestamp"],
        "received_at": event["timestamp"] * 1000,
        "event_time": None if event_ms is None else event_ms * 1000,
        "sequence_number": event["sequence_number"],
        "sequence_number_str": event["sequence_number_str"], "message": event["message"],
    }  # fmt: skip


@pytest.fixture
def lake(tmp_path, emulator_factory):
    """(emulator, dataset dir, config file, part paths) for two logs over two hours."""
    emu = emulator_factory(fixed_now_ms=NOW_MS, log_count=2, events_per_second=0.05,
                           burst_probability=0.2, burst_size=20, polls_before_ready=1)  # fmt: skip
    times = emu.event_times(FROM, NOW_MS)
    parts = []
    for log_id in emu.log_ids:
        for n, start in enumerate(range(FROM, NOW_MS, HOUR // 2)):
            rows = [
                record(event, times[(log_id, event["timestamp"], event["sequence_number_str"])])
                for event in emu.events(log_id, start, start + HOUR // 2)
            ]
            path = tmp_path / "lake" / "events" / f"part-{log_id[:8]}-{n}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
            parts.append(path)
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": emu.api_key, "base_url": emu.base_url,
                                  "poll_interval_seconds": 0.01}))  # fmt: skip
    return emu, tmp_path / "lake", config, parts


def args_for(dataset, config, *extra: str) -> list[str]:
    return ["--config", str(config), "--dataset", str(dataset), "--from", str(FROM),
            "--to", str(NOW_MS), *extra]  # fmt: skip


def test_clean_dataset_matches_the_apis_counts(lake, capsys):
    emu, dataset, config, _ = lake
    assert main(args_for(dataset, config, "--json")) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert len(document["windows"]) == 2 * 2  # every log the API lists, hourly
    assert document["totals"]["api_count"] == len(emu.truth(FROM, NOW_MS)) > 0
    assert emu.api_key not in json.dumps(document)


def test_two_clocks_match_the_emulators_own_message_times(lake, capsys):
    emu, dataset, config, _ = lake
    assert main(args_for(dataset, config, "--json")) == 0
    clocks = json.loads(capsys.readouterr().out)["clocks"]
    assert clocks["available"] is True
    times = emu.event_times(FROM, NOW_MS)  # the lake holds exactly these entries
    received, by_event, none, late = Counter(), Counter(), Counter(), Counter()
    for (log_id, ts, _seq), event_ms in times.items():
        window = (log_id, ts - ts % HOUR)
        received[window] += 1
        if event_ms is None:
            none[window] += 1
            continue
        if FROM <= event_ms < NOW_MS:
            by_event[(log_id, event_ms - event_ms % HOUR)] += 1
        if ts - event_ms > 60_000:
            late[window] += 1
    figures = {(w["log_id"], w["window_from"]): w for w in clocks["windows"]}
    assert len(figures) == 4
    for window, row in figures.items():
        assert row["rows_by_received_at"] == received[window] == row["api_count"]
        assert row["rows_by_event_time"] == by_event[window]
        assert row["no_event_time"] == none[window]
        assert row["late"] == late[window]
    assert clocks["totals"]["rows_by_event_time"] < clocks["totals"]["rows_by_received_at"]


def test_clocks_text_table(lake, capsys):
    _emu, dataset, config, _ = lake
    assert main(args_for(dataset, config, "--clocks", "--late-after", "5m")) == 0
    out = capsys.readouterr().out
    assert "Two clocks (dataset rows; the API counts by receipt time):" in out
    assert "late>5m" in out
    assert "events whose receipt is beyond the margin are not seen" in " ".join(out.split())


def test_damaged_dataset_fails_and_names_each_problem(lake, capsys):
    _emu, dataset, config, parts = lake
    shutil.copy(parts[0], parts[0].with_name("part-copied.parquet"))
    lost_rows = pq.read_table(parts[3]).num_rows
    parts[3].unlink()
    stray = pq.read_table(parts[1]).slice(0, 1).to_pylist()[0]
    stray.update(timestamp=NOW_MS, received_at=NOW_MS * 1000, sequence_number_str="1",
                 sequence_number=1)  # fmt: skip
    pq.write_table(pa.Table.from_pylist([stray], schema=SCHEMA),
                   dataset / "events" / "part-stray.parquet")  # fmt: skip
    assert main(args_for(dataset, config)) == 1
    out = capsys.readouterr().out
    assert f"across 2 parts: events/{parts[0].name}, events/part-copied.parquet" in out
    assert f"({lost_rows} missing)" in out
    assert "key 1 in events/part-stray.parquet" in out
    assert "MISMATCH: 3 finding(s)" in out


def test_list_keys_names_the_missing_events(lake, capsys):
    _emu, dataset, config, parts = lake
    lost = pq.read_table(parts[3]).to_pylist()
    parts[3].unlink()
    assert main(args_for(dataset, config, "--list-keys", "--json")) == 1
    document = json.loads(capsys.readouterr().out)
    listed = [key for window in document["windows"] for key in window.get("missing_keys", [])]
    expected = sorted([row["timestamp"], row["sequence_number_str"]] for row in lost)
    assert listed == expected[:20]
    assert all(window.get("extra_keys", []) == [] for window in document["windows"])
    assert "; e.g. " in document["findings"][0]["message"]
