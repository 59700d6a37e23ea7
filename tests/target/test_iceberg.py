"""table_format iceberg, in process: table layout, schema evolution, replay rules, commit retry."""

from __future__ import annotations

import json
import logging
import random

import pyarrow as pa
import pytest

from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.columns import build_table
from target_parquet_parts.iceberg import IcebergSchemaError, load_iceberg_catalog
from target_parquet_parts.iceberg_commits import commit_with_retry, stage_snapshot
from target_parquet_parts.iceberg_ledger import (
    ReplaySet,
    commit_properties,
    pending_snapshot_ids,
)
from target_parquet_parts.settings import TargetSettings
from tests.target.conftest import part_files, run_target
from tests.target.iceberg_helpers import (
    ICEBERG,
    duckdb_counts,
    key_multiset,
    open_table,
    scan,
    summaries,
)
from tests.target.singer_data import (
    BASE_SEQUENCE,
    EVENTS_SCHEMA,
    event,
    events_lines,
    record_message,
    schema_message,
    state_message,
)


def test_flushes_become_commits_read_back_by_pyiceberg_and_duckdb(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _, capture = run_target(
        out,
        events_lines(250, state_every=100),
        monkeypatch,
        batch_size_rows=100,
        partition_date_field="event_time",
        **ICEBERG,
    )
    assert capture.states == [{"bookmarks": {"events": {"last": i}}} for i in (99, 199)]
    rows = scan(out)
    assert rows.num_rows == 250
    assert key_multiset(rows) == sorted(
        (event(i)["log_id"], event(i)["sequence_number_str"]) for i in range(250)
    )
    assert sorted(rows.column("sequence_number").to_pylist()) == [
        BASE_SEQUENCE + i for i in range(250)
    ]  # int64 exact far above 2**53
    assert duckdb_counts(out) == (250, 250)
    assert part_files(out / "events") == []  # no plain parts, no journal
    assert not (out / "_journal").exists()
    with open_table(out) as table:
        assert [f.name for f in table.spec().fields] == ["event_time_day"]
        assert str(table.spec().fields[0].transform) == "day"
        assert table.schema().find_column_name(table.spec().fields[0].source_id) == "event_time"
        days = {task.file.partition[0] for task in table.scan().plan_files()}
        assert days == {19723}  # 2024-01-01 in days since the epoch
        assert table.name() == ("singer", "events")
        assert type(table.io).__name__ == "DurableLocalFileIO"  # fsyncs what it writes
    history = summaries(out)
    commits = [s for s in history if "singer.flush" in s]
    assert [s["added-records"] for s in commits] == ["100", "100", "50"]
    assert {s["singer.run-id"] for s in history} == {commits[0]["singer.run-id"]}
    assert [s["singer.state-index"] for s in commits] == ["0", "1", "2"]
    # 50 records came after the last STATE: the run ends "open" (a rerun re-sends them)
    assert history[-1]["singer.run-end"] == "open"
    assert "added-data-files" not in history[-1]  # the end marker adds no data


def test_custom_namespace_and_sanitized_table_name(tmp_path, monkeypatch):
    out = tmp_path / "out"
    stream = "weird:stream!"
    lines = [schema_message(stream)] + [record_message(event(i), stream) for i in range(3)]
    run_target(out, lines, monkeypatch, iceberg_namespace="lake.raw", **ICEBERG)
    catalog = load_iceberg_catalog(TargetSettings(output_dir=str(out)))
    try:
        [(identifier)] = catalog.list_tables(("lake", "raw"))
        assert identifier[-1].startswith("weird_stream_-")
        assert catalog.load_table(identifier).scan().to_arrow().num_rows == 3
    finally:
        catalog.close()


def test_schema_message_with_a_new_column_evolves_the_table(tmp_path, monkeypatch):
    out = tmp_path / "out"
    wider = json.loads(json.dumps(EVENTS_SCHEMA))
    wider["properties"]["severity"] = {"type": ["string", "null"]}
    lines = [schema_message()] + [record_message(event(i)) for i in range(5)]
    lines.append(
        json.dumps(
            {
                "type": "SCHEMA",
                "stream": "events",
                "schema": wider,
                "key_properties": ["log_id", "sequence_number_str"],
            }
        )
    )
    lines += [record_message(event(i) | {"severity": "high"}) for i in range(5, 8)]
    lines.append(state_message({"done": 1}))
    run_target(out, lines, monkeypatch, **ICEBERG)
    rows = scan(out)
    assert rows.num_rows == 8
    by_sequence = rows.sort_by("sequence_number")
    assert by_sequence.column("severity").to_pylist() == [None] * 5 + ["high"] * 3
    with open_table(out) as table:
        assert table.schema().find_field("severity").optional
        assert len(table.schemas()) == 2


def test_incompatible_type_change_names_stream_table_and_field(tmp_path, monkeypatch):
    out = tmp_path / "out"
    changed = json.loads(json.dumps(EVENTS_SCHEMA))
    changed["properties"]["timestamp"] = {"type": "string"}
    lines = [schema_message(), record_message(event(0))]
    lines.append(
        json.dumps(
            {
                "type": "SCHEMA",
                "stream": "events",
                "schema": changed,
                "key_properties": ["log_id", "sequence_number_str"],
            }
        )
    )
    lines.append(record_message(event(1) | {"timestamp": "late"}))
    with pytest.raises(IcebergSchemaError) as failure:
        run_target(out, lines, monkeypatch, **ICEBERG)
    message = str(failure.value)
    assert "stream 'events'" in message
    assert "singer.events" in message
    assert "timestamp" in message


def _write_commit(table, rows: pa.Table, props: dict[str, str]):
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    files = list(_dataframe_to_data_files(table.metadata, rows, table.io))
    table, _ = commit_with_retry(
        table,
        lambda tx: stage_snapshot(tx, props, files),
        rng=random.Random(1),
        log=logging.getLogger("test"),
        stream="events",
    )
    return table


def test_a_stale_writer_retries_on_commit_conflict_and_logs_it(tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    run_target(out, events_lines(10), monkeypatch, **ICEBERG)
    spec = stream_spec(EVENTS_SCHEMA)
    catalog = load_iceberg_catalog(TargetSettings(output_dir=str(out)))
    try:
        first = catalog.load_table(("singer", "events"))
        second = catalog.load_table(("singer", "events"))  # same base snapshot
        _write_commit(first, build_table([event(100)], spec), commit_properties("a", 1, 0, 0))
        caplog.set_level(logging.INFO)
        second = _write_commit(
            second, build_table([event(101)], spec), commit_properties("b", 1, 0, 0)
        )
        assert second.scan().to_arrow().num_rows == 12  # both commits kept
    finally:
        catalog.close()
    retries = [r.getMessage() for r in caplog.records if "iceberg_commit_retry" in r.getMessage()]
    assert len(retries) == 1
    assert "attempt=1" in retries[0]
    assert "reason=CommitFailedException" in retries[0]


class _Snap:
    def __init__(self, snapshot_id: int, **props: str) -> None:
        self.snapshot_id = snapshot_id
        self.summary = type("S", (), {"additional_properties": props})()


def test_pending_snapshots_are_the_commits_after_the_last_recorded_state():
    def commit(i, run, flush, index, emitted):
        return _Snap(i, **commit_properties(run, flush, index, emitted))

    snapshots = [
        commit(1, "crashed", 1, 0, 0),
        commit(2, "crashed", 2, 1, 1),  # STATE 1 emitted before this commit: flush 1 covered
        commit(3, "crashed", 3, 1, 1),  # same STATE window: pending
        commit(4, "clean", 1, 0, 0),
        _Snap(5, **{"singer.run-id": "clean", "singer.run-end": "complete"}),
        commit(6, "open-end", 1, 0, 0),
        commit(7, "open-end", 2, 3, 2),
        _Snap(
            8,
            **{"singer.run-id": "open-end", "singer.run-end": "open", "singer.states-emitted": "3"},
        ),
        _Snap(9, **{"singer.compaction": "true"}),
        commit(10, "me", 1, 0, 0),
    ]
    assert sorted(pending_snapshot_ids(snapshots, exclude_run="me")) == [2, 3, 7]


def _rows(records):
    return build_table(records, stream_spec(EVENTS_SCHEMA))


def test_replay_set_keyed_drops_only_same_key_and_same_content():
    stored = _rows([event(i) for i in range(3)])
    replay = ReplaySet(stored, ["log_id", "sequence_number_str"])
    newer = event(1) | {"message": "edited"}
    batch = _rows([event(0), newer, event(2), event(2), event(3)])
    rest, dropped = replay.drop_replayed(batch)
    assert dropped == 3  # event 0 and both copies of event 2
    assert rest.column("message").to_pylist() == ["edited", event(3)["message"]]


def test_replay_set_keyless_absorbs_one_copy_per_stored_row():
    stored = _rows([event(0), event(0), event(1)])
    replay = ReplaySet(stored, [])
    first, dropped = replay.drop_replayed(_rows([event(0), event(1), event(2)]))
    assert dropped == 2
    second, dropped_again = replay.drop_replayed(_rows([event(0), event(0), event(1)]))
    assert dropped_again == 1  # one stored copy of event 0 was left; event 1 is used up
    assert second.num_rows == 2
    assert first.column("sequence_number").to_pylist() == [event(2)["sequence_number"]]


def test_replay_matches_rows_read_back_from_iceberg(tmp_path, monkeypatch):
    """Digests of rows read back through pyiceberg equal those of freshly built batches."""
    out = tmp_path / "out"
    run_target(out, events_lines(20), monkeypatch, **ICEBERG)
    stored = scan(out)  # large_string, list<element: ...>: other Arrow types than the batch
    replay = ReplaySet(stored, ["log_id", "sequence_number_str"])
    rest, dropped = replay.drop_replayed(_rows([event(i) for i in range(25)]))
    assert dropped == 20
    assert rest.num_rows == 5


def test_partition_source_is_the_named_field_wherever_it_is(tmp_path, monkeypatch):
    out = tmp_path / "out"
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "received_at": {"type": "string", "format": "date-time"},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}},
            "n": {"type": ["integer", "null"]},
        },
    }
    lines = [schema_message("things", schema, keys=["id"])]
    lines += [
        record_message(
            {"id": str(i), "received_at": f"2024-03-0{1 + i % 2}T10:00:00Z", "tags": [], "n": i},
            "things",
        )
        for i in range(6)
    ]
    run_target(out, lines, monkeypatch, partition_date_field="received_at", **ICEBERG)
    with open_table(out, "things") as table:
        [field] = table.spec().fields
        assert table.schema().find_column_name(field.source_id) == "received_at"
        assert sorted({t.file.partition[0] for t in table.scan().plan_files()}) == [19783, 19784]


def test_iceberg_flushes_are_larger_by_default(tmp_path, monkeypatch):
    out = tmp_path / "out"
    target, _ = run_target(out, events_lines(3), monkeypatch, **ICEBERG)
    assert {sink.max_size for sink in target._sinks} == {100_000}
    explicit, _ = run_target(
        tmp_path / "o2", events_lines(3), monkeypatch, batch_size_rows=7, **ICEBERG
    )
    assert {sink.max_size for sink in explicit._sinks} == {7}


def test_catalog_properties(tmp_path):
    from target_parquet_parts.iceberg import catalog_properties

    embedded = catalog_properties(TargetSettings(output_dir=str(tmp_path / "o")))
    assert embedded["type"] == "sql"
    assert embedded["uri"].startswith(f"sqlite:///{tmp_path / 'o' / 'catalog.db'}")
    assert embedded["warehouse"] == (tmp_path / "o").as_uri()
    assert embedded["py-io-impl"].endswith("DurableLocalFileIO")
    rest = catalog_properties(
        TargetSettings(
            output_dir="s3://lake/x",
            iceberg_catalog={"type": "rest", "uri": "http://c", "x": True},
        )
    )
    assert rest == {
        "type": "rest",
        "uri": "http://c",
        "x": "true",
    }  # the server names the warehouse
    sql = catalog_properties(
        TargetSettings(
            output_dir="s3://lake/x", iceberg_catalog={"type": "sql", "uri": "postgresql://h/d"}
        )
    )
    assert sql["warehouse"] == "s3://lake/x"
    with pytest.raises(ValueError, match="set iceberg_catalog"):
        catalog_properties(TargetSettings(output_dir="s3://lake/x"))


def test_a_writer_that_loses_the_race_to_create_the_table_takes_the_winner_s(tmp_path):
    """Two writers starting together: both see no table, the first creates it, the second's
    insert fails on the SQL catalog's unique key. The second must use the table, not fail."""
    import sqlalchemy.exc

    from target_parquet_parts.iceberg import IcebergWriter

    config = TargetSettings(output_dir=str(tmp_path / "out"), table_format="iceberg")
    arrow_schema = stream_spec(EVENTS_SCHEMA).arrow_schema
    winner, loser = IcebergWriter(config, "winner"), IcebergWriter(config, "loser")
    try:
        original = loser.catalog.create_namespace_if_not_exists

        def racing_create(namespace, *args, **kwargs):
            winner.stream_table("events").prepare(arrow_schema, None)  # the winner, just now
            raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint"))

        loser.catalog.create_namespace_if_not_exists = racing_create  # type: ignore[method-assign]
        loser.stream_table("events").prepare(arrow_schema, None)
        loser.catalog.create_namespace_if_not_exists = original  # type: ignore[method-assign]
        assert loser.stream_table("events").table is not None
        assert loser.catalog.load_table(("singer", "events")).metadata.table_uuid == (
            winner.catalog.load_table(("singer", "events")).metadata.table_uuid
        )
    finally:
        winner.close()
        loser.close()


def test_writers_opening_a_new_catalog_together_all_get_it(tmp_path, monkeypatch, caplog):
    """The SQL catalog checks for its own tables, then creates them: writers starting together
    all see none, and the losers' CREATE TABLE failed with "table iceberg_tables already exists"
    (a CI run of three split jobs). The loser must open the catalog the winner created."""
    import sqlalchemy.exc
    from pyiceberg.catalog.sql import SqlCatalog

    config = TargetSettings(output_dir=str(tmp_path / "out"), table_format="iceberg")
    original = SqlCatalog.create_tables
    raced: list[bool] = []

    def racing_create_tables(self):
        if not raced:
            raced.append(True)
            original(self)  # the winner, between this writer's check and its create
            raise sqlalchemy.exc.OperationalError(
                "CREATE TABLE iceberg_tables", {}, Exception("table iceberg_tables already exists")
            )
        original(self)

    monkeypatch.setattr(SqlCatalog, "create_tables", racing_create_tables)
    with caplog.at_level(logging.INFO, logger="target_parquet_parts.iceberg"):
        catalog = load_iceberg_catalog(config)
    assert raced == [True]
    catalog.create_namespace("singer")
    assert catalog.list_namespaces() == [("singer",)]
    assert "iceberg_catalog_retry catalog=default attempt=1 reason=OperationalError" in caplog.text


def test_a_catalog_that_keeps_failing_to_open_raises_its_error(tmp_path, monkeypatch):
    import sqlalchemy.exc
    from pyiceberg.catalog.sql import SqlCatalog

    def broken(self):
        raise sqlalchemy.exc.OperationalError("CREATE TABLE", {}, Exception("disk I/O error"))

    monkeypatch.setattr(SqlCatalog, "create_tables", broken)
    config = TargetSettings(output_dir=str(tmp_path / "out"), table_format="iceberg")
    with pytest.raises(sqlalchemy.exc.OperationalError, match="disk I/O error"):
        load_iceberg_catalog(config)
