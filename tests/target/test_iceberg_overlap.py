"""Iceberg commits behind the reader (``writes.py``): the overlap attacked where it could go wrong.

With ``table_format: iceberg`` a flush's data files are written and committed on the part
writer while the next records are read, as parts are. Each test holds or fails the commit at a
chosen point with events (never sleeps) and looks at what the reading thread did meanwhile:
which STATEs it wrote, what the table held at each, what it raised. Waits are bounded (``_WAIT``).
"""

from __future__ import annotations

import threading

import pytest

from target_parquet_parts import iceberg as iceberg_module
from target_parquet_parts.iceberg import IcebergCatalogError, IcebergTableError, StreamTable
from target_parquet_parts.iceberg_ledger import STATE_INDEX, STATES_EMITTED
from target_parquet_parts.record_lines import LineConverter
from target_parquet_parts.target import TargetParquetParts
from target_parquet_parts.writes import PartWrites
from tests.target.conftest import (
    StateCapture,
    events_then_set,
    listen_lazily,
    run_target,
    stopped_by_sigterm_at_batch_two,
)
from tests.target.iceberg_helpers import ICEBERG, scan, summaries
from tests.target.singer_data import BASE_SEQUENCE, events_lines

_WAIT = 30.0  # seconds: far beyond any real step, only a hang reaches it
_WRITER = "target-parquet-parts-writer"


def _target(out, **config) -> TargetParquetParts:
    return TargetParquetParts(
        config={"output_dir": str(out), "state_max_lag_seconds": 3600, **ICEBERG, **config}
    )


def _committed(out) -> set[int]:
    rows = scan(out).column("sequence_number").to_pylist()
    return {n - BASE_SEQUENCE for n in rows}


def test_commits_run_on_the_part_writer_and_each_state_follows_its_commit(tmp_path, monkeypatch):
    """Every commit (and the batch's conversion from its lines) runs on the writer; every STATE
    the target writes is covered by the table at that moment; the last one received goes out."""
    out = tmp_path / "out"
    commit_threads: set[str] = set()
    convert_threads: set[str] = set()
    real_commit = StreamTable.commit
    real_convert = LineConverter.convert

    def commit(self, data_files, state_index):
        commit_threads.add(threading.current_thread().name)
        return real_commit(self, data_files, state_index)

    def convert(self, data, rows):
        convert_threads.add(threading.current_thread().name)
        return real_convert(self, data, rows)

    monkeypatch.setattr(StreamTable, "commit", commit)
    monkeypatch.setattr(LineConverter, "convert", convert)
    # Whether the writer is still busy at a hand-over depends on timing (busy: the reader
    # converts the batch itself, test_record_lines.py); here it is taken as idle.
    monkeypatch.setattr(PartWrites, "idle", property(lambda self: True))
    uncovered: list[dict] = []

    def on_state(state):
        last = state["bookmarks"]["events"]["last"]
        if not set(range(last + 1)) <= _committed(out):
            uncovered.append(state)

    _, capture = run_target(
        out,
        events_lines(600, state_every=50),
        monkeypatch,
        on_state=on_state,
        batch_size_rows=100,
        **ICEBERG,
    )
    assert commit_threads == {_WRITER}
    assert convert_threads == {_WRITER}
    assert uncovered == []
    assert capture.states[-1] == {"bookmarks": {"events": {"last": 599}}}
    assert _committed(out) == set(range(600))
    assert scan(out).num_rows == 600


def test_the_reader_reads_on_while_a_commit_is_held_and_no_state_passes_it(tmp_path, monkeypatch):
    """While the second batch's commit is held, the reader reads the third batch (and the
    STATEs among it) but writes no STATE after the held batch's records until it lands."""
    out = tmp_path / "out"
    target = _target(out, batch_size_rows=100)
    assert target.writes.overlap
    held = threading.Event()
    release = threading.Event()
    real_commit = StreamTable.commit
    commits: list[int] = []

    def commit(self, data_files, state_index):
        commits.append(state_index)
        if len(commits) == 2:
            held.set()
            assert release.wait(_WAIT), "the reader never read past the held batch"
        return real_commit(self, data_files, state_index)

    monkeypatch.setattr(StreamTable, "commit", commit)
    before_release: list[int] = []  # the STATEs written before the held commit landed
    capture = StateCapture(
        on_state=lambda s: (
            None if release.is_set() else before_release.append(s["bookmarks"]["events"]["last"])
        )
    )
    read_while_held: list[str] = []

    def lines():
        for line in events_lines(500, state_every=25):
            yield line
            if held.is_set():
                read_while_held.append(line)
            if '"last": 274' in line:  # the third batch, its STATEs included, was read
                assert held.wait(_WAIT)
                release.set()

    listen_lazily(target, lines(), capture)
    # The reader went on while the commit was held: records and STATEs after batch 2.
    assert sum('"STATE"' in line for line in read_while_held) >= 3
    # None of those STATEs (nor batch 2's own) went out before its commit landed.
    assert before_release
    assert max(before_release) <= 99
    assert capture.states[-1] == {"bookmarks": {"events": {"last": 499}}}
    assert _committed(out) == set(range(500))
    # Each commit records the STATEs received when its batch was handed over, in order.
    assert commits == sorted(commits)


def test_a_failed_commit_after_the_reader_moved_on_ends_the_run_with_no_later_state(
    tmp_path, monkeypatch
):
    out = tmp_path / "out"
    target = _target(out, batch_size_rows=100)
    moved_on = threading.Event()
    failed = threading.Event()
    real_commit = StreamTable.commit
    commits: list[int] = []

    def commit(self, data_files, state_index):
        commits.append(state_index)
        if len(commits) == 2:  # the second batch, once the reader read past it
            assert moved_on.wait(_WAIT)
            failed.set()
            msg = "Iceberg table singer.events: its metadata file is missing (test)"
            raise IcebergTableError(msg)
        return real_commit(self, data_files, state_index)

    monkeypatch.setattr(StreamTable, "commit", commit)
    states_after_failure: list[bool] = []
    capture = StateCapture(on_state=lambda s: states_after_failure.append(failed.is_set()))

    with pytest.raises(IcebergTableError, match=r"singer\.events: its metadata file is missing"):
        listen_lazily(target, events_then_set(moved_on, after='"last": 249'), capture)
    assert len(commits) == 2  # nothing was committed after the failed one
    assert True not in states_after_failure
    assert capture.states[-1] == {"bookmarks": {"events": {"last": 99}}}
    assert _committed(out) == set(range(100))


def test_a_sigterm_while_a_commit_is_in_flight_ends_with_state_at_the_last_commit(
    tmp_path, monkeypatch
):
    out = tmp_path / "out"
    target = _target(out, batch_size_rows=100)
    in_flight = threading.Event()
    signalled = threading.Event()
    real_commit = StreamTable.commit
    commits: list[int] = []

    def commit(self, data_files, state_index):
        commits.append(state_index)
        if len(commits) == 2:
            in_flight.set()
            assert signalled.wait(_WAIT)
        return real_commit(self, data_files, state_index)

    monkeypatch.setattr(StreamTable, "commit", commit)
    capture, sent = stopped_by_sigterm_at_batch_two(target, in_flight, signalled, wait=_WAIT)
    committed = _committed(out)
    assert committed == set(range(max(committed) + 1))  # what was read is committed, no gap
    assert max(committed) >= 199  # the commit in flight landed
    assert capture.states[-1] == sent[-1]
    last = capture.states[-1]["bookmarks"]["events"]["last"]
    assert set(range(last + 1)) <= committed
    # A stop signal leaves the run open: the next resume's rows are checked against it.
    assert summaries(out)[-1]["singer.run-end"] == "open"


def test_each_commit_records_no_more_states_emitted_than_it_received(tmp_path, monkeypatch):
    """The ledger's rule (``iceberg_ledger.py``): a commit's ``states-emitted``, read on the
    writer while the reader emits, never exceeds its ``state-index``: a STATE received after
    a batch's hand-over waits for that batch's commit."""
    out = tmp_path / "out"
    lines = list(events_lines(3000, state_every=7))
    run_target(out, lines, monkeypatch, batch_size_rows=37, **ICEBERG)
    commits = [s for s in summaries(out) if STATE_INDEX in s]
    assert len(commits) == -(-3000 // 37)
    assert all(int(s[STATES_EMITTED]) <= int(s[STATE_INDEX]) for s in commits)
    assert any(int(s[STATES_EMITTED]) > 0 for s in commits)  # the reader did emit meanwhile
    indexes = [int(s[STATE_INDEX]) for s in commits]
    assert indexes == sorted(indexes)
    assert scan(out).num_rows == 3000


def test_overlap_writes_false_commits_on_the_reading_thread(tmp_path, monkeypatch):
    threads: set[str] = set()
    real_commit = StreamTable.commit

    def commit(self, data_files, state_index):
        threads.add(threading.current_thread().name)
        return real_commit(self, data_files, state_index)

    monkeypatch.setattr(StreamTable, "commit", commit)
    target, _ = run_target(
        tmp_path / "out",
        events_lines(300, state_every=50),
        monkeypatch,
        batch_size_rows=100,
        overlap_writes=False,
        **ICEBERG,
    )
    assert not target.writes.overlap
    assert threads == {threading.current_thread().name}


def test_the_catalog_opens_on_the_part_writer_while_the_first_batch_is_read(tmp_path, monkeypatch):
    """At the first record the catalog's opening (SQLAlchemy's import, its tables) is handed
    to the writer: held there until the reader has read records of the first batch."""
    out = tmp_path / "out"
    target = _target(out, batch_size_rows=100)
    opening = threading.Event()
    reading = threading.Event()
    opened_on: list[str] = []
    real_load = iceberg_module.load_iceberg_catalog

    def load(settings):
        opened_on.append(threading.current_thread().name)
        opening.set()
        assert reading.wait(_WAIT), "the reader did not read on while the catalog opened"
        return real_load(settings)

    monkeypatch.setattr(iceberg_module, "load_iceberg_catalog", load)

    def lines():
        for number, line in enumerate(events_lines(300, state_every=50)):
            yield line
            if number == 50:  # half of the first batch read: the catalog is opening already
                assert opening.wait(_WAIT), "the catalog waited for the first flush"
                reading.set()

    capture = StateCapture()
    listen_lazily(target, lines(), capture)
    assert opened_on == [_WRITER]
    assert capture.states[-1] == {"bookmarks": {"events": {"last": 299}}}
    assert _committed(out) == set(range(300))


def _failing_catalog(monkeypatch) -> list[str]:
    """Every catalog open fails; returns the thread of each attempt."""
    attempts: list[str] = []

    def load(settings):
        attempts.append(threading.current_thread().name)
        msg = "Iceberg SQLite catalog file '/nowhere' cannot be used: OperationalError (test)"
        raise IcebergCatalogError(msg)

    monkeypatch.setattr(iceberg_module, "load_iceberg_catalog", load)
    return attempts


def test_a_catalog_that_cannot_open_is_named_by_the_first_flush_and_no_state_passes(
    tmp_path, monkeypatch
):
    """The opening ahead fails quietly (a speed-up only); the first flush opens again and
    ends the run with the catalog's own one line, before any STATE."""
    attempts = _failing_catalog(monkeypatch)
    target = _target(tmp_path / "out", batch_size_rows=100)
    capture = StateCapture()
    with pytest.raises(IcebergCatalogError, match="cannot be used"):
        listen_lazily(target, events_lines(300, state_every=50), capture)
    assert attempts == [_WRITER, _WRITER]  # ahead, then at the first flush
    assert capture.states == []


@pytest.mark.parametrize("catalog", ["failing", "embedded"])
def test_a_run_without_records_never_opens_the_catalog(tmp_path, monkeypatch, catalog):
    """An incremental run with nothing new (SCHEMA, STATE) passes its STATE on, whether the
    catalog is down or not, and leaves no catalog file behind."""
    attempts = _failing_catalog(monkeypatch) if catalog == "failing" else []
    out = tmp_path / "out"
    target = _target(out, batch_size_rows=100)
    capture = StateCapture()
    lines = [*events_lines(0), '{"type": "STATE", "value": {"bookmarks": {"events": 7}}}']
    listen_lazily(target, lines, capture)
    assert capture.states == [{"bookmarks": {"events": 7}}]
    assert attempts == []
    assert not out.exists()
