"""Iceberg errors name what is at fault: the catalog file or URL, the missing or corrupt file,
the field a schema change cannot take. One line each (what the SDK's handler logs is
``args[0]``), and never "output_dir ... is not writable" for something that is not a write."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.target.conftest import run_target
from tests.target.iceberg_helpers import ICEBERG
from tests.target.singer_data import (
    EVENTS_KEYS,
    EVENTS_SCHEMA,
    event,
    events_lines,
    record_message,
    schema_message,
)


def _error(out: Path, lines: Any, monkeypatch: pytest.MonkeyPatch, **config: Any) -> str:
    """The run's error as the SDK logs it: its first argument, on one line."""
    with pytest.raises(Exception) as failure:  # noqa: PT011 - the message is what is checked
        run_target(out, lines, monkeypatch, **ICEBERG, **config)
    message = str(failure.value.args[0])
    assert "\n" not in message
    assert "not writable" not in message
    return message


def _table_dir(out: Path) -> Path:
    return out / "singer" / "events"


def _current_metadata(out: Path) -> Path:
    """The newest metadata file: the catalog's current one after a clean single-writer run."""
    files = (_table_dir(out) / "metadata").glob("*.metadata.json")
    return max(files, key=lambda p: int(p.name.split("-", 1)[0]))


def _written(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_target(out, events_lines(5, state_every=5), monkeypatch, **ICEBERG)


def test_a_garbage_catalog_file_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "catalog.db").write_bytes(b"this is not SQLite " * 200)
    message = _error(out, events_lines(3), monkeypatch)
    assert f"'{out / 'catalog.db'}'" in message
    assert "file is not a database" in message
    assert "backup" in message


def test_a_deleted_metadata_file_is_named_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _written(out, monkeypatch)
    current = _current_metadata(out)
    current.unlink()
    message = _error(out, events_lines(3, start=5), monkeypatch)
    assert message.startswith("Iceberg table singer.events: its metadata file ")
    assert str(current) in message
    assert "is missing" in message


def test_a_deleted_manifest_list_is_named_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _written(out, monkeypatch)
    manifest_lists = sorted((_table_dir(out) / "metadata").glob("snap-*.avro"))
    assert manifest_lists
    for path in manifest_lists:
        path.unlink()
    message = _error(out, events_lines(3, start=5), monkeypatch)
    assert message.startswith("Iceberg table singer.events: its manifest list ")
    assert any(str(path) in message for path in manifest_lists)
    assert "is missing" in message


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text[:60], id="truncated"),
        pytest.param(lambda text: json.dumps({"format-version": 2}), id="fields-missing"),
        pytest.param(lambda text: "\x00\xff garbage", id="garbage"),
    ],
)
def test_a_corrupt_metadata_file_is_named_as_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Any
) -> None:
    out = tmp_path / "out"
    _written(out, monkeypatch)
    current = _current_metadata(out)
    current.write_text(damage(current.read_text()))
    message = _error(out, events_lines(3, start=5), monkeypatch)
    assert message.startswith("Iceberg table singer.events: its metadata file ")
    assert current.name in message
    assert "unreadable or corrupt" in message
    assert "validation error" not in message.split("(", 1)[0]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_rest_catalog_is_named_by_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _closed_port()
    uri = f"http://robot:s3cret@127.0.0.1:{port}"
    message = _error(
        tmp_path / "out",
        events_lines(3),
        monkeypatch,
        iceberg_catalog={"type": "rest", "uri": uri},
    )
    assert f"http://robot:***@127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "is unreachable" in message


def test_a_string_that_becomes_an_object_names_stream_table_field_and_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = json.loads(json.dumps(EVENTS_SCHEMA))
    changed["properties"]["message"] = {
        "type": ["object", "null"],
        "properties": {"text": {"type": ["string", "null"]}},
    }
    lines = [
        schema_message(),
        record_message(event(0)),
        schema_message(schema=changed, keys=EVENTS_KEYS),
        record_message(event(1) | {"message": {"text": "now an object"}}),
    ]
    message = _error(tmp_path / "out", lines, monkeypatch)
    assert "stream 'events'" in message
    assert "singer.events" in message
    assert "field 'message' is string in the table, struct<text: string> in the SCHEMA" in message


def test_a_nested_field_that_changes_kind_is_named_by_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = json.loads(json.dumps(EVENTS_SCHEMA))
    changed["properties"]["labels"]["items"]["properties"]["id"] = {
        "type": ["array", "null"],
        "items": {"type": "string"},
    }
    lines = [
        schema_message(),
        record_message(event(0)),
        schema_message(schema=changed, keys=EVENTS_KEYS),
        record_message(event(1) | {"labels": [{"id": ["a"]}]}),
    ]
    message = _error(tmp_path / "out", lines, monkeypatch)
    assert "field 'labels.element.id' is string in the table, list<string> in the SCHEMA" in (
        message
    )


def test_catalog_descriptions_never_show_a_password() -> None:
    from target_parquet_parts.iceberg import describe_catalog

    sql = describe_catalog({"type": "sql", "uri": "postgresql://app:hunter2@db.local:5432/lake"})
    assert sql == "SQL catalog 'postgresql://app:***@db.local:5432/lake'"
    sqlite = describe_catalog({"type": "sql", "uri": "sqlite:////data/out/catalog.db?timeout=60"})
    assert sqlite == "SQLite catalog file '/data/out/catalog.db'"
    rest = describe_catalog({"type": "rest", "uri": "https://u:p4ss@cat.example/api"})
    assert rest == "REST catalog 'https://u:***@cat.example/api'"
    assert describe_catalog({"type": "glue"}) == "glue catalog 'default'"
