"""`tap-rapid7-reconcile` end to end: the real client's `calculate(count)` over loopback HTTP.

The dataset is built from the emulator's own events (what a perfect pipeline would have written),
then damaged; the command must pass the first and name the damage in the second.
"""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tap_rapid7.reconcile import main

pytest_plugins = ["tap_rapid7.emulator.testing"]

NOW_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z, hour aligned
HOUR = 3_600_000
FROM = NOW_MS - 2 * HOUR
SCHEMA = pa.schema([("log_id", pa.string()), ("timestamp", pa.int64()),
                    ("sequence_number", pa.int64()), ("sequence_number_str", pa.string()),
                    ("message", pa.string())])


@pytest.fixture
def lake(tmp_path, emulator_factory):
    """(emulator, dataset dir, config file, part paths) for two logs over two hours."""
    emu = emulator_factory(fixed_now_ms=NOW_MS, log_count=2, events_per_second=0.05,
                           burst_probability=0.2, burst_size=20, polls_before_ready=1)
    parts = []
    for log_id in emu.log_ids:
        for n, start in enumerate(range(FROM, NOW_MS, HOUR // 2)):
            rows = [{name: event[name] for name in SCHEMA.names}
                    for event in emu.events(log_id, start, start + HOUR // 2)]
            path = tmp_path / "lake" / "events" / f"part-{log_id[:8]}-{n}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
            parts.append(path)
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": emu.api_key, "base_url": emu.base_url,
                                  "poll_interval_seconds": 0.01}))
    return emu, tmp_path / "lake", config, parts


def test_clean_dataset_matches_the_apis_counts(lake, capsys):
    emu, dataset, config, _ = lake
    args = ["--config", str(config), "--dataset", str(dataset), "--from", str(FROM),
            "--to", str(NOW_MS), "--json"]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert len(document["windows"]) == 2 * 2  # every log the API lists, hourly
    assert document["totals"]["api_count"] == len(emu.truth(FROM, NOW_MS)) > 0
    assert emu.api_key not in json.dumps(document)


def test_damaged_dataset_fails_and_names_each_problem(lake, capsys):
    _emu, dataset, config, parts = lake
    shutil.copy(parts[0], parts[0].with_name("part-copied.parquet"))
    lost_rows = pq.read_table(parts[3]).num_rows
    parts[3].unlink()
    stray = pq.read_table(parts[1]).slice(0, 1).to_pylist()[0]
    stray.update(timestamp=NOW_MS, sequence_number_str="1", sequence_number=1)
    pq.write_table(pa.Table.from_pylist([stray], schema=SCHEMA),
                   dataset / "events" / "part-stray.parquet")
    args = ["--config", str(config), "--dataset", str(dataset), "--from", str(FROM),
            "--to", str(NOW_MS)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"across 2 parts: events/{parts[0].name}, events/part-copied.parquet" in out
    assert f"({lost_rows} missing)" in out
    assert "key 1 in events/part-stray.parquet" in out
    assert "MISMATCH: 3 finding(s)" in out


def test_list_keys_names_the_missing_events(lake, capsys):
    _emu, dataset, config, parts = lake
    lost = pq.read_table(parts[3]).to_pylist()
    parts[3].unlink()
    args = ["--config", str(config), "--dataset", str(dataset), "--from", str(FROM),
            "--to", str(NOW_MS), "--list-keys", "--json"]
    assert main(args) == 1
    document = json.loads(capsys.readouterr().out)
    listed = [key for window in document["windows"] for key in window.get("missing_keys", [])]
    expected = sorted([row["timestamp"], row["sequence_number_str"]] for row in lost)
    assert listed == expected[:20]
    assert all(window.get("extra_keys", []) == [] for window in document["windows"])
    assert "; e.g. " in document["findings"][0]["message"]
