"""A catalog that lost a table whose folder still holds its metadata: never a second table there.

The embedded catalog (``catalog.db``) deleted or emptied after a run: the next run must not
create a new, empty table in the old table's folder (two metadata lineages in one folder, the
catalog showing half the rows on disk). It refuses with one line naming the folder, the newest
metadata file and how to re-register the table; following that line brings every row back.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.iceberg import IcebergWriter, load_iceberg_catalog
from target_parquet_parts.settings import TargetSettings
from tests.target.conftest import TARGET_BIN, run_target
from tests.target.iceberg_helpers import ICEBERG, open_table, scan
from tests.target.singer_data import EVENTS_SCHEMA, events_lines


def _metadata_dir(out: Path) -> Path:
    return out / "singer" / "events" / "metadata"


def _metadata_files(out: Path) -> list[Path]:
    return sorted(_metadata_dir(out).glob("*.metadata.json"))


def _lineages(out: Path) -> set[str]:
    """The table UUIDs of every metadata file in the table's folder (one per lineage)."""
    return {json.loads(path.read_text())["table-uuid"] for path in _metadata_files(out)}


def _data_files(out: Path) -> list[Path]:
    return sorted((out / "singer" / "events" / "data").rglob("*.parquet"))


def _first_run(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_target(out, events_lines(10, state_every=10), monkeypatch, **ICEBERG)
    assert scan(out).num_rows == 10


def _lose_catalog(out: Path, how: str) -> None:
    catalog = out / "catalog.db"
    if how == "deleted":
        catalog.unlink()
    else:
        catalog.write_bytes(b"")  # truncated to nothing: SQLite opens it as a new database


def _refused(out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[Any]]:
    """Run again after the loss; return the one-line error and the STATEs emitted meanwhile."""
    states: list[Any] = []
    with pytest.raises(Exception) as failure:  # noqa: PT011 - the message is what is checked
        run_target(
            out,
            events_lines(10, start=10, state_every=10),
            monkeypatch,
            on_state=states.append,
            **ICEBERG,
        )
    return str(failure.value.args[0]), states


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_catalog_is_refused_naming_the_folder_and_newest_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    out = tmp_path / "out"
    _first_run(out, monkeypatch)
    metadata_before = _metadata_files(out)
    data_before = _data_files(out)
    newest = max(metadata_before, key=lambda p: int(p.name.split("-", 1)[0]))
    _lose_catalog(out, how)

    message, states = _refused(out, monkeypatch)

    assert states == []  # no STATE: nothing was committed
    assert "\n" not in message
    assert "Iceberg table singer.events is not in the" in message
    assert str(out / "catalog.db") in message
    assert str(_metadata_dir(out)) in message
    assert newest.name in message
    assert "register_table(" in message
    assert "not writable" not in message
    # nothing written: no second lineage, no new data files
    assert _metadata_files(out) == metadata_before
    assert _data_files(out) == data_before
    assert len(_lineages(out)) == 1


def test_two_newest_files_of_one_version_are_both_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that lost to a concurrent writer leaves a second file of the same version."""
    out = tmp_path / "out"
    _first_run(out, monkeypatch)
    newest = max(_metadata_files(out), key=lambda p: int(p.name.split("-", 1)[0]))
    version = newest.name.split("-", 1)[0]
    rejected = newest.with_name(f"{version}-00000000-0000-0000-0000-000000000000.metadata.json")
    rejected.write_bytes(newest.read_bytes())
    _lose_catalog(out, "deleted")
    message, _ = _refused(out, monkeypatch)
    assert newest.name in message
    assert rejected.name in message
    assert f"version {int(version)} also in" in message
    assert "from commits that failed" in message


def test_following_the_message_re_registers_the_table_with_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _first_run(out, monkeypatch)
    _lose_catalog(out, "deleted")
    message, _ = _refused(out, monkeypatch)
    # the message names the metadata location to register, as pyiceberg spells it
    newest = message.split("catalog.register_table('singer.events', '", 1)[1].split("'", 1)[0]
    assert newest.startswith("file://")
    assert newest.endswith(".metadata.json")

    catalog = load_iceberg_catalog(TargetSettings(output_dir=str(out)))
    try:
        catalog.create_namespace_if_not_exists("singer")
        catalog.register_table("singer.events", newest)
    finally:
        catalog.close()
    _, capture = run_target(out, events_lines(10, start=10, state_every=10), monkeypatch, **ICEBERG)
    assert capture.states == [{"bookmarks": {"events": {"last": 19}}}]
    assert scan(out).num_rows == 20  # the first run's rows and this run's
    assert len(_lineages(out)) == 1


def test_a_lost_catalog_stops_the_process_with_one_error_line_and_no_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _first_run(out, monkeypatch)
    _lose_catalog(out, "deleted")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"output_dir": str(out), **ICEBERG}))
    lines = "".join(line + "\n" for line in events_lines(10, start=10, state_every=10))
    proc = subprocess.run(
        [TARGET_BIN, "--config", str(config)],
        input=lines.encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stdout == b""  # no STATE
    errors = [
        line
        for line in proc.stderr.decode().splitlines()
        if "Iceberg table singer.events is not in the" in line
    ]
    assert errors, proc.stderr.decode()[-3000:]
    assert str(_metadata_dir(out)) in errors[0]
    assert len(_lineages(out)) == 1


def test_a_version_zero_file_of_a_table_being_created_is_no_obstacle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table created but never committed to (only its ``00000-`` metadata file) holds no
    rows; a writer racing its creator sees that file before the catalog row. Not refused."""
    out = tmp_path / "out"
    settings = TargetSettings(output_dir=str(out), table_format="iceberg")
    arrow_schema = stream_spec(EVENTS_SCHEMA).arrow_schema
    creator = IcebergWriter(settings, "creator")
    try:
        creator.stream_table("events").prepare(arrow_schema, None)
    finally:
        creator.close()
    (out / "catalog.db").unlink()
    _, capture = run_target(out, events_lines(5, state_every=5), monkeypatch, **ICEBERG)
    assert capture.states == [{"bookmarks": {"events": {"last": 4}}}]
    assert scan(out).num_rows == 5


def test_a_writer_whose_first_look_missed_a_new_table_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer B looks the table up just before writer A creates it and commits; when B then
    finds A's metadata files, it looks again and takes A's table instead of refusing."""
    out = tmp_path / "out"
    _first_run(out, monkeypatch)  # writer A, done by the time B looks at the folder
    settings = TargetSettings(output_dir=str(out), table_format="iceberg")
    late = IcebergWriter(settings, "late")
    try:
        real_load = late.catalog.load_table
        calls: list[object] = []

        def first_look_misses(identifier: Any) -> Any:
            calls.append(identifier)
            if len(calls) == 1:
                from pyiceberg.exceptions import NoSuchTableError

                raise NoSuchTableError("Table does not exist: singer.events")
            return real_load(identifier)

        late.catalog.load_table = first_look_misses  # type: ignore[method-assign]
        late.stream_table("events").prepare(stream_spec(EVENTS_SCHEMA).arrow_schema, None)
        table = late.stream_table("events").table
        assert table is not None
        with open_table(out) as existing:
            assert table.metadata.table_uuid == existing.metadata.table_uuid
    finally:
        late.close()
    assert len(_lineages(out)) == 1
