"""Parts written behind the reader (``writes.py``): the overlap attacked where it could go wrong.

Each test holds the part writer at a chosen point with events (never sleeps) and looks at what
the reading thread did meanwhile: how far it read, which STATEs it wrote, what it raised.
Waits on events are bounded (``_WAIT``): a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import errno
import threading

import pytest

from target_parquet_parts import parts as parts_module
from target_parquet_parts.errors import OutputDirError
from target_parquet_parts.parts import PartWriter
from target_parquet_parts.target import TargetParquetParts
from target_parquet_parts.writes import PartWrites
from tests.target.conftest import (
    StateCapture,
    events_then_set,
    listen_lazily,
    read_rows,
    run_target,
    stopped_by_sigterm_at_batch_two,
    temp_files,
)
from tests.target.singer_data import (
    BASE_SEQUENCE,
    event,
    events_lines,
    record_message,
    state_message,
)

_WAIT = 30.0  # seconds: far beyond any real step, only a hang reaches it


def _on_disk(out) -> set[int]:
    return {row["sequence_number"] - BASE_SEQUENCE for row in read_rows(out)}


def _covered(out, state) -> bool:
    return set(range(state["bookmarks"]["events"]["last"] + 1)) <= _on_disk(out)


@pytest.mark.parametrize("batch_size_rows", [7, 100])
def test_the_reader_blocks_rather_than_queue_a_second_batch(tmp_path, monkeypatch, batch_size_rows):
    """While one batch is written, the reader reads the next one full, then waits for the
    writer: never two batches handed over and unfinished, whatever the batch size."""
    out = tmp_path / "out"
    target = TargetParquetParts(
        config={
            "output_dir": str(out),
            "batch_size_rows": batch_size_rows,
            "state_max_lag_seconds": 3600,
        }
    )
    assert target.writes.overlap
    release = threading.Event()
    second_waits = threading.Event()
    unfinished: list[int] = []  # submitted - done, each time a hand-over returned
    real_write = PartWriter.write
    real_submit = PartWrites.submit
    writes = []

    def write(self, table, directory, before_publish=None):
        writes.append(table.num_rows)
        if len(writes) == 1:
            assert release.wait(_WAIT), "the reader never got to the second hand-over"
        return real_write(self, table, directory, before_publish)

    def submit(self, job):
        if not self.idle:
            second_waits.set()  # a batch is in flight: this hand-over must wait for it
        real_submit(self, job)
        unfinished.append(self.submitted - self.done)

    monkeypatch.setattr(PartWriter, "write", write)
    monkeypatch.setattr(PartWrites, "submit", submit)
    read: list[int] = []
    blocked_at: list[int] = []

    def lines():
        for number, line in enumerate(events_lines(6 * batch_size_rows)):
            read.append(number)
            yield line

    def hold_then_release():
        assert second_waits.wait(_WAIT)
        blocked_at.append(read[-1])  # how far the reader got while the first batch was held
        release.set()

    releaser = threading.Thread(target=hold_then_release)
    releaser.start()
    listen_lazily(target, lines(), StateCapture())
    releaser.join(_WAIT)
    # Line 0 is the SCHEMA; the second batch is full at record 2 * size - 1 (line 2 * size):
    # the reader stopped right there while the first batch was being written.
    assert blocked_at[0] == 2 * batch_size_rows
    assert max(unfinished) == 1
    assert writes == [batch_size_rows] * 6
    assert _on_disk(out) == set(range(6 * batch_size_rows))


def test_a_failed_write_after_the_reader_moved_on_ends_the_run_with_its_error_and_no_later_state(
    tmp_path, monkeypatch
):
    out = tmp_path / "out"
    target = TargetParquetParts(
        config={"output_dir": str(out), "batch_size_rows": 100, "state_max_lag_seconds": 3600}
    )
    moved_on = threading.Event()
    failed = threading.Event()
    fsyncs: list[str] = []
    real_fsync = parts_module._fsync_file

    def fsync(path):
        fsyncs.append(str(path))
        if len(fsyncs) == 2:  # the second part, once the reader read past its batch
            assert moved_on.wait(_WAIT)
            failed.set()
            raise OSError(errno.EIO, "Input/output error", str(path))
        real_fsync(path)

    monkeypatch.setattr(parts_module, "_fsync_file", fsync)
    states_after_failure = []
    capture = StateCapture(on_state=lambda s: states_after_failure.append(failed.is_set()))

    # Records and STATEs after the second batch's hand-over.
    lines = events_then_set(moved_on, after='"last": 249')
    with pytest.raises(OutputDirError) as raised:
        listen_lazily(target, lines, capture)
    message = str(raised.value)
    assert "\n" not in message
    assert ".part-" in message
    assert fsyncs[1] in message  # names the part's file
    assert "Input/output error" in message
    assert not any(states_after_failure)  # no STATE once the write had failed
    # STATE(99) went out once the first part landed; STATE(149) and later wait for the second.
    assert capture.states == [{"bookmarks": {"events": {"last": 99}}}]
    assert all(_covered(out, state) for state in capture.states)
    assert _on_disk(out) == set(range(100))  # only the first part; nothing after the failure
    assert temp_files(out) == []
    assert target._run_lock is None  # output_dir unlocked: a rerun can start


def test_a_sigterm_while_a_part_is_in_flight_ends_with_state_at_the_last_durable_part(
    tmp_path, monkeypatch
):
    out = tmp_path / "out"
    target = TargetParquetParts(
        config={"output_dir": str(out), "batch_size_rows": 100, "state_max_lag_seconds": 3600}
    )
    in_flight = threading.Event()
    signalled = threading.Event()
    real_write = PartWriter.write
    writes = []

    def write(self, table, directory, before_publish=None):
        writes.append(table.num_rows)
        if len(writes) == 2:
            in_flight.set()
            assert signalled.wait(_WAIT)
        return real_write(self, table, directory, before_publish)

    monkeypatch.setattr(PartWriter, "write", write)
    capture, last_state_sent = stopped_by_sigterm_at_batch_two(
        target, in_flight, signalled, wait=_WAIT
    )
    received = _on_disk(out)
    last_record = max(received)
    assert received == set(range(last_record + 1))  # what was read is written, no gap
    assert last_record >= 199  # the part in flight landed
    # The last STATE is the last one received, out after every part (the one in flight too).
    assert capture.states[-1] == last_state_sent[-1]
    assert all(_covered(out, state) for state in capture.states)
    assert temp_files(out) == []


@pytest.mark.parametrize("lag", [3600, 0])
def test_states_follow_their_parts_in_order_across_many_flushes(tmp_path, monkeypatch, lag):
    out = tmp_path / "out"
    durable = {"events": -1, "logs": -1}  # per stream: the highest record in a durable part
    real_write = PartWriter.write

    def write(self, table, directory, before_publish=None):
        part = real_write(self, table, directory, before_publish)
        stream = directory.name
        durable[stream] = max(durable[stream], *table.column("timestamp").to_pylist())
        return part

    monkeypatch.setattr(PartWriter, "write", write)
    states = []

    def on_state(state):
        states.append(state)
        for stream, last in state["bookmarks"].items():
            ms = event(last)["timestamp"]
            assert durable[stream] >= ms, f"STATE {state} before its records' part"

    def lines():
        yield from events_lines(0, stream="events")
        yield from events_lines(0, stream="logs")
        for i in range(3000):
            stream = "logs" if i % 5 == 0 else "events"
            yield record_message(event(i), stream)
            if (i + 1) % 13 == 0:
                last = {"events": i if i % 5 else i - 1, "logs": i // 5 * 5}
                yield state_message({"bookmarks": last})

    _, capture = run_target(
        out, lines(), monkeypatch, on_state=on_state, batch_size_rows=37, state_max_lag_seconds=lag
    )
    marks = [(s["bookmarks"]["events"], s["bookmarks"]["logs"]) for s in capture.states]
    assert marks == sorted(set(marks))  # in order, none twice
    assert marks[-1] == (2989, 2985)  # the last STATE received (after record 2989), at the end
    assert len(read_rows(out)) + len(read_rows(out, "logs")) == 3000


def test_overlap_writes_false_writes_on_the_reading_thread(tmp_path, monkeypatch):
    threads = set()
    real_write = PartWriter.write

    def write(self, table, directory, before_publish=None):
        threads.add(threading.current_thread().name)
        return real_write(self, table, directory, before_publish)

    monkeypatch.setattr(PartWriter, "write", write)
    lines = events_lines(300, state_every=50)
    target, _ = run_target(
        tmp_path / "off", lines, monkeypatch, batch_size_rows=100, overlap_writes="false"
    )  # text, as an environment gives it
    assert not target.writes.overlap
    assert threads == {threading.current_thread().name}
    threads.clear()
    run_target(tmp_path / "on", events_lines(300), monkeypatch, batch_size_rows=100)
    assert threads == {"target-parquet-parts-writer"}


def test_a_failed_upload_after_the_reader_moved_on_names_the_object_and_stops_state(
    s3_bucket, monkeypatch
):
    """The same on S3: the part's PUT runs on the part writer; its failure ends the run."""
    import botocore.exceptions

    from target_parquet_parts import objectstore

    target = TargetParquetParts(
        config={
            "output_dir": s3_bucket.uri(),
            "batch_size_rows": 100,
            "state_max_lag_seconds": 3600,
        }
    )
    moved_on = threading.Event()
    failed = threading.Event()
    puts: list[str] = []
    real_put = objectstore.S3ObjectStore.put_new

    def put_new(self, key, data):
        if "/events/part-" in key:
            puts.append(key)
            if len(puts) == 2:  # the second part, once the reader read past its batch
                assert moved_on.wait(_WAIT)
                failed.set()
                cause = botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3")
                raise self._fail("PutObject", key, cause)
        return real_put(self, key, data)

    monkeypatch.setattr(objectstore.S3ObjectStore, "put_new", put_new)
    states_after_failure = []
    capture = StateCapture(on_state=lambda s: states_after_failure.append(failed.is_set()))

    with pytest.raises(objectstore.ObjectStoreError) as raised:
        listen_lazily(target, events_then_set(moved_on, after='"last": 249'), capture)
    message = str(raised.value)
    assert "\n" not in message
    assert f"s3://{s3_bucket.name}/{puts[1]}" in message  # names the part's object
    assert not any(states_after_failure)
    assert capture.states == [{"bookmarks": {"events": {"last": 99}}}]
    assert len(s3_bucket.keys("data/events/")) == 1  # nothing after the failed part
    assert not [k for k in s3_bucket.keys("data/_journal/") if k.endswith("/lock")]  # unlocked


def test_a_job_no_state_waits_for_is_run_in_order_and_not_counted():
    """``counts=False`` (the Iceberg catalog opened ahead): run on the writer in hand-over
    order, but neither ``submitted`` nor ``done`` counts it, so no STATE waits for it."""
    ran: list[str] = []
    told: list[int] = []
    writes = PartWrites(overlap=True, on_done=lambda: told.append(1))
    held = threading.Event()

    def ahead() -> None:
        assert held.wait(_WAIT)
        ran.append("ahead")

    writes.submit(ahead, counts=False)
    assert (writes.submitted, writes.done) == (0, 0)
    held.set()
    writes.submit(lambda: ran.append("batch"))
    writes.wait()
    writes.close()
    assert ran == ["ahead", "batch"]
    assert (writes.submitted, writes.done, len(told)) == (1, 1, 1)
