"""The exactly-once journal's crash points, one by one."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from target_parquet_parts.journal import Journal, key_strings
from tests.target.conftest import journal_lines


def _part(out, name, keys, values=None):
    """A part with key columns k1, k2 and a value column v (default: 10 * k2)."""
    path = out / "events" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    values = values or [10 * k[1] for k in keys]
    table = pa.table({"k1": [k[0] for k in keys], "k2": [k[1] for k in keys], "v": values})
    pq.write_table(table, path)
    return path


def test_replay_keys_come_from_existing_journaled_parts(tmp_path):
    out = tmp_path
    first = Journal(out, "run1")
    landed = _part(out, "part-a.parquet", [("x", 1), ("y", 2)])
    first.record("events", landed, ["k1", "k2"], 0)
    # Crash point 2: journaled, but never renamed into place.
    first.record("events", out / "events" / "part-never.parquet", ["k1", "k2"], 0)
    first.close()
    # Crash point 5: a torn last line.
    with (out / "_journal" / "journal.jsonl").open("a") as handle:
        handle.write('{"part": "events/part-b.parq')
    second = Journal(out, "run2")
    incoming = pa.table({"k1": ["x", "z", "y"], "k2": [1, 3, 2], "v": [10, 30, 20]})
    kept, dropped = second.drop_replayed("events", incoming, ["k1", "k2"])
    assert dropped == 2
    assert kept.column("v").to_pylist() == [30]
    # Same keys, other content: newer versions, written (only the same record is dropped).
    changed = pa.table({"k1": ["x", "y"], "k2": [1, 2], "v": [11, 20]})
    kept, dropped = second.drop_replayed("events", changed, ["k1", "k2"])
    assert (dropped, kept.column("v").to_pylist()) == (1, [11])
    assert second.drop_replayed("other", incoming, ["k1", "k2"])[1] == 0
    # The torn line is gone: an entry appended now survives the next load.
    later = _part(out, "part-c.parquet", [("w", 9)])
    second.record("events", later, ["k1", "k2"], 0)
    second.close()
    third = Journal(out, "run3")
    # The entry whose part never got its name is dropped on load (it holds no rows).
    assert sorted(e.part for e in third.entries) == [
        "events/part-a.parquet",
        "events/part-c.parquet",
    ]
    third.close()


def test_covered_entries_are_forgotten_and_the_journal_is_compacted(tmp_path, monkeypatch):
    journal = Journal(tmp_path, "run")
    part = _part(tmp_path, "part-a.parquet", [("x", 1)])
    journal.record("events", part, ["k1", "k2"], 0)
    journal.record("events", part, ["k1", "k2"], 1)
    journal.covered(1)  # STATE #1 emitted: the part flushed before it is covered
    assert [e.state_index for e in journal.entries] == [1]
    journal.close()
    reloaded = Journal(tmp_path, "next")
    assert [e.state_index for e in reloaded.entries] == [1]
    reloaded.close()
    from target_parquet_parts import journal as journal_module

    monkeypatch.setattr(journal_module, "COMPACT_AFTER_LINES", 1)
    again = Journal(tmp_path, "next2")
    again.record("events", part, ["k1", "k2"], 0)
    again.covered(1)
    assert len(journal_lines(tmp_path)) == 1  # rewritten with the live (inherited) entry only
    again.finish(completed=True, all_covered=True)
    assert journal_lines(tmp_path) == []


def test_inherited_entries_survive_this_runs_states(tmp_path):
    part = _part(tmp_path, "part-a.parquet", [("x", 1)])
    crashed = Journal(tmp_path, "crashed")
    crashed.record("events", part, ["k1", "k2"], 5)
    crashed.close()
    rerun = Journal(tmp_path, "rerun")
    rerun.covered(100)
    assert [e.run for e in rerun.entries] == ["crashed"]
    rerun.close()


def test_key_strings_composite_and_missing_columns():
    table = pa.table({"a": ["x", None], "b": [1, 2]})
    assert key_strings(table, ["a", "b"]).to_pylist() == ["x\x1f1", "\x00\x1f2"]
    assert key_strings(table, ["b"]).to_pylist() == ["1", "2"]
    assert key_strings(table, ["zzz"]) is None


def test_lock_is_exclusive_across_processes(tmp_path):
    import subprocess
    import sys

    journal = Journal(tmp_path, "holder")
    try:
        code = (
            "import sys; from pathlib import Path; from target_parquet_parts.journal import "
            "Journal, OutputDirInUseError\n"
            "try:\n    Journal(Path(sys.argv[1]), 'other')\nexcept OutputDirInUseError:\n"
            "    sys.exit(3)\n"
        )
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
        assert result.returncode == 3
    finally:
        journal.close()
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert result.returncode == 0  # released on close


LOGS_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "v": {"type": "integer"},
    },
}


def _logs_lines(rows, *, state_before=None, state_after=None):
    from tests.target.singer_data import record_message, schema_message, state_message

    lines = [schema_message("logs", LOGS_SCHEMA, keys=["id"])]
    if state_before is not None:
        lines.append(state_message(state_before))
    lines += [
        record_message({"id": f"log-{i}", "name": f"log {i}", "v": v}, "logs") for i, v in rows
    ]
    if state_after is not None:
        lines.append(state_message(state_after))
    return lines


def test_rerun_writes_newer_versions_of_journaled_keys(tmp_path, monkeypatch):
    """A snapshot stream (key id, every row again each run): after an interrupted run, the
    re-sent rows that changed are new versions and must land; the unchanged ones are dropped."""
    from tests.target.conftest import read_rows, run_target

    out = tmp_path / "out"
    # Run 1: STATE, then ten rows at v=1 that no later STATE covers (journaled for the rerun).
    run_target(out, _logs_lines([(i, 1) for i in range(10)], state_before={"run": 0}), monkeypatch)
    assert "logs/part-" in (out / "_journal" / "journal.jsonl").read_text()
    # Run 2 resumes from that STATE: the same ten rows, ids 3 and 7 changed to v=2 meanwhile.
    again = [(i, 2 if i in (3, 7) else 1) for i in range(10)]
    run_target(out, _logs_lines(again, state_after={"run": 2}), monkeypatch)
    rows = sorted((r["id"], r["v"]) for r in read_rows(out, "logs"))
    expected = sorted([(f"log-{i}", 1) for i in range(10)] + [("log-3", 2), ("log-7", 2)])
    assert rows == expected


def test_old_journal_format_is_read(tmp_path):
    """Journals written before segments (no ``segments``/``live``) load: each entry counts as
    one segment; the journal is rewritten in the current format on load."""
    import json

    part_a = _part(tmp_path, "part-a.parquet", [("x", 1), ("y", 2)])
    _part(tmp_path, "part-b.parquet", [("z", 3)])
    old = [
        {"part": "events/part-b.parquet", "stream": "events", "keys": ["k1", "k2"]}
        | {"state_index": 0, "run": "old"},
        {"part": "events/part-a.parquet", "stream": "events", "keys": ["k1", "k2"]}
        | {"state_index": 3, "run": "old"},
        {"covered": 1, "run": "old"},  # covers part-b (state_index 0), not part-a
    ]
    journal_file = tmp_path / "_journal" / "journal.jsonl"
    journal_file.parent.mkdir()
    journal_file.write_text("".join(json.dumps(line) + "\n" for line in old))
    journal = Journal(tmp_path, "new")
    assert [(e.part, e.segments) for e in journal.entries] == [("events/part-a.parquet", [[3, 2]])]
    incoming = pa.table({"k1": ["x", "z"], "k2": [1, 3], "v": [10, 30]})
    kept, dropped = journal.drop_replayed("events", incoming, ["k1", "k2"])
    assert (dropped, kept.column("k1").to_pylist()) == (1, ["z"])
    journal.close()
    [line] = journal_file.read_text().splitlines()
    assert json.loads(line)["segments"] == [[3, 2]]
    assert part_a.exists()


def _arrived(table, label):
    from target_parquet_parts.journal import ARRIVAL_COLUMN

    return table.append_column(ARRIVAL_COLUMN, pa.array([label] * table.num_rows, pa.int64()))


def test_rows_before_an_emitted_state_leave_the_journal(tmp_path):
    """Covered rows are a part's prefix; consumed rows (re-sent, then a STATE) go too."""
    part = _part(tmp_path, "part-a.parquet", [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)])
    first = Journal(tmp_path, "first")
    # Rows a, b arrived before STATE 1; c, d, e after it.
    first.record("events", part, ["k1", "k2"], 1, segments=[[0, 2], [1, 3]])
    first.covered(1)
    assert [e.live for e in first.entries] == [[[2, 5]]]
    first.close()  # a crash: c, d, e come again after STATE 1
    second = Journal(tmp_path, "second")
    assert second._replay["events"].count == 3
    # d comes again (before this run's STATE 1), unchanged: dropped and consumed.
    resent = _arrived(pa.table({"k1": ["d"], "k2": [4], "v": [40]}), 0)
    assert second.drop_replayed("events", resent, ["k1", "k2"])[1] == 1
    second.covered(1)
    assert [e.live for e in second.entries] == [[[2, 3], [4, 5]]]
    second.close()
    third = Journal(tmp_path, "third")
    assert third._replay["events"].count == 2  # c and e: what follows the last STATE
    # c comes again with other content (a newer version): kept, and the old row is consumed.
    newer = _arrived(pa.table({"k1": ["c"], "k2": [3], "v": [31]}), 0)
    assert third.drop_replayed("events", newer, ["k1", "k2"])[1] == 0
    third.covered(1)
    third.close()
    fourth = Journal(tmp_path, "fourth")
    assert fourth._replay["events"].count == 1
    fourth.close()


def test_journal_stays_bounded_across_repeated_interrupted_runs(tmp_path, monkeypatch, caplog):
    """20 runs, each resumed from the last STATE the previous one wrote and cut off with
    records after its last STATE: the journal each run loads holds no more rows than the
    dataset has after the resume point (it used to keep every earlier run's rows)."""
    import random
    import re

    from tests.target.conftest import read_rows, run_target
    from tests.target.singer_data import BASE_SEQUENCE, events_lines

    out = tmp_path / "out"
    rng = random.Random(20)
    position, rows_past_position, loaded = 0, 0, []
    caplog.set_level("INFO", logger="target_parquet_parts.journal")
    for _ in range(20):
        caplog.clear()
        count = rng.randint(100, 330)
        _, capture = run_target(
            out,
            events_lines(count, state_every=70, start=position),
            monkeypatch,
            batch_size_rows=90,
            state_max_lag_seconds=3600,
        )
        keys = sum(
            int(m.group(1))
            for m in (
                re.search(r"journal_loaded .* keys=(\d+)", r.getMessage()) for r in caplog.records
            )
            if m
        )
        assert keys <= rows_past_position, (loaded, keys, rows_past_position)
        loaded.append(keys)
        if capture.states:
            position = capture.states[-1]["bookmarks"]["events"]["last"] + 1
        indexes = [r["sequence_number"] - BASE_SEQUENCE for r in read_rows(out)]
        assert len(indexes) == len(set(indexes))
        rows_past_position = sum(1 for i in indexes if i >= position)
    assert max(loaded) < 90 + 70
