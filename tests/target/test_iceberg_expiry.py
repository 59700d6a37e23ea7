"""In-run snapshot expiry (``iceberg_snapshot_retention_hours``) and merged manifests.

A writer committing at every STATE adds a snapshot and a manifest per commit; the table's
metadata, which the writer holds and rewrites at each commit, would grow for as long as it runs.
These tests run the target with a retention so short that every commit may expire the earlier
ones, and check what must survive: every row once, the current snapshot, the snapshots the
exactly-once bookkeeping needs (a rerun after an unfinished run still drops its re-sent rows),
and the answer of ``ever_stateful`` after the stateful snapshots are long gone.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

import pytest
from singer_sdk.exceptions import ConfigValidationError

from target_parquet_parts import iceberg_expiry
from target_parquet_parts.iceberg_commits import CommitConflictError
from target_parquet_parts.iceberg_ledger import ever_stateful
from target_parquet_parts.target import TargetParquetParts
from tests.target.conftest import run_target
from tests.target.iceberg_helpers import ICEBERG, open_table, scan
from tests.target.singer_data import event, record_message, schema_message, state_message

# About 4 ms: every snapshot but the protected ones is older than this at the next commit.
TINY_RETENTION = {**ICEBERG, "iceberg_snapshot_retention_hours": 1e-6}


@pytest.fixture
def expire_at_every_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """No minimum interval between two expiries (a run expires after each of its commits)."""
    monkeypatch.setattr(iceberg_expiry, "_MIN_INTERVAL_SECONDS", 0.0)


def _flush_per_state(start: int, count: int) -> list[str]:
    """SCHEMA, then ``count`` events each followed by a STATE (one commit each)."""
    lines = [schema_message()]
    for i in range(start, start + count):
        lines += [record_message(event(i)), state_message({"last": i})]
    return lines


def _sequence_counts(out: Path) -> Counter[int]:
    return Counter(scan(out).column("sequence_number").to_pylist())


def _snapshot_files(out: Path) -> list[Path]:
    return sorted((out / "singer" / "events" / "metadata").glob("snap-*.avro"))


def test_a_long_run_keeps_few_snapshots_and_every_row(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    expire_at_every_commit: None,
) -> None:
    commits = 120
    with caplog.at_level(logging.INFO):
        _, states = run_target(
            tmp_path,
            _flush_per_state(0, commits),
            monkeypatch,
            state_max_lag_seconds=0,
            **TINY_RETENTION,
        )
    assert len(states.states) == commits
    counts = _sequence_counts(tmp_path)
    assert len(counts) == commits
    assert set(counts.values()) == {1}
    with open_table(tmp_path) as table:
        snapshots = table.metadata.snapshots
        manifests = table.current_snapshot().manifests(table.io)
    # current, the run's pending ones, the newest stateful, the end marker: a handful, not 121
    assert len(snapshots) <= 6, [s.summary for s in snapshots]
    # the manifest lists of the expired snapshots are deleted, the kept ones are all there
    kept_lists = {Path(s.manifest_list.removeprefix("file://")) for s in snapshots}
    assert set(_snapshot_files(tmp_path)) == kept_lists
    # merged manifests: far fewer than one per commit
    assert len(manifests) < commits // 2
    expired = [r for r in caplog.records if "iceberg_snapshots_expired" in r.getMessage()]
    assert sum(r.__dict__["expired"] for r in expired) >= commits - 6


def test_a_rerun_after_an_unfinished_run_still_drops_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expire_at_every_commit: None
) -> None:
    # run 1: 30 events with a STATE each, then 5 more with no STATE after them (an end marker
    # "open": a resume from STATE {"last": 29} sends those 5 again)
    first = _flush_per_state(0, 30) + [record_message(event(i)) for i in range(30, 35)]
    run_target(tmp_path, first, monkeypatch, state_max_lag_seconds=0, **TINY_RETENTION)
    # run 2 expires at its first commit; the 5 pending rows' snapshot must survive it
    second = [schema_message()] + [record_message(event(i)) for i in range(30, 40)]
    second.append(state_message({"last": 39}))
    run_target(tmp_path, second, monkeypatch, state_max_lag_seconds=0, **TINY_RETENTION)
    counts = _sequence_counts(tmp_path)
    assert len(counts) == 40
    assert set(counts.values()) == {1}


def test_a_table_stays_stateful_after_its_stateful_snapshots_expire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expire_at_every_commit: None
) -> None:
    # run 1 is stateful; run 2 gets 10 records and no STATE (the tap died), in 5 commits that
    # expire everything expirable; run 3 resumes from run 1's STATE and re-sends run 2's rows
    first = [schema_message()] + [record_message(event(i)) for i in range(10)]
    run_target(tmp_path, [*first, state_message({"last": 9})], monkeypatch, **TINY_RETENTION)
    second = [schema_message()] + [record_message(event(i)) for i in range(10, 20)]
    run_target(tmp_path, second, monkeypatch, batch_size_rows=2, **TINY_RETENTION)
    with open_table(tmp_path) as table:
        # run 2 must not have ended "complete" as if the tap were stateless
        assert ever_stateful(table.metadata)
        ends = [s.summary.additional_properties.get("singer.run-end") for s in table.snapshots()]
        assert ends[-1] == "open"
    third = [*second, state_message({"last": 19})]
    run_target(tmp_path, third, monkeypatch, **TINY_RETENTION)
    counts = _sequence_counts(tmp_path)
    assert len(counts) == 20
    assert set(counts.values()) == {1}


def test_a_failed_expiry_is_a_warning_and_the_run_goes_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    expire_at_every_commit: None,
) -> None:
    def lose_every_race(table, **_: object):
        raise CommitConflictError(".".join(table.name()), "expiry", 12)

    monkeypatch.setattr(iceberg_expiry, "expire_table", lose_every_race)
    with caplog.at_level(logging.WARNING):
        _, states = run_target(
            tmp_path, _flush_per_state(0, 3), monkeypatch, state_max_lag_seconds=0, **TINY_RETENTION
        )
    assert len(states.states) == 3
    assert len(_sequence_counts(tmp_path)) == 3
    failed = [r.getMessage() for r in caplog.records if "iceberg_expiry_failed" in r.getMessage()]
    assert failed
    assert "expiry lost the commit race in all 12 attempts" in failed[0]
    assert "table=singer.events" in failed[0]


class _Table:
    def name(self) -> tuple[str, str]:
        return ("singer", "events")


def test_running_expiry_runs_at_the_first_commit_then_every_quarter_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[float] = []
    now = [1000.0]

    def record(table: _Table, *, retain_hours: float, rng: random.Random):
        calls.append(now[0])
        return table, 0, 0

    monkeypatch.setattr(iceberg_expiry, "expire_table", record)
    expiry = iceberg_expiry.RunningExpiry(
        0.4, rng=random.Random(1), stream="events", clock=lambda: now[0]
    )
    assert expiry.interval == pytest.approx(360.0)  # a quarter of 0.4 h
    for step in (0, 100, 359, 361, 500, 721.5):
        now[0] = 1000.0 + step
        expiry.after_commit(_Table())  # type: ignore[arg-type]
    assert calls == [1000.0, 1361.0, 1721.5]


@pytest.mark.parametrize(("hours", "interval"), [(1.0, 900.0), (100.0, 900.0), (1e-6, 1.0)])
def test_the_expiry_interval_is_bounded(hours: float, interval: float) -> None:
    assert (
        iceberg_expiry.RunningExpiry(hours, rng=random.Random(1), stream="s").interval == interval
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({**ICEBERG, "iceberg_snapshot_retention_hours": -1}, "-1 is not a positive number"),
        ({**ICEBERG, "iceberg_snapshot_retention_hours": 0}, "0 is not a positive number"),
        ({"iceberg_snapshot_retention_hours": 24}, "only Iceberg tables have snapshots"),
    ],
)
def test_a_retention_that_cannot_work_is_refused(
    tmp_path: Path, config: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigValidationError) as raised:
        TargetParquetParts(config={"output_dir": str(tmp_path), **config})
    (error,) = raised.value.errors
    assert error.startswith("iceberg_snapshot_retention_hours: ")
    assert expected in error


@pytest.mark.parametrize(
    "catalog",
    [{"type": "in-memory"}, {"type": "sql", "uri": "sqlite:///:memory:"}],
    ids=["in-memory", "sqlite-memory"],
)
def test_an_in_memory_catalog_is_refused_at_start(tmp_path: Path, catalog: dict) -> None:
    """It would end with the run (its tables with it), and each thread would see its own."""
    with pytest.raises(ConfigValidationError) as raised:
        TargetParquetParts(
            config={"output_dir": str(tmp_path), **ICEBERG, "iceberg_catalog": catalog}
        )
    (error,) = raised.value.errors
    assert error.startswith("iceberg_catalog: an in-memory catalog ends with the run")
