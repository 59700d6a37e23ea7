"""Parts: naming, atomic write, immutability, flush logs, layout, partitions, byte limit."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from target_parquet_parts import parts as parts_module
from target_parquet_parts.naming import new_part_name, sanitize_stream_name
from tests.target.conftest import part_files, read_rows, run_target, temp_files
from tests.target.singer_data import (
    BASE_SEQUENCE,
    event,
    events_lines,
    record_message,
    schema_message,
    state_message,
)

PART_NAME = re.compile(r"^part-\d{8}T\d{12}Z-[0-9a-f]{32}\.parquet$")


def test_every_flush_writes_a_new_uniquely_named_part(tmp_path, monkeypatch):
    out = tmp_path / "out"
    seen: dict[Path, tuple[int, int, int]] = {}

    def snapshot(_state):
        # Parts written earlier must never change (no append, no rewrite, no reopen).
        for part in part_files(out):
            stat = part.stat()
            fingerprint = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            assert seen.setdefault(part, fingerprint) == fingerprint

    run_target(
        out,
        events_lines(250, state_every=50),
        monkeypatch,
        on_state=snapshot,
        batch_size_rows=100,
        state_max_lag_seconds=3600,
    )
    parts = part_files(out)
    assert [p.parent.name for p in parts] == ["events"] * 3
    assert all(PART_NAME.match(p.name) for p in parts)
    assert sorted(pq.read_metadata(p).num_rows for p in parts) == [50, 100, 100]
    assert temp_files(out) == []
    snapshot(None)
    schemas = {pq.read_schema(p).to_string() for p in parts}
    assert len(schemas) == 1  # same columns and types in every part


def test_part_names_are_unique_even_in_the_same_microsecond():
    import datetime

    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    names = {new_part_name(now) for _ in range(1000)}
    assert len(names) == 1000


def test_int64_above_2_pow_53_and_unicode_stay_exact(tmp_path, monkeypatch):
    out = tmp_path / "out"
    big = event(7)
    big["message"] = "ü€😀" * 20000  # ~60 KB of unicode
    lines = [schema_message(), record_message(event(1)), record_message(big)]
    run_target(out, lines, monkeypatch)
    rows = read_rows(out)
    assert [r["sequence_number"] for r in rows] == [BASE_SEQUENCE + 1, BASE_SEQUENCE + 7]
    assert [r["sequence_number_str"] for r in rows] == [
        str(BASE_SEQUENCE + 1),
        str(BASE_SEQUENCE + 7),
    ]
    assert rows[1]["message"] == big["message"]
    assert rows[0]["event_time"].isoformat() == "2024-01-01T00:00:01+00:00"
    assert rows[0]["labels"] == [{"id": "00000000-0000-0000-0000-000000000001"}]


@pytest.mark.parametrize("overlap", [False, True])
def test_flush_logs_carry_the_convention_fields(tmp_path, monkeypatch, caplog, overlap):
    caplog.set_level(logging.DEBUG)
    run_target(
        tmp_path / "out", events_lines(30), monkeypatch, batch_size_rows=20, overlap_writes=overlap
    )
    events = [r for r in caplog.records if hasattr(r, "event_name")]
    names = [r.event_name for r in events]
    triple = ["flush_start", "parquet_part_write_success", "flush_complete"]
    if overlap:
        # The part writer logs a part's lines while the next batch may already have started.
        assert sorted(names) == sorted(triple * 2)
        successes = [r.path for r in events if r.event_name == "parquet_part_write_success"]
        completes = [r.path for r in events if r.event_name == "flush_complete"]
        assert successes == completes  # each part's success, then its flush_complete, in order
        assert names.index("flush_start") < names.index("parquet_part_write_success")
    else:
        assert names == triple * 2
    complete = next(r for r in events if r.event_name == "flush_complete")
    assert complete.stream == "events"
    assert complete.rows == 20
    assert complete.bytes == Path(complete.path).stat().st_size > 0
    for key in ("dataframe_build_ms", "parquet_write_ms", "flush_total_ms"):
        assert isinstance(getattr(complete, key), float)
    assert complete.flush_total_ms >= complete.parquet_write_ms
    success = next(r for r in events if r.event_name == "parquet_part_write_success")
    assert (success.mode, success.rows, success.path) == ("part", 20, complete.path)
    assert complete.getMessage().startswith("flush_complete stream=events rows=20 bytes=")
    assert any("part mode" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_stream_names_are_sanitized_and_stay_inside_output_dir(tmp_path, monkeypatch):
    out = tmp_path / "deep" / "out"
    evil = "../../escape"
    lines = [schema_message(evil), record_message(event(1), evil)]
    run_target(out, lines, monkeypatch)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert outside == []
    parts = part_files(out)
    assert len(parts) == 1
    assert parts[0].parent.parent == out
    assert parts[0].parent.name == sanitize_stream_name(evil)
    assert not sanitize_stream_name(evil).startswith(".")
    assert sanitize_stream_name("events") == "events"
    assert sanitize_stream_name("a:b") != sanitize_stream_name("a?b")
    assert sanitize_stream_name("..") not in {".", ".."}


def test_schema_change_starts_parts_with_the_new_schema(tmp_path, monkeypatch):
    out = tmp_path / "out"
    v1 = {"type": "object", "properties": {"id": {"type": "integer"}}}
    v2 = {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}
    lines = [
        schema_message("s", v1, ["id"]),
        record_message({"id": 1}, "s"),
        schema_message("s", v2, ["id"]),
        record_message({"id": 2, "name": "two"}, "s"),
    ]
    run_target(out, lines, monkeypatch)
    schemas = sorted(pq.read_schema(p).names for p in part_files(out))
    assert schemas == [["id"], ["id", "name"]]
    rows = duckdb.sql(
        f"select id, name from read_parquet('{out}/s/*.parquet', union_by_name=true) order by id"
    ).fetchall()
    assert rows == [(1, None), (2, "two")]


def test_hive_date_partitions(tmp_path, monkeypatch):
    out = tmp_path / "out"
    day = 86_400
    lines = [schema_message()] + [record_message(event(i)) for i in (0, 1, day, day + 5)]
    run_target(out, lines, monkeypatch, partition_date_field="event_time")
    dirs = sorted({p.parent.name for p in part_files(out)})
    assert dirs == ["date=2024-01-01", "date=2024-01-02"]
    dataset = ds.dataset(out / "events", format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == 4
    assert sorted(str(d) for d in table.column("date").to_pylist()) == [
        "2024-01-01",
        "2024-01-01",
        "2024-01-02",
        "2024-01-02",
    ]


def test_partition_field_with_wrong_type_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="partition_date_field 'message'"):
        run_target(tmp_path / "out", events_lines(1), monkeypatch, partition_date_field="message")


def test_max_batch_bytes_flushes_early(tmp_path, monkeypatch):
    out = tmp_path / "out"
    lines = [schema_message()]
    for i in range(300):
        rec = event(i)
        rec["message"] = "x" * 1000
        lines.append(record_message(rec))
    run_target(out, lines, monkeypatch, max_batch_bytes=64 * 1024)
    sizes = [pq.read_metadata(p).num_rows for p in part_files(out)]
    assert sum(sizes) == 300
    assert len(sizes) >= 4  # ~1.2 KB per record, 64 KB per batch
    assert max(sizes) <= 128


def test_parallel_drains_of_many_streams(tmp_path, monkeypatch):
    out = tmp_path / "out"
    lines = []
    for n in range(6):
        stream = f"s{n}"
        lines.append(schema_message(stream))
        lines.extend(record_message(event(i), stream) for i in range(40))
    lines.append(state_message({"done": True}))
    _, capture = run_target(out, lines, monkeypatch)
    assert capture.states == [{"done": True}]
    assert sorted(p.parent.name for p in part_files(out)) == [f"s{n}" for n in range(6)]
    table = ds.dataset([str(p) for p in part_files(out)], format="parquet").to_table()
    assert table.num_rows == 240


def test_failed_write_leaves_no_part_and_no_temp_file(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def broken_write(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(parts_module.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        run_target(out, events_lines(5), monkeypatch)
    assert part_files(out) == []
    assert temp_files(out) == []


def test_leftover_temp_files_are_swept_and_never_look_like_parts(tmp_path, monkeypatch):
    out = tmp_path / "out"
    stale = out / "events" / ".part-20240101T000000000000Z-dead.parquet.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a parquet file")
    dataset_files = ds.dataset(out / "events", format="parquet").files
    assert dataset_files == []  # readers never take the temp name for a part
    run_target(out, events_lines(3), monkeypatch)
    assert not stale.exists()
    assert len(part_files(out)) == 1


def test_json_text_columns_for_shapes_parquet_cannot_hold(tmp_path, monkeypatch):
    out = tmp_path / "out"
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "free": {"type": "object"},
            "mixed": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "empty": {"type": ["object", "null"], "properties": {}},
            "amount": {"type": "number"},
        },
    }
    lines = [
        schema_message("j", schema, ["id"]),
        record_message(
            {"id": 1, "free": {"a": [1, {}]}, "mixed": 5, "empty": {}, "amount": 1.25}, "j"
        ),
        record_message({"id": 2, "free": {}, "mixed": "x", "empty": None, "amount": 3}, "j"),
    ]
    run_target(out, lines, monkeypatch)
    table = pq.read_table(part_files(out)[0])
    assert table.schema.field("free").type == pa.string()
    assert table.schema.field("amount").type == pa.float64()
    assert table.to_pylist() == [
        {"id": 1, "free": '{"a":[1,{}]}', "mixed": "5", "empty": "{}", "amount": 1.25},
        {"id": 2, "free": "{}", "mixed": '"x"', "empty": None, "amount": 3.0},
    ]


def test_sdk_record_path_with_stream_maps_and_metadata(tmp_path, monkeypatch):
    """Streams with maps or _sdc metadata take the SDK's per-record path: same guarantees."""
    out = tmp_path / "out"
    lines = list(events_lines(30, state_every=10))
    target, capture = run_target(
        out,
        lines,
        monkeypatch,
        batch_size_rows=20,
        add_record_metadata=True,
        stream_maps={"events": {"message": "__NULL__", "seq2": "sequence_number_str + '!'"}},
        overlap_writes=False,  # each STATE at its flush (overlap: tests/target/test_overlap.py)
    )
    assert not target._fast_sinks  # the SDK path was used
    rows = read_rows(out)
    assert len(rows) == 30
    assert "message" not in rows[0]
    assert rows[0]["seq2"] == event(0)["sequence_number_str"] + "!"
    assert rows[0]["_sdc_received_at"].tzinfo is not None  # date-time parsed column-wise
    assert [s["bookmarks"]["events"]["last"] for s in capture.states] == [9, 19, 29]


def test_validation_off_still_refuses_values_a_column_cannot_hold(tmp_path, monkeypatch):
    from singer_sdk.exceptions import InvalidRecord

    bad = event(2)
    bad["timestamp"] = "soon"
    lines = [schema_message(), record_message(event(1)), record_message(bad)]
    with pytest.raises(InvalidRecord, match="field 'timestamp'"):
        run_target(tmp_path / "out", lines, monkeypatch, validate_records=False)


def test_schema_change_writes_the_old_schemas_records_at_once(tmp_path, monkeypatch):
    out = tmp_path / "out"
    v1 = {"type": "object", "properties": {"id": {"type": "integer"}}}
    v2 = {"type": "object", "properties": {"id": {"type": "integer"}, "x": {"type": "string"}}}
    seen_at_state = []
    lines = [
        schema_message("s", v1, ["id"]),
        record_message({"id": 1}, "s"),
        state_message({"after": 1}),
        schema_message("s", v2, ["id"]),
        record_message({"id": 2, "x": "b"}, "s"),
    ]
    run_target(
        out,
        lines,
        monkeypatch,
        state_max_lag_seconds=3600,
        on_state=lambda _s: seen_at_state.append(len(part_files(out))),
        overlap_writes=False,  # the part is durable when the SCHEMA's flush returns
    )
    # The STATE waiting for record 1 came out when the SCHEMA change flushed it, not at the end.
    assert seen_at_state == [1]


def test_write_sequence_temp_fsync_journal_link_dirsync(tmp_path, monkeypatch):
    out = tmp_path / "out"
    steps: list[str] = []
    real_write, real_sync, real_link = (
        parts_module.pq.write_table,
        parts_module._fsync_file,
        parts_module.os.link,
    )
    real_dir_sync = parts_module.fsync_dir

    def write_table(table, where, **kwargs):
        steps.append(f"write {Path(where).name.startswith('.part-')} {str(where)[-4:]}")
        real_write(table, where, **kwargs)

    def sync(path):
        steps.append(f"fsync {path.name.endswith('.tmp')}")
        real_sync(path)

    def link(src, dst):
        steps.append(f"link {Path(dst).exists()}")
        real_link(src, dst)

    def dir_sync(directory):
        steps.append(f"dirsync {directory.name}")
        real_dir_sync(directory)

    from target_parquet_parts import journal as journal_module

    real_record = journal_module.Journal.record

    def record(self, *args, **kwargs):
        steps.append("journal")
        real_record(self, *args, **kwargs)

    monkeypatch.setattr(parts_module.pq, "write_table", write_table)
    monkeypatch.setattr(parts_module, "_fsync_file", sync)
    monkeypatch.setattr(parts_module.os, "link", link)
    monkeypatch.setattr(parts_module, "fsync_dir", dir_sync)
    monkeypatch.setattr(journal_module.Journal, "record", record)
    target, _ = run_target(out, events_lines(5), monkeypatch)
    assert "events" in target._fast_sinks  # the fast record path was taken
    assert steps == [
        f"dirsync {tmp_path.name}",  # out created
        "dirsync out",  # out/_journal created (the run lock)
        "dirsync out",  # out/events created
        "write True .tmp",
        "fsync True",
        "journal",
        "link False",
        "dirsync events",
    ]
    assert temp_files(out) == []


def test_publish_never_overwrites(tmp_path):
    temp = tmp_path / ".part-x.parquet.tmp"
    final = tmp_path / "part-x.parquet"
    temp.write_bytes(b"new")
    final.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        parts_module._publish(temp, final)
    assert final.read_bytes() == b"old"


@pytest.mark.parametrize(
    ("setting", "codec"),
    [
        (None, "ZSTD"),
        ("snappy", "SNAPPY"),
        ("gzip", "GZIP"),
        ("none", "UNCOMPRESSED"),
    ],
)
def test_compression_setting(tmp_path, monkeypatch, setting, codec):
    out = tmp_path / "out"
    config = {} if setting is None else {"compression": setting}
    run_target(out, events_lines(3), monkeypatch, **config)
    [part] = part_files(out)
    assert pq.read_metadata(part).row_group(0).column(0).compression == codec
