"""target-parquet-parts-compact: same rows and keys before and after, one commit, safe expiry."""

from __future__ import annotations

import datetime
import json
import logging
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from target_parquet_parts import compact, compact_cli
from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.columns import build_table
from target_parquet_parts.iceberg import load_iceberg_catalog
from target_parquet_parts.iceberg_commits import stage_snapshot
from target_parquet_parts.iceberg_expiry import expire_table
from target_parquet_parts.iceberg_ledger import commit_properties
from target_parquet_parts.settings import TargetSettings
from tests.target.conftest import run_target
from tests.target.iceberg_helpers import (
    ICEBERG,
    duckdb_counts,
    key_multiset,
    live_files,
    open_table,
    scan,
)
from tests.target.singer_data import (
    EVENTS_SCHEMA,
    event,
    events_lines,
    record_message,
    schema_message,
    state_message,
)

COMPACT_BIN = str(Path(sys.executable).with_name("target-parquet-parts-compact"))
DAY = 86_400  # events are one second apart: event(i) is on day i // 86400 after 2024-01-01


def _events_over_days(out: Path, monkeypatch, days: int, per_day: int, batch: int) -> int:
    """per_day events on each of ``days`` days, committed in batches of ``batch``."""
    indexes = [d * DAY + k for d in range(days) for k in range(per_day)]
    lines = [schema_message()] + [record_message(event(i)) for i in indexes]
    lines.append(state_message({"done": True}))
    run_target(
        out,
        lines,
        monkeypatch,
        batch_size_rows=batch,
        partition_date_field="event_time",
        **ICEBERG,
    )
    return len(indexes)


def _physical_data_files(out: Path) -> int:
    return sum(1 for _ in (out / "singer" / "events" / "data").rglob("*.parquet"))


def test_compaction_rewrites_closed_partitions_in_one_commit(tmp_path, monkeypatch):
    out = tmp_path / "out"
    total = _events_over_days(out, monkeypatch, days=3, per_day=120, batch=40)
    before_rows = scan(out)
    files_before = live_files(out)
    assert len(files_before) >= 9  # a file per day per commit
    with open_table(out) as opened:
        table = opened
        history_before = len(table.snapshots())
        # 2024-01-03 is still open: only the first two days are compacted
        table, result = compact.compact_table(
            table,
            before=datetime.date(2024, 1, 3),
            target_bytes=64 * 1024 * 1024,
            rng=random.Random(3),
        )
        assert len(table.snapshots()) == history_before + 1  # ONE new snapshot
        newest = table.current_snapshot()
        assert newest.summary.operation.value == "overwrite"
        assert newest.summary.additional_properties["singer.compaction"] == "true"
    after_rows = scan(out)
    assert result.rows_before == result.rows_after == total
    assert after_rows.num_rows == before_rows.num_rows == total
    assert key_multiset(after_rows) == key_multiset(before_rows)
    assert duckdb_counts(out) == (total, total)
    files_after = live_files(out)
    third_day = [f for f in files_before if "event_time_day=2024-01-03" in f]
    assert [f for f in files_after if "event_time_day=2024-01-03" in f] == third_day
    assert len(files_after) == len(third_day) + 2  # one file for each closed day
    assert result.files_before == len(files_before)
    assert result.files_after == len(files_after)


def test_every_snapshot_a_reader_can_see_has_each_row_once(tmp_path, monkeypatch):
    """Time travel over the history: any reader at any moment reads one of these snapshots."""
    out = tmp_path / "out"
    total = _events_over_days(out, monkeypatch, days=2, per_day=100, batch=30)
    with open_table(out) as opened:
        table = opened
        loaded_head = table.current_snapshot().snapshot_id
        table, _ = compact.compact_table(
            table, before=datetime.date(2030, 1, 1), target_bytes=1 << 26, rng=random.Random(1)
        )
        ids = [s.snapshot_id for s in table.snapshots()]
        visible = ids[ids.index(loaded_head) :]
        assert len(visible) == 2
        expected = None
        for snapshot_id in visible:
            rows = table.scan(snapshot_id=snapshot_id).to_arrow()
            keys = key_multiset(rows)
            assert len(keys) == total
            assert len(set(keys)) == total
            expected = expected or keys
            assert keys == expected


def test_writer_committing_during_compaction_keeps_its_rows(tmp_path, monkeypatch, caplog):
    """A writer commits into a partition being compacted, between plan and commit."""
    out = tmp_path / "out"
    total = _events_over_days(out, monkeypatch, days=1, per_day=90, batch=30)
    spec = stream_spec(EVENTS_SCHEMA)
    catalog = load_iceberg_catalog(TargetSettings(output_dir=str(out)))
    writer_table = catalog.load_table(("singer", "events"))
    original = compact._dataframe_to_data_files
    late = build_table([event(50_000 + k) for k in range(7)], spec)  # same day as the rest

    def write_then_let_a_writer_commit(*args, **kwargs):
        files = list(original(*args, **kwargs))
        from pyiceberg.io.pyarrow import _dataframe_to_data_files

        writer_files = list(_dataframe_to_data_files(writer_table.metadata, late, writer_table.io))
        tx = writer_table.transaction()
        stage_snapshot(tx, commit_properties("writer", 1, 0, 0), writer_files)
        tx.commit_transaction()
        return files

    monkeypatch.setattr(compact, "_dataframe_to_data_files", write_then_let_a_writer_commit)
    caplog.set_level(logging.INFO)
    try:
        table = catalog.load_table(("singer", "events"))
        table, result = compact.compact_table(
            table, before=datetime.date(2030, 1, 1), target_bytes=1 << 26, rng=random.Random(2)
        )
    finally:
        catalog.close()
    assert any("iceberg_commit_retry" in r.getMessage() for r in caplog.records)
    rows = scan(out)
    assert rows.num_rows == total + 7
    assert len(set(key_multiset(rows))) == total + 7
    assert result.rewritten_files == 3
    assert len(live_files(out)) == 2  # the compacted file and the writer's late file


def test_expiry_deletes_only_files_no_kept_snapshot_needs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    total = _events_over_days(out, monkeypatch, days=2, per_day=60, batch=20)
    physical_before = _physical_data_files(out)
    with open_table(out) as opened:
        table = opened
        table, result = compact.compact_table(
            table, before=datetime.date(2030, 1, 1), target_bytes=1 << 26, rng=random.Random(4)
        )
        table, expired, deleted = expire_table(
            table, retain_hours=0, rng=random.Random(4), now_ms=2**62
        )
        assert [s.snapshot_id for s in table.snapshots()] == [result.snapshot_id]
    assert expired > 0
    assert deleted >= physical_before  # old data files, plus manifests and manifest lists
    assert _physical_data_files(out) == 2 == len(live_files(out))
    assert scan(out).num_rows == total
    assert duckdb_counts(out) == (total, total)


def test_expiry_keeps_pending_snapshots_of_unfinished_runs(tmp_path, monkeypatch):
    """Records after the last STATE: a rerun may re-send them, so their snapshot stays."""
    out = tmp_path / "out"
    run_target(out, events_lines(50, state_every=20), monkeypatch, batch_size_rows=20, **ICEBERG)
    with open_table(out) as opened:
        table = opened
        pending = [
            s.snapshot_id
            for s in table.snapshots()
            if s.summary.additional_properties.get("singer.state-index") == "2"
        ]
        assert len(pending) == 1  # records 40..49 came after the last STATE
        table, _ = compact.compact_table(
            table, before=datetime.date(2030, 1, 1), target_bytes=1 << 26, rng=random.Random(5)
        )
        table, _, _ = expire_table(table, retain_hours=0, rng=random.Random(5), now_ms=2**62)
        kept = {s.snapshot_id for s in table.snapshots()}
    assert pending[0] in kept
    assert scan(out).num_rows == 50


@pytest.mark.e2e
def test_compact_command_while_a_reader_keeps_reading(tmp_path, monkeypatch):
    out = tmp_path / "out"
    total = _events_over_days(out, monkeypatch, days=3, per_day=200, batch=50)
    config = tmp_path / "target.json"
    config.write_text(json.dumps({"output_dir": str(out), **ICEBERG}))
    before = scan(out)
    counts: list[tuple[int, int]] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            rows = scan(out)
            keys = key_multiset(rows)
            counts.append((len(keys), len(set(keys))))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        result = subprocess.run(
            [COMPACT_BIN, "--config", str(config), "--before", "2030-01-01"],
            capture_output=True,
            check=True,
        )
    finally:
        done.set()
        thread.join()
    report = json.loads(result.stdout.decode().splitlines()[-1])
    assert report["rows_before"] == report["rows_after"] == total
    assert report["files_after"] == 3 < report["files_before"]
    assert counts  # the reader read at least once (it starts before the command)
    assert set(counts) == {(total, total)}
    assert key_multiset(scan(out)) == key_multiset(before)


@pytest.mark.e2e
def test_plain_parts_dataset_is_refused_with_an_explanation(tmp_path):
    config = tmp_path / "target.json"
    config.write_text(json.dumps({"output_dir": str(tmp_path / "out")}))
    result = subprocess.run(
        [COMPACT_BIN, "--config", str(config)], capture_output=True, check=False
    )
    assert result.returncode == compact_cli.EXIT_NOT_ICEBERG
    assert b"only Iceberg" in result.stderr
    assert b"no commit point" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing touched


def test_config_from_meltano_environment_variables(tmp_path):
    file_config = tmp_path / "c.json"
    file_config.write_text(json.dumps({"output_dir": "/from/file", "iceberg_namespace": "a"}))
    environ = {
        "TARGET_PARQUET_PARTS_OUTPUT_DIR": "/from/env",
        "TARGET_PARQUET_PARTS_TABLE_FORMAT": "iceberg",
        "TARGET_PARQUET_PARTS_ICEBERG_CATALOG": '{"type": "rest", "uri": "http://x"}',
        "TARGET_PARQUET_PARTS_COMPRESSION": "",
        "OTHER": "1",
    }
    settings = compact_cli.load_config([str(file_config), "ENV"], environ)
    assert settings == TargetSettings(
        output_dir="/from/env",
        iceberg_namespace="a",
        table_format="iceberg",
        iceberg_catalog={"type": "rest", "uri": "http://x"},
    )
