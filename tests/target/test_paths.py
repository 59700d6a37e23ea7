"""Hostile paths under output_dir: symbolic links, one lock per output_dir, one stream per
directory, names the target keeps for itself, and directory creation that survives a power cut."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from target_parquet_parts import parts as parts_module
from target_parquet_parts.errors import UnsafePathError
from target_parquet_parts.lock import OutputDirInUseError
from target_parquet_parts.naming import StreamDirectoryCollisionError, sanitize_stream_name
from target_parquet_parts.target import TargetParquetParts
from tests.target.conftest import part_files, run_target
from tests.target.singer_data import (
    EVENTS_KEYS,
    event,
    events_lines,
    record_message,
    schema_message,
)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def _stream_dir(out: Path, outside: Path) -> str:
    (out / "events").symlink_to(outside)
    return f"'{out / 'events'}' is a symbolic link to '{outside}'"


def _dangling_stream_dir(out: Path, outside: Path) -> str:
    (out / "events").symlink_to(outside / "not-yet" / "there")
    return f"'{out / 'events'}' is a symbolic link to '{outside / 'not-yet' / 'there'}'"


def _partition_dir(out: Path, outside: Path) -> str:
    (out / "events").mkdir()
    (out / "events" / "date=2024-01-01").symlink_to(outside)
    return f"'{out / 'events' / 'date=2024-01-01'}' is a symbolic link to '{outside}'"


def _journal_dir(out: Path, outside: Path) -> str:
    (out / "_journal").symlink_to(outside)
    return f"'{out / '_journal'}' is a symbolic link to '{outside}'"


def _lock_file(out: Path, outside: Path) -> str:
    (out / "_journal").mkdir()
    (out / "_journal" / "lock").symlink_to(outside / "planted")  # dangling: O_CREAT would make it
    return f"'{out / '_journal' / 'lock'}' is a symbolic link (to '{outside / 'planted'}')"


def _journal_file(out: Path, outside: Path) -> str:
    (out / "_journal").mkdir()
    (outside / "victim").write_text("precious\n")
    (out / "_journal" / "journal.jsonl").symlink_to(outside / "victim")
    return f"'{out / '_journal' / 'journal.jsonl'}' is a symbolic link (to '{outside / 'victim'}')"


@pytest.mark.parametrize(
    "plant",
    [_stream_dir, _dangling_stream_dir, _partition_dir, _journal_dir, _lock_file, _journal_file],
)
def test_symbolic_links_out_of_output_dir_are_refused(tmp_path, monkeypatch, plant):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    expected = plant(out, outside)
    before = _snapshot(outside)
    with pytest.raises(UnsafePathError) as info:
        run_target(out, events_lines(3), monkeypatch, partition_date_field="event_time")
    assert expected in str(info.value)
    assert "output_dir" in str(info.value)
    assert _snapshot(outside) == before  # nothing written, truncated or created outside
    assert not (outside / "not-yet").exists()


def test_symbolic_link_that_stays_inside_output_dir_is_followed(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "events").symlink_to(out / "real")
    run_target(out, events_lines(3), monkeypatch)
    assert [p.parent for p in part_files(out / "real")] == [out / "real"]


def test_journal_entry_pointing_outside_is_not_read(tmp_path, monkeypatch):
    out, outside = tmp_path / "out", tmp_path / "outside"
    run_target(out, events_lines(1), monkeypatch)  # a first run makes the layout
    planted = outside / "p.parquet"
    planted.parent.mkdir()
    pq.write_table(pq.read_table(part_files(out)[0]), planted)
    entry = {
        "part": "../outside/p.parquet",
        "stream": "events",
        "keys": EVENTS_KEYS,
        "state_index": 0,
    }
    (out / "_journal" / "journal.jsonl").write_text(json.dumps({**entry, "run": "x"}) + "\n")
    run_target(out, events_lines(1), monkeypatch)  # its keys would have dropped this record
    assert sum(pq.read_metadata(p).num_rows for p in part_files(out)) == 2


def test_one_lock_per_output_dir_even_without_key_properties(tmp_path, monkeypatch):
    out = tmp_path / "out"
    keyless = schema_message("events", keys=[])
    first = TargetParquetParts(config={"output_dir": str(out)})
    first.process_lines(io.BytesIO((keyless + "\n").encode()))  # mid-run: holds output_dir
    try:
        with pytest.raises(OutputDirInUseError) as info:
            run_target(out, [keyless, record_message(event(1))], monkeypatch)
        message = str(info.value)
        assert message.startswith(
            f"output_dir '{out}' is in use by another target-parquet-parts process"
        )
        assert f"pid {os.getpid()} on host " in message
        assert f"run {first.run_id}" in message
        assert f"lock file '{out / '_journal' / 'lock'}'" in message
    finally:
        first.process_endofpipe()
    run_target(out, [keyless, record_message(event(1))], monkeypatch)  # released at the end


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("events", "Events"),  # one directory on case-insensitive filesystems
        ("a/b", sanitize_stream_name("a/b")),  # a stream named like another's sanitized form
        ("A/b", sanitize_stream_name("A/b").lower()),  # the same, but for case
    ],
)
def test_two_streams_never_share_a_directory(tmp_path, monkeypatch, first, second):
    out = tmp_path / "out"
    lines = [
        schema_message(first),
        record_message(event(1), first),
        schema_message(second),
        record_message(event(2), second),
    ]
    with pytest.raises(StreamDirectoryCollisionError) as info:
        run_target(out, lines, monkeypatch)
    message = str(info.value)
    assert message.startswith(f"input line 3: stream {second!r} would write to directory ")
    assert f"already the directory of stream {first!r}" in message
    assert sanitize_stream_name(first) in message
    assert sanitize_stream_name(second) in message


@pytest.mark.parametrize("stream", ["_journal", "_JOURNAL"])
def test_a_stream_cannot_take_the_journal_directory(tmp_path, monkeypatch, stream):
    out = tmp_path / "out"
    lines = [
        schema_message(stream),
        record_message(event(1), stream),
        schema_message("events"),
        record_message(event(2)),
        json.dumps({"type": "STATE", "value": {"done": 1}}),
    ]
    run_target(out, lines, monkeypatch)
    directory = sanitize_stream_name(stream)
    assert directory.startswith(f"{stream}-")
    assert [p.parent.name for p in part_files(out)] == sorted([directory, "events"])
    assert sorted(p.name for p in (out / "_journal").iterdir()) == ["journal.jsonl", "lock"]


def test_every_new_directory_is_fsynced_in_its_parent(tmp_path, monkeypatch):
    out = tmp_path / "a" / "out"  # two levels that do not exist yet
    synced: list[Path] = []
    real = parts_module.fsync_dir

    def record(directory):
        synced.append(Path(directory))
        real(directory)

    monkeypatch.setattr(parts_module, "fsync_dir", record)
    day = 86_400
    lines = [schema_message()] + [record_message(event(i)) for i in (0, day)]
    run_target(out, lines, monkeypatch, partition_date_field="event_time")
    created = [
        tmp_path / "a",
        out,
        out / "_journal",
        out / "events",
        out / "events" / "date=2024-01-01",
        out / "events" / "date=2024-01-02",
    ]
    for directory in created:
        assert directory.is_dir()
        assert directory.parent in synced, f"{directory} created without fsyncing its parent"
