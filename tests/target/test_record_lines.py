"""RECORD lines converted in one C++ pass give exactly the exact path's table, or nothing."""

from __future__ import annotations

import copy
import decimal
import json
import logging
import random
import sys
import threading
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from singer_sdk.contrib.msgspec import decoder
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.columns import ColumnError, build_table
from target_parquet_parts.record_lines import (
    REFUSALS_TO_GIVE_UP,
    LineConverter,
    record_line_stream,
    stream_key,
)
from target_parquet_parts.target import TargetParquetParts
from target_parquet_parts.writes import PartWrites
from tests.target.conftest import StateCapture, read_rows, run_target
from tests.target.singer_data import (
    EVENTS_SCHEMA,
    changed,
    event,
    record_message,
    schema_message,
    state_message,
)
from tests.target.test_validation import BAD as VALIDATION_BAD
from tests.target.test_validation import BAD_SYNTAX as VALIDATION_BAD_SYNTAX
from tests.target.test_validation import SCHEMA as VALIDATION_SCHEMA

# test_validation.py's schema less what only the exact path converts (format: time, JSON
# text), plus date-times inside a list and a struct, and a field that forbids null only.
_SHARED = {k: v for k, v in VALIDATION_SCHEMA["properties"].items() if k not in ("tm", "j", "m")}
_DATE_TIME = {"type": ["string", "null"], "format": "date-time"}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_SHARED,
        "at": {"type": ["array", "null"], "items": {"type": "string", "format": "date-time"}},
        "o": {
            **_SHARED["o"],
            "properties": {**_SHARED["o"]["properties"], "when": _DATE_TIME},
        },
        "nn": {"type": "string"},  # not nullable, not required: null is refused, absence is not
    },
    "required": ["i"],
}
KEYS = ["i"]
GOOD: dict[str, Any] = {
    "i": 1,
    "n": 1.5,
    "s": "x ✓",
    "b": True,
    "t": "2024-01-01T00:00:00.5+02:00",
    "d": "2024-01-02",
    "a": ["p", "q"],
    "at": ["2024-01-01T00:00:00Z"],
    "o": {"x": 1, "y": None, "when": "2024-01-01T00:00:00Z"},
    "lo": [{"id": "a"}],
    "nn": "z",
}
# Values the exact path refuses (columns.py): test_validation.py's cases for the fields this
# schema has (its Decimals are the reader's floats: not what a line spells), and more.
BAD: dict[str, dict[str, Any]] = {
    name: change
    for name, change in {**VALIDATION_BAD, **VALIDATION_BAD_SYNTAX}.items()
    if set(change) <= set(SCHEMA["properties"])
    and not any(isinstance(v, decimal.Decimal) for v in change.values())
}
BAD.update(
    {
        "fraction as integer": {"i": 1.5},
        "number beyond float64": {"n": msgspec.Raw(b"1e400")},
        "bad nested date-time": {"o": {"x": 1, "when": "soon"}},
        "bad listed date-time": {"at": ["2024-13-01T00:00:00Z"]},
        "year 0": {"d": "0000-01-01"},
        "explicit null where null is refused": {"nn": None},
    }
)


def _record(change: dict[str, Any]) -> dict[str, Any]:
    return changed(GOOD, change)


def _line(record: dict[str, Any], *, spaced: bool = False, stream: str = "s") -> bytes:
    message = {"type": "RECORD", "stream": stream, "record": record}
    if spaced:
        return json.dumps(message, ensure_ascii=False).encode() + b"\n"
    return msgspec.json.encode(message) + b"\n"


def _exact(lines: list[bytes]) -> pa.Table | None:
    """What the exact path builds from the same lines (decoded as the reader decodes them)."""
    records = [decoder.decode(line)["record"] for line in lines]
    try:
        table = build_table(records, stream_spec(SCHEMA))
    except ColumnError:
        return None
    return table if all("i" in r for r in records) else None


def _converted(lines: list[bytes]) -> pa.Table | None:
    converter = LineConverter.for_stream(stream_spec(SCHEMA), KEYS)
    assert converter is not None
    return converter.convert(b"".join(lines), len(lines))


def test_good_records_convert_to_the_exact_table():
    other = _record({"n": 2, "s": None, "o": None, "lo": None, "at": [], "b": ...})
    lines = [_line(GOOD), _line(other, spaced=True), _line(GOOD)]
    table = _converted(lines)
    assert table is not None
    exact = _exact(lines)
    assert exact is not None
    assert table.schema == exact.schema
    assert table.equals(exact)
    assert table.column("t")[0].as_py().isoformat() == "2023-12-31T22:00:00.500000+00:00"


@pytest.mark.parametrize("case", sorted(BAD))
def test_what_the_exact_path_refuses_is_not_converted(case):
    change = BAD[case]
    bad = _record(change)
    if isinstance(next(iter(change.values())), msgspec.Raw):
        line = _line(bad)
    else:
        line = _line(bad, spaced=case.startswith("n"))
    lines = [_line(GOOD), line, _line(GOOD)]
    assert _exact(lines) is None  # the case is really refused by the exact path
    assert _converted(lines) is None


@pytest.mark.parametrize("change", [{"extra": 1}, {"o": {"x": 1, "extra": 2}}])
def test_fields_outside_the_schema_leave_the_batch_to_the_exact_path(change):
    """The exact path writes such records without the fields (and says so, top level)."""
    lines = [_line(GOOD), _line(_record(change))]
    assert _exact(lines) is not None
    assert _converted(lines) is None


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1},"stream":"t"}\n',  # duplicate key
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1,"i":2}}\n',
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1}} {"x":1}\n',  # two values
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1}}{"type":"RECORD"}\n',
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1,"s":"\xff"}}\n',  # not UTF-8
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1,"a":["\xc3"]}}\n',
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1,"s":"\\ud800"}}\n',  # lone
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1,"n":NaN}}\n',  # not JSON
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1,"n":-Infinity}}\n',
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1},"unknown_envelope":1}\n',
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1},"time_extracted":5}\n',
        b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1}\n',  # truncated
    ],
)
def test_lines_that_are_not_one_plain_record_are_not_converted(line):
    plain = b'{"type":"RECORD","stream":"s","record":{"nn":"v","i":1}}\n'
    assert _converted([_line(GOOD), plain]) is not None  # the control converts
    assert _converted([_line(GOOD), line]) is None


def test_envelope_fields_of_the_singer_spec_are_accepted():
    line = (
        b'{"type":"RECORD","stream":"s","record":{"i":7,"nn":"v"},'
        b'"time_extracted":"2024-01-01T00:00:00Z","version":3}'  # and no final newline
    )
    table = _converted([_line(GOOD), line])
    assert table is not None
    assert table.column("i").to_pylist() == [1, 7]


@pytest.mark.parametrize(
    ("field", "negative", "positive"),
    [("n", "-0", "0"), ("n", "-0e0", "0e0"), ("ln", "[-0]", "[0]")],
)
def test_negative_zero_numbers_take_the_exact_path(field, negative, positive):
    """msgspec reads ``-0`` as the integer 0 (the exact path stores 0.0), Arrow as -0.0: a row
    must not depend on which path its batch took (replay digests compare contents)."""
    listed = {"type": ["array", "null"], "items": {"type": "number"}}
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "ln": listed}}
    converter = LineConverter.for_stream(stream_spec(schema), KEYS)
    assert converter is not None
    line = '{"type":"RECORD","stream":"s","record":{"nn":"v","i":1,"%s":%s}}\n'
    assert converter.convert((line % (field, negative)).encode(), 1) is None
    assert converter.convert((line % (field, positive)).encode(), 1) is not None


def test_a_stream_whose_batches_keep_being_refused_is_not_parsed_again():
    converter = LineConverter.for_stream(stream_spec(SCHEMA), KEYS)
    assert converter is not None
    refused = _line(_record({"extra": 1}))
    for _ in range(REFUSALS_TO_GIVE_UP):
        assert converter.convert(refused, 1) is None
    assert "not tried" in converter.last_refusal
    assert converter.convert(_line(GOOD), 1) is None  # given up: the exact path from now on


def test_a_refused_batch_between_good_ones_does_not_give_up():
    converter = LineConverter.for_stream(stream_spec(SCHEMA), KEYS)
    assert converter is not None
    for _ in range(2 * REFUSALS_TO_GIVE_UP):
        for _ in range(REFUSALS_TO_GIVE_UP - 1):
            assert converter.convert(_line(_record({"extra": 1})), 1) is None
        assert converter.convert(_line(GOOD), 1) is not None


def test_a_line_longer_than_a_parse_block_converts():
    record = _record({"s": "x" * (3 << 20)})
    table = _converted([_line(GOOD), _line(record), _line(GOOD)])
    assert table is not None
    assert len(table.column("s")[1].as_py()) == 3 << 20


_POOL: dict[str, list[Any]] = {
    "i": [0, -1, 2**63 - 1, -(2**63), 2**63, 1.0, "1", True, None, ...],
    "n": [0, 1.5, -0.0, 1e-320, 2**64, 1.7976931348623157e308, "x", False, None, ...],
    "s": ["", "é", "\u0000", 5, None, ..., ["x"]],
    "b": [True, False, 0, None, ...],
    "t": [
        "2024-01-01T00:00:00Z",
        "2024-01-01 00:00:00",
        "2024-01-01T00:00:00.123456789Z",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00+01:00",
        "x",
        None,
        ...,
    ],
    "d": ["2024-02-29", "2023-02-29", None, ...],
    "a": [[], ["a"], [None], "a", None, ...],
    "at": [[], ["2024-01-01T00:00:00Z"], ["nope"], None, ...],
    "o": [{"x": 1}, {"x": 1, "y": "q"}, {"y": "q"}, {"x": None}, {"x": 1, "z": 1}, {}, None, ...],
    "lo": [[], [{"id": "a"}], [{}], [{"id": None}], [None], None, ...],
    "nn": ["v", None, ...],
    "extra": [..., ..., ..., ..., 1],
}


def _random_record(rng: random.Random) -> dict[str, Any]:
    record = {}
    for name, values in _POOL.items():
        value = rng.choice(values)
        if value is not ...:
            record[name] = value
    return record


def test_random_batches_convert_exactly_or_not_at_all():
    """Differential: wherever the converter returns a table, it is the exact path's table."""
    rng = random.Random(20261207)
    converted = 0
    for _ in range(400):
        records = [_random_record(rng) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.5:  # half the batches mostly well-formed, so many convert
            records = [_record({k: v for k, v in r.items() if k in ("n", "b")}) for r in records]
        lines = [_line(r, spaced=rng.random() < 0.5) for r in records]
        table = _converted(lines)
        if table is None:
            continue
        converted += 1
        exact = _exact(lines)
        assert exact is not None, lines
        assert table.equals(exact), lines
        assert [str(v) for v in table.column("n").to_pylist()] == [
            str(v) for v in exact.column("n").to_pylist()
        ]  # -0.0 stays -0.0
    assert converted >= 60  # the test compares many tables, not only refusals


def test_streams_the_converter_cannot_take_keep_the_exact_path():
    json_text = {"type": "object", "properties": {"j": {"type": "object"}}}
    time = {"type": "object", "properties": {"t": {"type": "string", "format": "time"}}}
    keyed = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert LineConverter.for_stream(stream_spec(json_text), []) is None
    assert LineConverter.for_stream(stream_spec(time), []) is None
    assert LineConverter.for_stream(stream_spec(keyed), ["missing_key"]) is None
    assert LineConverter.for_stream(stream_spec(keyed), ["a"]) is not None


@pytest.mark.parametrize(
    ("line", "stream"),
    [
        (b'{"type":"RECORD","stream":"events","record":{}}', b"events"),
        (b'{"type": "RECORD", "stream": "a-b.c", "record": {"x": 1}}', b"a-b.c"),
        (b'{"type":"RECORD","stream":"events","time_extracted":"x","record":{}}', None),
        (b'{"stream":"events","type":"RECORD","record":{}}', None),
        (b'{"type":"RECORD","stream":"a\\"b","record":{}}', None),
        (b'{"type":"RECORD","stream":"events","record":[]}', None),
        (b'{"type":"STATE","value":{}}', None),
    ],
)
def test_only_lines_spelled_as_encoders_write_them_are_taken(line, stream):
    assert record_line_stream(line) == stream


def test_stream_names_with_more_than_one_spelling_have_no_key():
    assert stream_key("public-events_1") == b"public-events_1"
    assert stream_key("é") is None  # msgspec writes it raw, json.dumps escapes it
    assert stream_key('a"b') is None
    assert stream_key("a\\b") is None
    assert stream_key("a\nb") is None


# -- through the target -------------------------------------------------------------------
def _spelled(i: int, spelling: int) -> str:
    """Record ``i`` spelled: compact, spaced, keys reordered, or its stream name escaped."""
    message = {"type": "RECORD", "stream": "events", "record": event(i)}
    if spelling == 0:
        return msgspec.json.encode(message).decode()
    if spelling == 1:
        return record_message(event(i))
    if spelling == 2:
        return json.dumps({"stream": "events", **message})
    return json.dumps(message).replace('"events"', '"\\u0065vents"', 1)


def _spellings() -> list[str]:
    """400 records: 100 compact, 100 spaced, 100 of all four spellings mixed, 100 reordered."""
    lines = [schema_message()]
    for i in range(400):
        block = i // 100
        lines.append(_spelled(i, {0: 0, 1: 1, 2: i % 4, 3: 2}[block]))
        if i % 50 == 49:
            lines.append(state_message({"last": i}))
    return lines


converting_threads: list[str] = []


@pytest.fixture
def converted(monkeypatch) -> list[int]:
    """Rows of each batch the line converter turned into a table (0: it declined); the
    thread each conversion ran on is in ``converting_threads``."""
    tables: list[int] = []
    converting_threads.clear()
    real_convert = LineConverter.convert

    def counting(self, data, rows):
        converting_threads.append(threading.current_thread().name)
        table = real_convert(self, data, rows)
        tables.append(0 if table is None else table.num_rows)
        return table

    monkeypatch.setattr(LineConverter, "convert", counting)
    return tables


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "no-overlap"])
def test_the_line_path_writes_what_the_decoded_path_writes(
    tmp_path, monkeypatch, converted, overlap
):
    lines = _spellings()
    _, capture = run_target(
        tmp_path / "lines", lines, monkeypatch, batch_size_rows=100, overlap_writes=overlap
    )
    monkeypatch.setattr(TargetParquetParts, "take_record_line", lambda self, line: False)
    _, decoded_capture = run_target(
        tmp_path / "decoded", lines, monkeypatch, batch_size_rows=100, overlap_writes=overlap
    )

    def by_key(rows):
        return sorted(rows, key=lambda r: r["sequence_number_str"])

    rows = by_key(read_rows(tmp_path / "lines"))
    assert len(rows) == 400
    assert rows == by_key(read_rows(tmp_path / "decoded"))
    assert capture.states == decoded_capture.states
    assert capture.states[-1] == {"last": 399}
    # The compact and spaced blocks converted in one pass; mixed batches were decoded.
    assert sum(converted) == 200
    assert all(converted)


def test_interleaved_streams_and_a_new_schema_reach_the_right_sink(tmp_path, monkeypatch):
    """The target recognises the next line of the last stream by its head alone: lines of
    two streams (one name a prefix of the other) interleaved in both spellings, and a SCHEMA
    that adds a field midway (a new sink), land exactly as the decoded path lands them."""
    wider = copy.deepcopy(EVENTS_SCHEMA)
    wider["properties"]["extra"] = {"type": ["string", "null"]}
    lines = [schema_message("ev"), schema_message("events")]
    for i in range(300):
        if i == 152:  # between two lines of "events"
            lines.append(schema_message("events", wider))
        stream = "ev" if i % 3 == 0 else "events"
        record = event(i) | ({"extra": f"x{i}"} if i >= 152 and stream == "events" else {})
        message = {"type": "RECORD", "stream": stream, "record": record}
        spaced = (i // 7) % 2 == 1
        lines.append(json.dumps(message) if spaced else msgspec.json.encode(message).decode())
        if i % 40 == 39:
            lines.append(state_message({"last": i}))
    _, capture = run_target(tmp_path / "lines", lines, monkeypatch, batch_size_rows=50)
    monkeypatch.setattr(TargetParquetParts, "take_record_line", lambda self, line: False)
    _, decoded = run_target(tmp_path / "decoded", lines, monkeypatch, batch_size_rows=50)
    assert capture.states == decoded.states
    for stream in ("ev", "events"):
        rows = sorted(read_rows(tmp_path / "lines", stream), key=lambda r: r["timestamp"])
        expected = sorted(read_rows(tmp_path / "decoded", stream), key=lambda r: r["timestamp"])
        assert rows == expected
    events = read_rows(tmp_path / "lines", "events")
    assert len(events) == 200
    assert len(read_rows(tmp_path / "lines", "ev")) == 100
    assert {r["extra"] for r in events if r.get("extra")} == {
        f"x{i}" for i in range(152, 300) if i % 3
    }


@pytest.mark.parametrize(
    ("overlap", "writer_idle"),
    [(True, True), (True, False), (False, True)],
    ids=["writer-idle", "writer-busy", "no-overlap"],
)
def test_batches_of_encoder_lines_convert_in_one_pass(
    tmp_path, monkeypatch, converted, overlap, writer_idle
):
    # Whether the part writer is still busy with the previous batch at a hand-over depends on
    # timing; here it is fixed, to check where each case converts.
    monkeypatch.setattr(PartWrites, "idle", property(lambda self: writer_idle))
    lines = [schema_message()] + [record_message(event(i)) for i in range(250)]
    lines.append(state_message({"last": 249}))
    _, capture = run_target(
        tmp_path / "out", lines, monkeypatch, batch_size_rows=100, overlap_writes=overlap
    )
    assert converted == [100, 100, 50]
    # Writer idle: behind the reader, on the part writer. Writer busy: the reader converts while
    # it would wait anyway. No overlap: where the flush runs (the reading thread, or the SDK's
    # drain threads at the end).
    writer = "target-parquet-parts-writer"
    assert (set(converting_threads) == {writer}) is (overlap and writer_idle)
    assert (writer in converting_threads) is (overlap and writer_idle)
    assert capture.states == [{"last": 249}]
    rows = read_rows(tmp_path / "out")
    assert sorted(r["sequence_number_str"] for r in rows) == sorted(
        event(i)["sequence_number_str"] for i in range(250)
    )


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "no-overlap"])
def test_a_bad_value_in_a_line_names_its_line_and_field(tmp_path, monkeypatch, overlap):
    lines = [schema_message()] + [record_message(event(i)) for i in range(30)]
    bad = event(30)
    bad["timestamp"] = "soon"
    lines.append(record_message(bad))  # input line 32
    lines += [record_message(event(i)) for i in range(31, 40)]
    lines.append(state_message({"last": 39}))
    with pytest.raises(InvalidRecord, match=r"input line 32, field 'timestamp': expected integer"):
        run_target(tmp_path / "out", lines, monkeypatch, overlap_writes=overlap)


def test_a_refused_batch_on_the_part_writer_stops_the_run_at_the_next_state(tmp_path):
    """The writer's error is raised at the next STATE, not at the next hand-over or the end."""
    failed = threading.Event()
    real_tell = PartWrites._tell

    def tell(self):
        real_tell(self)
        if self.failed:
            failed.set()

    bad = event(4)
    bad["timestamp"] = "soon"
    records = [record_message(bad if i == 4 else event(i)) for i in range(10)]  # lines 2-11
    consumed: list[str] = []

    def lines():
        for line in [schema_message(), *records]:
            consumed.append(line)
            yield (line + "\n").encode()
        # The batch of 10 was handed over at line 11; once the writer refused it, one STATE.
        assert failed.wait(30), "the part writer did not fail"
        for i in range(1000):
            consumed.append("STATE")
            yield (state_message({"n": i}) + "\n").encode()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PartWrites, "_tell", tell)
        patch.setattr(PartWrites, "idle", property(lambda self: True))
        target = TargetParquetParts(
            config={"output_dir": str(tmp_path / "out"), "batch_size_rows": 10}
        )
        patch.setattr(sys, "stdout", StateCapture())
        with pytest.raises(InvalidRecord, match=r"input line 6, field 'timestamp'"):
            target.listen(file_input=lines())
    assert consumed.count("STATE") == 1  # the first STATE after the failure ended the run


def test_a_line_that_is_not_json_fails_naming_it(tmp_path, monkeypatch):
    lines = [schema_message(), record_message(event(0))]
    lines.append(record_message(event(1))[:-5])  # input line 3, cut short
    lines.append(state_message({"last": 1}))
    with pytest.raises(InvalidInputLine, match=r"input line 3 is not valid JSON"):
        run_target(tmp_path / "out", lines, monkeypatch)


def test_a_line_naming_its_stream_twice_is_refused(tmp_path, monkeypatch):
    lines = [schema_message(), schema_message("other"), record_message(event(0))]
    lines.append(record_message(event(1))[:-1] + ', "stream": "other"}')  # input line 4
    with pytest.raises(InvalidInputLine, match=r"input line 4: .*more than once"):
        run_target(tmp_path / "out", lines, monkeypatch)


def test_fields_outside_the_schema_are_still_named(tmp_path, monkeypatch, caplog):
    lines = [schema_message()]
    for i in range(20):
        record = event(i)
        record["surprise"] = i
        lines.append(record_message(record))
    with caplog.at_level(logging.WARNING):
        run_target(tmp_path / "out", lines, monkeypatch)
    warnings = [
        r.getMessage() for r in caplog.records if "record_fields_not_in_schema" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert 'fields=["surprise"]' in warnings[0]
    assert len(read_rows(tmp_path / "out")) == 20
