"""`tap-rapid7-reconcile` never reports ok on a damaged dataset.

Each test builds a healthy dataset the way the target writes it (zstd parts with the target's
column types), damages it in one way, and runs the command: a part whose column cannot be
decompressed, a part whose column has the wrong type, a symbolic link that makes the walk loop.
Every one must fail with exit status 2 ("could not check") and one line on stderr naming the
part or path at fault, never count the damage as rows or pass.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_tools.reconcile import cli as reconcile_cli
from pipeline_tools.reconcile.cli import reconcile
from pipeline_tools.reconcile.dataset import DatasetError
from tests.reconcile.test_reconcile import (
    HOUR,
    LOGS,
    MINUTE,
    START,
    TARGET_SCHEMA,
    clock_row,
    truth_counter,
)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame's first four bytes
PREFIX = "tap-rapid7-reconcile: "


def rows_of(log_index: int, count: int, first_seq: int = 0) -> list[dict]:
    """`count` entries of one log over the first hour, with an event time 5 s before receipt."""
    return [
        clock_row(
            LOGS[log_index],
            START + n * (HOUR // count),
            (START + n * (HOUR // count) - 5000) * 1000,
            first_seq + n,
        )
        for n in range(count)
    ]


def write_part(
    path: Path, rows: list[dict], schema: pa.Schema = TARGET_SCHEMA, **options: object
) -> Path:
    """One part as the target writes it (zstd, the target's types)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    pq.write_table(pa.table(columns, schema=schema), path, compression="zstd", **options)
    return path


def write_lake(root: Path) -> tuple[list[dict], list[Path]]:
    """Three healthy parts under events/date=.../: two of log 0, one of log 1."""
    rows = [rows_of(0, 50), rows_of(0, 50, first_seq=1000), rows_of(1, 40)]
    directory = root / "events" / "date=2025-11-26"
    paths = [write_part(directory / f"part-{n:04d}.parquet", part) for n, part in enumerate(rows)]
    return [row for part in rows for row in part], paths


def corrupt_column(path: Path, column: str, row_group: int = 0) -> None:
    """Overwrite the compressed data of one column chunk so that zstd refuses it.

    The chunk's byte range comes from the Parquet metadata; inside it, everything after the first
    zstd frame's magic number becomes 0xFF (the page header before it stays intact, so the reader
    gets as far as decompressing the page and fails there).
    """
    metadata = pq.ParquetFile(path).metadata
    group = metadata.row_group(row_group)
    [chunk] = [
        group.column(i)
        for i in range(group.num_columns)
        if group.column(i).path_in_schema == column
    ]
    assert chunk.compression == "ZSTD"
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and chunk.dictionary_page_offset:
        start = min(start, chunk.dictionary_page_offset)
    end = start + chunk.total_compressed_size
    data = bytearray(path.read_bytes())
    magic = data.index(ZSTD_MAGIC, start, end)
    data[magic + 4 : end] = b"\xff" * (end - magic - 4)
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="ZSTD decompression failed"):
        pq.read_table(path, columns=[column])


def run_cli(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict],
    *extra: str,
    log_ids: list[str] | None = LOGS,
) -> int:
    """`main` on tmp_path/lake over the first hour, the API side counting `rows`."""
    config = tmp_path / "tap.json"
    config.write_text(
        json.dumps({"api_key": "test-api-key-0123", **({"log_ids": log_ids} if log_ids else {})})
    )
    monkeypatch.setattr(
        reconcile_cli,
        "_client_counter",
        lambda cfg: (truth_counter(rows), lambda: LOGS, "http://api"),
    )
    args = ["--config", str(config), "--dataset", str(tmp_path / "lake")]
    return reconcile_cli.main([*args, "--from", str(START), "--to", str(START + HOUR), *extra])


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the command printed on stderr (and nothing on stdout: no report)."""
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(PREFIX)
    return lines[0]


def test_the_healthy_lake_passes(tmp_path, monkeypatch, capsys):
    rows, _ = write_lake(tmp_path / "lake")
    assert run_cli(tmp_path, monkeypatch, rows, "--clocks") == 0
    assert "OK: every window matches" in capsys.readouterr().out


# --------------------------------------------------------------------------- undecodable data


@pytest.mark.parametrize(
    ("column", "extra"),
    [
        ("sequence_number_str", ()),
        ("sequence_number", ()),
        ("timestamp", ()),
        ("log_id", ()),
        ("event_time", ("--clocks",)),
        ("received_at", ("--clocks",)),
        ("event_time", ("--json",)),  # --json always reports the clocks
    ],
)
def test_a_column_that_cannot_be_decompressed_fails_naming_the_part(
    tmp_path, monkeypatch, capsys, column, extra
):
    rows, parts = write_lake(tmp_path / "lake")
    corrupt_column(parts[1], column)
    assert run_cli(tmp_path, monkeypatch, rows, *extra) == 2
    line = error_line(capsys)
    assert f"cannot read part {parts[1]}: column {column}, row group 0: " in line
    assert "ZSTD decompression failed" in line


def test_a_damaged_part_is_named_before_the_logs_are_listed(tmp_path, monkeypatch, capsys):
    # Without log_ids the command first lists the dataset's logs (log_id of every part).
    rows, parts = write_lake(tmp_path / "lake")
    corrupt_column(parts[2], "log_id")
    assert run_cli(tmp_path, monkeypatch, rows, log_ids=None) == 2
    line = error_line(capsys)
    assert f"cannot read part {parts[2]}: column log_id, row group 0: " in line


def test_a_damaged_row_group_outside_the_range_still_fails(tmp_path, monkeypatch, capsys):
    # Row group 1 is all after the range: --subset never reads it for the counts, and the
    # row-group statistics let the reader skip it; it is still decoded, and still refused.
    rows = rows_of(0, 20)
    later = [dict(row, timestamp=row["timestamp"] + 5 * HOUR) for row in rows_of(0, 20, 500)]
    part = write_part(
        tmp_path / "lake" / "events" / "part-0000.parquet", rows + later, row_group_size=20
    )
    corrupt_column(part, "sequence_number_str", row_group=1)
    assert run_cli(tmp_path, monkeypatch, rows, "--subset", log_ids=[LOGS[0]]) == 2
    line = error_line(capsys)
    assert f"cannot read part {part}: column sequence_number_str, row group 1: " in line


def test_message_is_never_read(tmp_path, monkeypatch, capsys):
    # Reconcile reports on the identity and clock columns only: a damaged `message` is not its
    # business (and reading every message would cost far more than the check needs).
    rows, parts = write_lake(tmp_path / "lake")
    corrupt_column(parts[0], "message")
    assert run_cli(tmp_path, monkeypatch, rows, "--clocks") == 0
    assert "OK: every window matches" in capsys.readouterr().out


def test_reconcile_raises_a_dataset_error(tmp_path):
    rows, parts = write_lake(tmp_path)
    corrupt_column(parts[0], "sequence_number_str")
    with pytest.raises(DatasetError, match="sequence_number_str"):
        reconcile(
            tmp_path,
            truth_counter(rows),
            log_ids=LOGS,
            from_ms=START,
            to_ms=START + HOUR,
            window_ms=HOUR,
        )


# --------------------------------------------------------------------------- wrong types


def test_a_string_timestamp_fails_naming_the_part_the_column_and_both_types(
    tmp_path, monkeypatch, capsys
):
    rows, parts = write_lake(tmp_path / "lake")
    schema = TARGET_SCHEMA.set(1, pa.field("timestamp", pa.string()))
    write_part(
        parts[1], [dict(row, timestamp=str(row["timestamp"])) for row in rows[50:100]], schema
    )
    assert run_cli(tmp_path, monkeypatch, rows) == 2
    line = error_line(capsys)
    assert line == (
        f"{PREFIX}cannot read part {parts[1]}: column timestamp has type string, expected int64"
    )


@pytest.mark.parametrize(
    ("case", "extra"),
    [
        (("sequence_number_str", pa.int64(), "string"), ()),
        (("sequence_number", pa.string(), "int64"), ()),
        (("log_id", pa.int64(), "string"), ()),
        (("event_time", pa.string(), "timestamp[us, tz=UTC]"), ("--clocks",)),
        (("received_at", pa.int64(), "timestamp[us, tz=UTC]"), ("--json",)),
    ],
    ids=lambda value: value[0] if isinstance(value, tuple) and value else None,
)
def test_a_column_of_the_wrong_type_fails_naming_it(tmp_path, monkeypatch, capsys, case, extra):
    column, arrow_type, expected = case
    rows, parts = write_lake(tmp_path / "lake")
    index = TARGET_SCHEMA.get_field_index(column)
    columns = {name: [row.get(name) for row in rows[100:]] for name in TARGET_SCHEMA.names}
    wrong = pa.table(columns, schema=TARGET_SCHEMA)
    converted = _converted(wrong[column], arrow_type)
    wrong = wrong.set_column(index, pa.field(column, arrow_type), converted)
    pq.write_table(wrong, parts[2], compression="zstd")
    assert run_cli(tmp_path, monkeypatch, rows, *extra) == 2
    line = error_line(capsys)
    assert line == (
        f"{PREFIX}cannot read part {parts[2]}: column {column} has type {arrow_type}, "
        f"expected {expected}"
    )


def _converted(values: pa.ChunkedArray, arrow_type: pa.DataType) -> pa.Array:
    """`values` as `arrow_type`: text from anything, numbers from times or from text."""
    python = values.to_pylist()
    if arrow_type == pa.string():
        return pa.array([str(value) for value in python], arrow_type)
    if pa.types.is_timestamp(values.type):
        return pa.array([int(value.timestamp()) for value in python], arrow_type)
    return pa.array([zlib.crc32(str(value).encode()) for value in python], arrow_type)


def test_equivalent_types_still_count(tmp_path, monkeypatch, capsys):
    # Other writers (a compaction, pandas) may store the same values as dictionary-encoded or
    # large strings, or date-times in another unit: the same column, read as before.
    rows, parts = write_lake(tmp_path / "lake")
    table = pq.read_table(parts[0])
    table = table.set_column(0, "log_id", table["log_id"].dictionary_encode())
    seq = table.schema.get_field_index("sequence_number_str")
    table = table.set_column(seq, "sequence_number_str", table[seq].cast(pa.large_string()))
    at = table.schema.get_field_index("event_time")
    table = table.set_column(at, "event_time", table[at].cast(pa.timestamp("ms", tz="UTC")))
    pq.write_table(table, parts[0], compression="zstd")
    assert run_cli(tmp_path, monkeypatch, rows, "--clocks") == 0
    assert "OK: every window matches" in capsys.readouterr().out


# --------------------------------------------------------------------------- symbolic links


def test_a_symlink_loop_is_refused_naming_the_link(tmp_path, monkeypatch, capsys):
    rows, parts = write_lake(tmp_path / "lake")
    loop = parts[0].parent / "loop"
    loop.symlink_to("..", target_is_directory=True)  # events/date=.../loop -> events/
    assert run_cli(tmp_path, monkeypatch, rows) == 2
    line = error_line(capsys)
    events = tmp_path / "lake" / "events"
    assert line == (
        f"{PREFIX}cannot list the dataset: {loop} is a symbolic link to {events}, a directory "
        "already read (a loop, or a second name for it): its parts would be counted twice; "
        "remove the link"
    )


def test_a_second_name_for_a_directory_is_refused(tmp_path, monkeypatch, capsys):
    # "alias" sorts before "date=...": the link, not the real directory, is the one refused.
    rows, parts = write_lake(tmp_path / "lake")
    alias = tmp_path / "lake" / "events" / "alias"
    alias.symlink_to(parts[0].parent, target_is_directory=True)
    assert run_cli(tmp_path, monkeypatch, rows) == 2
    line = error_line(capsys)
    assert f"cannot list the dataset: {alias} is a symbolic link to {parts[0].parent}, " in line


def test_a_symlink_to_a_directory_outside_the_dataset_is_read_once(tmp_path, monkeypatch, capsys):
    # A partition kept on another volume and linked in: read once, like any reader does.
    rows, parts = write_lake(tmp_path / "lake")
    elsewhere = tmp_path / "other-volume" / "date=2025-11-26"
    elsewhere.parent.mkdir()
    parts[0].parent.rename(elsewhere)
    parts[0].parent.symlink_to(elsewhere, target_is_directory=True)
    assert run_cli(tmp_path, monkeypatch, rows, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert document["totals"]["duplicates"] == 0


def test_a_dangling_part_link_is_refused(tmp_path, monkeypatch, capsys):
    rows, parts = write_lake(tmp_path / "lake")
    moved = tmp_path / "moved.parquet"
    parts[1].rename(moved)
    parts[1].symlink_to(moved)
    moved.unlink()
    assert run_cli(tmp_path, monkeypatch, rows) == 2
    line = error_line(capsys)
    assert f"cannot read part {parts[1]}: " in line
    assert str(moved) in line


def test_reconcile_raises_a_dataset_error_for_a_loop(tmp_path):
    rows, parts = write_lake(tmp_path)
    (parts[0].parent / "loop").symlink_to("..", target_is_directory=True)
    with pytest.raises(DatasetError, match="loop"):
        reconcile(
            tmp_path,
            truth_counter(rows),
            log_ids=LOGS,
            from_ms=START,
            to_ms=START + HOUR,
            window_ms=HOUR,
            clocks=True,
            late_margin_ms=10 * MINUTE,
        )
