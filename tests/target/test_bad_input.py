"""Bad input: a clear error naming the line or stream; earlier parts stay complete."""

from __future__ import annotations

import subprocess

import pyarrow.parquet as pq
import pytest
from singer_sdk.exceptions import (
    InvalidRecord,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.singerlib.exceptions import InvalidInputLine

from tests.target.conftest import TARGET_BIN, part_files, run_target, temp_files
from tests.target.singer_data import event, record_message, schema_message


def _first_batch() -> list[str]:
    """A full batch (10 rows with batch_size_rows=10): one part lands before the bad line."""
    return [schema_message()] + [record_message(event(i)) for i in range(10)]


def _assert_earlier_part_intact(out):
    parts = part_files(out)
    assert len(parts) == 1
    assert pq.read_table(parts[0]).num_rows == 10
    assert temp_files(out) == []


def test_malformed_json_names_the_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    lines = [*_first_batch(), '{"type": "RECORD", "stream": "events", "record": {']
    with pytest.raises(InvalidInputLine, match=r"input line 12 is not valid JSON"):
        run_target(out, lines, monkeypatch, batch_size_rows=10)
    _assert_earlier_part_intact(out)


def test_record_before_schema_names_stream_and_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    lines = [*_first_batch(), record_message({"id": 1}, "orphans")]
    with pytest.raises(RecordsWithoutSchemaException, match=r"input line 12: .*'orphans'"):
        run_target(out, lines, monkeypatch, batch_size_rows=10)
    _assert_earlier_part_intact(out)


def test_unknown_message_type_names_line_and_type(tmp_path, monkeypatch):
    out = tmp_path / "out"
    lines = [*_first_batch(), '{"type": "RECROD", "stream": "events"}']
    with pytest.raises(ValueError, match=r"input line 12: unknown Singer message type 'RECROD'"):
        run_target(out, lines, monkeypatch, batch_size_rows=10)
    _assert_earlier_part_intact(out)


def test_record_breaking_its_schema_names_stream_field_and_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    bad = event(11)
    bad["sequence_number"] = "not a number"
    lines = [*_first_batch(), record_message(event(10)), record_message(bad)]
    with pytest.raises(InvalidRecord) as info:
        run_target(out, lines, monkeypatch, batch_size_rows=10)
    message = str(info.value)
    assert "stream 'events'" in message
    assert "input line 13" in message
    assert "field 'sequence_number'" in message
    assert "expected integer, got string 'not a number'" in message
    _assert_earlier_part_intact(out)


def test_missing_key_property_names_the_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    schema = {"type": "object", "properties": {"id": {"type": ["integer", "null"]}}}
    lines = [
        schema_message("k", schema, ["id"]),
        record_message({"id": 1}, "k"),
        record_message({}, "k"),
    ]
    with pytest.raises(MissingKeyPropertiesError, match=r"input line 3: .*key property 'id'"):
        run_target(out, lines, monkeypatch)
    assert part_files(out) == []


def test_missing_required_key_is_a_schema_error_first_as_in_the_sdk(tmp_path, monkeypatch):
    bad = event(3)
    del bad["sequence_number_str"]  # required in the schema and a key property
    lines = [schema_message(), record_message(event(1)), record_message(bad)]
    with pytest.raises(InvalidRecord, match=r"input line 3, field 'sequence_number_str'"):
        run_target(tmp_path / "out", lines, monkeypatch)


@pytest.mark.e2e
def test_bad_input_fails_the_process_with_the_reason(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"output_dir": "%s"}' % (tmp_path / "out"))
    result = subprocess.run(
        [TARGET_BIN, "--config", str(config)],
        input=b'{"type": "SCHEMA", "stream": "s", "schema": {"properties": {}}}\nnot json\n',
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0
    assert b"input line 2 is not valid JSON" in result.stderr
    assert result.stdout == b""
