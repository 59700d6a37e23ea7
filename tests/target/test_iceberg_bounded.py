"""What a long run leaves per commit on an Iceberg table stays bounded.

A target flushing at every STATE commits thousands of times. Each commit used to leave something
that grew with the run: a metadata file kept forever (``write.metadata.delete-after-commit``), a
merge that rewrote one manifest holding every data file of the table (its peak memory growing
with every appended file: ``commit.manifest.target-size-bytes``), and an in-run expiry that
decoded every live entry of every kept snapshot each time it ran, and pyiceberg's worker pool
that gained threads (each keeping its allocator caches) over hours of commits. These tests check
the table properties the target sets (on new tables, and when missing on existing ones, keeping
an owner's values), that old metadata files are deleted, that expiring appends reads no manifest
entry at all, and the pool's size. No timing, no RSS: ``benchmarks/memory_flushes.py --output
iceberg`` measures those.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.manifest import ManifestFile
from pyiceberg.table import TableProperties
from pyiceberg.utils.concurrent import ExecutorFactory

from target_parquet_parts import iceberg_expiry
from target_parquet_parts.iceberg import PYICEBERG_WORKERS
from target_parquet_parts.iceberg_commits import MANIFEST_TABLE_PROPERTIES, MANIFEST_TARGET_BYTES
from target_parquet_parts.iceberg_expiry import expire_table
from tests.target.conftest import run_target
from tests.target.iceberg_helpers import open_table, scan
from tests.target.singer_data import event, record_message, schema_message, state_message


def _flush_per_state(start: int, count: int) -> list[str]:
    """SCHEMA, then ``count`` events each followed by a STATE (one commit each)."""
    lines = [schema_message()]
    for i in range(start, start + count):
        lines += [record_message(event(i)), state_message({"last": i})]
    return lines


def _run(out: Path, monkeypatch: pytest.MonkeyPatch, start: int, count: int) -> None:
    lines = _flush_per_state(start, count)
    run_target(out, lines, monkeypatch, state_max_lag_seconds=0, table_format="iceberg")


def _metadata_files(out: Path) -> list[Path]:
    return sorted((out / "singer" / "events" / "metadata").glob("*.metadata.json"))


def test_a_new_table_gets_the_properties_that_bound_a_long_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(tmp_path, monkeypatch, 0, 2)
    with open_table(tmp_path) as table:
        properties = table.properties
    assert properties[TableProperties.MANIFEST_MERGE_ENABLED] == "true"
    assert properties[TableProperties.MANIFEST_TARGET_SIZE_BYTES] == str(MANIFEST_TARGET_BYTES)
    assert properties[TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED] == "true"
    # far below Iceberg's 8 MiB default, whose merged manifest grows with the whole table
    assert MANIFEST_TARGET_BYTES <= 1 << 20


def test_an_existing_table_gets_the_missing_properties_and_keeps_its_owners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _run(tmp_path, monkeypatch, 0, 2)
    # as an older target, or another tool, left it
    with open_table(tmp_path) as table, table.transaction() as transaction:
        transaction.remove_properties(
            TableProperties.MANIFEST_TARGET_SIZE_BYTES,
            TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED,
        )
        transaction.set_properties({TableProperties.MANIFEST_MERGE_ENABLED: "false"})
    with caplog.at_level(logging.INFO):
        _run(tmp_path, monkeypatch, 2, 2)
    with open_table(tmp_path) as table:
        properties = table.properties
    assert properties[TableProperties.MANIFEST_MERGE_ENABLED] == "false"  # the owner's choice
    assert properties[TableProperties.MANIFEST_TARGET_SIZE_BYTES] == str(MANIFEST_TARGET_BYTES)
    assert properties[TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED] == "true"
    events = [r for r in caplog.records if "iceberg_table_properties_set" in r.getMessage()]
    assert len(events) == 1
    assert set(events[0].__dict__["properties"]) == {
        TableProperties.MANIFEST_TARGET_SIZE_BYTES,
        TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED,
    }
    assert len(scan(tmp_path)) == 4
    # a third run finds nothing missing: no property commit
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run(tmp_path, monkeypatch, 4, 1)
    assert not [r for r in caplog.records if "iceberg_table_properties_set" in r.getMessage()]
    assert set(MANIFEST_TABLE_PROPERTIES) <= set(properties)


def test_old_metadata_files_are_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(tmp_path, monkeypatch, 0, 1)
    # the owner keeps fewer versions than the default 100
    with open_table(tmp_path) as table, table.transaction() as transaction:
        transaction.set_properties({TableProperties.METADATA_PREVIOUS_VERSIONS_MAX: "5"})
    commits = 25
    _run(tmp_path, monkeypatch, 1, commits)
    # the current file and the 5 previous versions the metadata log names; one per commit if
    # nothing deleted them
    assert len(_metadata_files(tmp_path)) <= 6, _metadata_files(tmp_path)
    assert len(scan(tmp_path)) == commits + 1


def test_expiring_appends_reads_no_manifest_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends without a merge: every manifest of an expired snapshot is still in the current
    one, so no data file can go and no entry needs reading (the older expiry decoded every
    live entry of every kept snapshot, each time)."""
    commits = 30  # fewer than commit.manifest.min-count-to-merge: no merge
    _run(tmp_path, monkeypatch, 0, commits)
    read: list[str] = []
    live_paths = iceberg_expiry._live_paths
    fetch = ManifestFile.fetch_manifest_entry

    def counted_live_paths(table: Any, manifest: ManifestFile) -> Any:
        read.append(manifest.manifest_path)
        return live_paths(table, manifest)

    def counted_fetch(self: ManifestFile, *args: Any, **kwargs: Any) -> Any:
        read.append(self.manifest_path)
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(iceberg_expiry, "_live_paths", counted_live_paths)
    monkeypatch.setattr(ManifestFile, "fetch_manifest_entry", counted_fetch)
    with open_table(tmp_path) as table:
        manifests = len(table.current_snapshot().manifests(table.io))
        _, expired, deleted = expire_table(
            table, retain_hours=0, rng=random.Random(1), now_ms=2**62
        )
    assert manifests > commits // 2  # really one manifest per append
    assert expired >= commits - 2
    assert read == []
    assert deleted == expired  # their manifest lists only
    monkeypatch.undo()
    assert len(scan(tmp_path)) == commits


@pytest.fixture
def fresh_pyiceberg_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], ThreadPoolExecutor]]:
    """As in a new process: no pyiceberg pool yet, no max-workers in the environment or in a
    ``.pyiceberg.yaml``; yields a getter of the pool the run used, shut down afterwards."""
    monkeypatch.setattr(ExecutorFactory, "_instance", None)
    monkeypatch.setattr(ExecutorFactory, "_instance_pid", None)
    monkeypatch.delenv("PYICEBERG_MAX_WORKERS", raising=False)
    monkeypatch.delenv("PYICEBERG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def pool() -> ThreadPoolExecutor:
        executor = ExecutorFactory.get_or_create()
        assert isinstance(executor, ThreadPoolExecutor)
        return executor

    yield pool
    if ExecutorFactory._instance is not None:
        ExecutorFactory._instance.shutdown()


def test_pyiceberg_pool_has_the_threads_every_commit_uses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_pyiceberg_pool: Callable[[], ThreadPoolExecutor],
) -> None:
    """pyiceberg's default (CPUs + 4 threads, started one at a time when a task finds none
    idle) grew over a long run, each new thread with its own allocator caches."""
    _run(tmp_path / "out", monkeypatch, 0, 3)
    pool = fresh_pyiceberg_pool()
    assert pool._max_workers == PYICEBERG_WORKERS
    # each commit's three manifest tasks run at once: the pool is full from the start
    assert PYICEBERG_WORKERS == 3
    assert len(scan(tmp_path / "out")) == 3


def test_a_users_pyiceberg_max_workers_is_kept(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_pyiceberg_pool: Callable[[], ThreadPoolExecutor],
) -> None:
    monkeypatch.setenv("PYICEBERG_MAX_WORKERS", "5")
    _run(tmp_path / "out", monkeypatch, 0, 2)
    assert fresh_pyiceberg_pool()._max_workers == 5
    assert len(scan(tmp_path / "out")) == 2
