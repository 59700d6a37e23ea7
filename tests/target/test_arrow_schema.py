"""The Arrow schema comes from the Singer JSON Schema alone."""

from __future__ import annotations

import pyarrow as pa

from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.columns import build_table
from tests.target.singer_data import EVENTS_SCHEMA


def test_json_schema_to_arrow_mapping():
    schema = {
        "type": "object",
        "properties": {
            "i": {"type": "integer"},
            "n": {"type": ["null", "number"]},
            "in": {"type": ["integer", "number"]},
            "s": {"type": "string"},
            "t": {"type": "string", "format": "date-time"},
            "d": {"type": "string", "format": "date"},
            "b": {"type": "boolean"},
            "a": {"type": "array", "items": {"type": "integer"}},
            "o": {"type": "object", "properties": {"x": {"type": "string"}}},
            "free": {"type": "object"},
            "empty": {"type": "object", "properties": {}},
            "mix": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "multi": {"type": ["string", "integer"]},
            "strings": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string"}]},
            "opt_t": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
            "untyped": {},
            "bare_array": {"type": "array"},
        },
    }
    arrow = stream_spec(schema).arrow_schema
    assert arrow == pa.schema(
        [
            ("i", pa.int64()),
            ("n", pa.float64()),
            ("in", pa.float64()),
            ("s", pa.string()),
            ("t", pa.timestamp("us", tz="UTC")),
            ("d", pa.date32()),
            ("b", pa.bool_()),
            ("a", pa.list_(pa.int64())),
            ("o", pa.struct([("x", pa.string())])),
            ("free", pa.string()),
            ("empty", pa.string()),
            ("mix", pa.string()),
            ("multi", pa.string()),
            ("strings", pa.string()),
            ("opt_t", pa.timestamp("us", tz="UTC")),
            ("untyped", pa.string()),
            ("bare_array", pa.string()),
        ]
    )


def test_columns_keep_their_types_when_a_batch_has_only_nulls():
    spec = stream_spec(EVENTS_SCHEMA)
    full = build_table(
        [
            {
                "log_id": "a",
                "timestamp": 1,
                "sequence_number": 2,
                "sequence_number_str": "2",
                "message": "m",
                "labels": [{"id": "x"}],
                "event_time": "2024-01-01T00:00:00Z",
            }
        ],
        spec,
    )
    sparse = build_table(
        [{"log_id": "a", "timestamp": 1, "sequence_number": 2, "sequence_number_str": "2"}],
        spec,
    )
    assert full.schema == sparse.schema == spec.arrow_schema
    assert sparse.column("labels").null_count == 1
