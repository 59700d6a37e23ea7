"""Bulk validation refuses the records the SDK's per-record validator refuses."""

from __future__ import annotations

import decimal
import logging

import pytest
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks.core import JSONSchemaValidator

from target_parquet_parts.arrow_schema import needs_record_validator, stream_spec
from target_parquet_parts.columns import ColumnError, build_table
from target_parquet_parts.sinks import ParquetPartsSink
from target_parquet_parts.target import TargetParquetParts
from tests.target.conftest import run_target
from tests.target.singer_data import (
    EVENTS_KEYS,
    EVENTS_SCHEMA,
    changed,
    event,
    record_message,
    schema_message,
    state_message,
)

D = decimal.Decimal
SCHEMA = {
    "type": "object",
    "properties": {
        "i": {"type": "integer"},
        "n": {"type": ["number", "null"]},
        "s": {"type": ["string", "null"]},
        "b": {"type": ["boolean", "null"]},
        "t": {"type": ["string", "null"], "format": "date-time"},
        "d": {"type": ["string", "null"], "format": "date"},
        "tm": {"type": ["string", "null"], "format": "time"},
        "a": {"type": ["array", "null"], "items": {"type": "string"}},
        "o": {
            "type": ["object", "null"],
            "properties": {"x": {"type": "integer"}, "y": {"type": ["string", "null"]}},
            "required": ["x"],
        },
        "lo": {
            "type": ["array", "null"],
            "items": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
        "j": {"type": ["object", "null"]},
        "m": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "string"}}]},
    },
    "required": ["i"],
}
GOOD = {
    "i": 1,
    "n": D("1.5"),
    "s": "x",
    "b": True,
    "t": "2024-01-01T00:00:00.5+02:00",
    "d": "2024-01-02",
    "tm": "12:30:00.5",
    "a": ["p", "q"],
    "o": {"x": 1, "y": None},
    "lo": [{"id": "a"}],
    "j": {"any": [1]},
    "m": 3,
}
BAD = {
    "integer as string": {"i": "1"},
    "bool as integer": {"i": True},
    "fraction as integer": {"i": D("1.5")},
    "integral decimal as integer": {"i": D("1.0")},
    "null integer": {"i": None},
    "missing required": {"i": ...},
    "string as number": {"n": "1.5"},
    "bool as number": {"n": False},
    "number as string": {"s": 5},
    "integer as boolean": {"b": 1},
    "string as array": {"a": "pq"},
    "array item type": {"a": ["p", 5]},
    "null array item": {"a": [None]},
    "object as string": {"s": {"k": 1}},
    "string as object": {"o": "x"},
    "nested type": {"o": {"x": "1"}},
    "nested required": {"o": {"y": "z"}},
    "nested null": {"o": {"x": None}},
    "list of struct item type": {"lo": [{"id": 7}]},
    "list item not object": {"lo": ["a"]},
    "free object as list": {"j": [1]},
    "anyOf mismatch": {"m": "s"},
    "anyOf null": {"m": None},
}
BAD_SYNTAX = {  # the SDK refuses these when it parses date-times (ERROR treatment)
    "bad date-time": {"t": "yesterday"},
    "bad date": {"d": "2024-13-45"},
    "bad time": {"tm": "25:99"},
    "int64 overflow": {"i": 2**63},
}


def _record(change: dict) -> dict:
    return changed(GOOD, change)


def test_good_record_passes_both():
    JSONSchemaValidator(SCHEMA).validate(GOOD)
    table = build_table([GOOD, GOOD], stream_spec(SCHEMA))
    row = table.to_pylist()[0]
    assert row["n"] == 1.5
    assert row["t"].isoformat() == "2023-12-31T22:00:00.500000+00:00"
    assert row["j"] == '{"any":[1]}'
    assert row["m"] == "3"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_records_are_refused_by_both(case):
    record = _record(BAD[case])
    with pytest.raises(InvalidRecord):
        JSONSchemaValidator(SCHEMA).validate(record)
    with pytest.raises(ColumnError) as info:
        build_table([GOOD, record, GOOD], stream_spec(SCHEMA))
    assert info.value.row == 1  # points at the offending record
    field = next(iter(BAD[case]))
    assert info.value.path.startswith(field)


@pytest.mark.parametrize("case", sorted(BAD_SYNTAX))
def test_unparseable_values_are_refused(case):
    record = _record(BAD_SYNTAX[case])
    with pytest.raises(ColumnError) as info:
        build_table([GOOD, record], stream_spec(SCHEMA))
    assert info.value.row == 1


def test_offsets_without_timezone_and_nanoseconds_parse_like_the_sdk():
    records = [
        dict(GOOD, t=value)
        for value in (
            "2024-01-01T00:00:00",
            "2024-01-01 01:00:00.123456-05:00",
            "2024-01-01T00:00:00Z",
        )
    ]
    table = build_table(records, stream_spec(SCHEMA))
    assert [v.isoformat() for v in table.column("t").to_pylist()] == [
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T06:00:00.123456+00:00",
        "2024-01-01T00:00:00+00:00",
    ]


def test_per_record_validator_only_where_bulk_cannot_enforce(tmp_path):
    assert not needs_record_validator(EVENTS_SCHEMA)
    assert not needs_record_validator(SCHEMA)
    with_enum = {"type": "object", "properties": {"c": {"type": "string", "enum": ["a"]}}}
    assert needs_record_validator(with_enum)
    closed = {
        "type": "object",
        "properties": {"c": {"type": "string"}},
        "additionalProperties": False,
    }
    assert needs_record_validator(closed)
    target = TargetParquetParts(config={"output_dir": str(tmp_path)})
    fast = ParquetPartsSink(target, "events", EVENTS_SCHEMA, EVENTS_KEYS)
    slow = ParquetPartsSink(target, "enum", with_enum, [])
    assert fast.get_validator() is None
    assert isinstance(slow.get_validator(), JSONSchemaValidator)
    target.process_endofpipe()  # releases the run lock: one target per output_dir
    off = TargetParquetParts(config={"output_dir": str(tmp_path), "validate_records": False})
    assert ParquetPartsSink(off, "enum", with_enum, []).get_validator() is None
    off.process_endofpipe()


def test_schema_fallback_validator_refuses_enum_violations(tmp_path, monkeypatch):
    from tests.target.conftest import run_target
    from tests.target.singer_data import record_message, schema_message

    schema = {"type": "object", "properties": {"c": {"type": "string", "enum": ["a"]}}}
    lines = [schema_message("e", schema, []), record_message({"c": "zzz"}, "e")]
    with pytest.raises(InvalidRecord, match="'zzz' is not one of"):
        run_target(tmp_path / "out", lines, monkeypatch)


def test_fields_outside_the_schema_are_named_once_per_stream(tmp_path, monkeypatch, caplog):
    """Not written (the schema is the table's), but never dropped without a word."""
    caplog.set_level(logging.INFO)
    lines = [schema_message()]
    for i in range(250):
        record = {**event(i), "surprise": i, "also_new": "x"}
        lines.append(record_message(record))
    lines.append(state_message({"last": 249}))
    run_target(tmp_path / "out", lines, monkeypatch, batch_size_rows=100)
    told = [
        r.getMessage() for r in caplog.records if "record_fields_not_in_schema" in r.getMessage()
    ]
    assert len(told) == 1  # three flushes, one warning
    assert "fields=also_new,surprise more=0" in told[0]
    assert all(
        r.levelno == logging.WARNING
        for r in caplog.records
        if "record_fields_not" in r.getMessage()
    )


def test_flattening_an_object_without_declared_properties_is_told(tmp_path, monkeypatch, caplog):
    """With flattening on, an object the schema leaves open becomes top-level fields the
    flattened schema lacks (tap-rapid7's logs.user_data): the target says which."""
    caplog.set_level(logging.INFO)
    user_data = {
        "type": ["object", "null"],
        "properties": {},
        "additionalProperties": {"type": "string"},
    }
    schema = {"properties": {"id": {"type": "string"}, "user_data": user_data}}
    lines = [
        schema_message("logs", schema, ["id"]),
        record_message({"id": "a", "user_data": {"team": "soc", "tier": "1"}}, stream="logs"),
        state_message({"logs": 1}),
    ]
    run_target(
        tmp_path / "out", lines, monkeypatch, flattening_enabled=True, flattening_max_depth=1
    )
    told = [
        r.getMessage() for r in caplog.records if "record_fields_not_in_schema" in r.getMessage()
    ]
    assert len(told) == 1
    assert "user_data__team" in told[0]
