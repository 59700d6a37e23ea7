"""Every part the target publishes can be read back: what Parquet readers cannot take is refused
(with stream, line and field path) or stored as JSON text, and each part's footer is read back
before it is published."""

from __future__ import annotations

import json
import sys

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from singer_sdk.exceptions import InvalidRecord

from target_parquet_parts import parts as parts_module
from target_parquet_parts.arrow_schema import MAX_PARQUET_DEPTH, stream_spec
from target_parquet_parts.columns import ColumnError, build_table
from target_parquet_parts.errors import UnreadablePartError
from tests.target.conftest import part_files, run_target, temp_files
from tests.target.singer_data import events_lines, record_message, schema_message


def _nested(depth: int, leaf_schema: dict, leaf_value, kind: str = "object"):
    schema, value = leaf_schema, leaf_value
    for _ in range(depth):
        if kind == "object":
            schema = {"type": "object", "properties": {"a": schema}}
            value = {"a": value}
        else:
            schema = {"type": "array", "items": schema}
            value = [value]
    return schema, value


@pytest.mark.parametrize(("kind", "depth"), [("object", 100), ("object", 150), ("array", 60)])
def test_nesting_deeper_than_readers_take_is_stored_as_json_text(
    tmp_path, monkeypatch, kind, depth
):
    out = tmp_path / "out"
    deep_schema, deep_value = _nested(depth, {"type": "integer"}, 7, kind)
    schema = {"type": "object", "properties": {"id": {"type": "integer"}, "deep": deep_schema}}
    lines = [
        schema_message("s", schema, ["id"]),
        record_message({"id": 1, "deep": deep_value}, "s"),
    ]
    run_target(out, lines, monkeypatch)
    (part,) = part_files(out)
    assert pq.read_metadata(part).schema.to_arrow_schema().names == ["id", "deep"]
    (row,) = ds.dataset(part).to_table().to_pylist()
    value = row["deep"]
    while not isinstance(value, str):  # typed levels, then the rest as JSON text
        value = value["a"] if kind == "object" else value[0]
    node = json.loads(value)
    while node != 7:
        node = node["a"] if kind == "object" else node[0]
    assert stream_spec(schema).arrow_schema.field("deep").type.num_fields <= 1
    # The journal reads key columns of parts back on the next run: it must open them too.
    assert pq.read_table(part, columns=["id"]).num_rows == 1


def test_typed_nesting_stays_within_the_depth_limit():
    schema, _ = _nested(200, {"type": "integer"}, 7)
    deep = stream_spec({"properties": {"deep": schema}}).arrow_schema.field("deep").type
    levels = 1  # the root
    while getattr(deep, "num_fields", 0):
        levels += 1
        deep = deep.field(0).type
    assert levels + 1 <= MAX_PARQUET_DEPTH  # + the leaf (a JSON text column)


DATED = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "day": {"type": ["string", "null"], "format": "date"},
        "at": {"type": ["string", "null"], "format": "date-time"},
        "inner": {
            "type": ["object", "null"],
            "properties": {"at": {"type": ["string", "null"], "format": "date-time"}},
        },
        "n": {"type": ["number", "null"]},
        "ns": {"type": ["array", "null"], "items": {"type": "number"}},
    },
}


@pytest.mark.parametrize(
    ("record_json", "field", "reason"),
    [
        ('{"id": 2, "day": "0000-01-01"}', "day", "date '0000-01-01' is outside the years 1"),
        ('{"id": 2, "at": "0000-06-01T00:00:00Z"}', "at", "date-time '0000-06-01T00:00:00Z'"),
        (
            '{"id": 2, "inner": {"at": "0001-01-01T00:00:00+01:00"}}',
            "inner.at",
            "date-time '0001-01-01T00:00:00+01:00' is outside the years 1 to 9999 (UTC)",
        ),
        ('{"id": 2, "n": 1e400}', "n", "number 1E+400 does not fit in float64"),
        ('{"id": 2, "ns": [1.5, -1e400]}', "ns[]", "number -1E+400 does not fit in float64"),
        ('{"id": 2, "n": 1' + "0" * 400 + "}", "n", "number 10000000000"),
    ],
)
def test_values_readers_cannot_take_are_refused_with_the_field_path(
    tmp_path, monkeypatch, record_json, field, reason
):
    out = tmp_path / "out"
    good = '{"type": "RECORD", "stream": "d", "record": {"id": 1, "day": "0001-01-01", "n": 1.5}}'
    bad = '{"type": "RECORD", "stream": "d", "record": ' + record_json + "}"
    lines = [schema_message("d", DATED, ["id"]), good, bad]
    with pytest.raises(InvalidRecord) as info:
        run_target(out, lines, monkeypatch)
    message = str(info.value)
    assert f"stream 'd', input line 3, field '{field}': " in message
    assert reason in message
    assert part_files(out) == []


def test_json_text_nested_too_deeply_to_store_names_the_field():
    spec = stream_spec({"properties": {"j": {"type": "object"}}})
    value: dict = {}
    for _ in range(sys.getrecursionlimit() + 10):
        value = {"a": value}
    with pytest.raises(ColumnError) as info:
        build_table([{"j": {}}, {"j": value}], spec)
    assert (info.value.path, info.value.row) == ("j", 1)
    assert info.value.reason == "value is nested too deeply to check or store"


def test_a_part_that_does_not_open_is_never_published(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_write = parts_module.pq.write_table

    def write_without_footer(table, where, **kwargs):
        real_write(table, where, **kwargs)
        with open(where, "r+b") as handle:  # a torn write: the footer's end is lost
            handle.truncate(handle.seek(0, 2) - 8)

    monkeypatch.setattr(parts_module.pq, "write_table", write_without_footer)
    with pytest.raises(UnreadablePartError) as info:
        run_target(out, events_lines(3), monkeypatch)
    message = str(info.value)
    assert message.startswith(f"stream 'events': the part written to {out / 'events'}/.part-")
    assert "cannot be read back" in message
    assert message.endswith("it is not published")
    assert part_files(out) == []
    assert temp_files(out) == []
