"""output_dir on object storage, against a real HTTP S3 API (moto's server, versioned buckets).

The disk's promises, kept on S3: every part a new object (one version per key: never
overwritten), no temporary or partial object visible, STATE only once the PUT returned, the
journal and the lock in the bucket (``objectstore.py``), unknown schemes refused.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import botocore.exceptions
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import urllib3
from singer_sdk.exceptions import ConfigValidationError

from target_parquet_parts import objectstore
from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.columns import build_table
from target_parquet_parts.journal import Journal
from target_parquet_parts.lock import OutputDirInUseError
from target_parquet_parts.objectstore import (
    LockLostError,
    ObjectExistsError,
    ObjectRunLock,
    ObjectStorage,
    ObjectStoreError,
)
from target_parquet_parts.storage import (
    UnsupportedOutputDirError,
    arrow_filesystem,
    open_storage,
    parse_location,
)
from target_parquet_parts.target import TargetParquetParts
from tests.target.conftest import run_target
from tests.target.singer_data import (
    EVENTS_KEYS,
    event,
    events_lines,
    record_message,
    schema_message,
    state_message,
)


def read_dataset(uri: str, stream: str = "events") -> pa.Table:
    """Every row of a stream, read back by pyarrow's dataset reader on its S3 filesystem."""
    fs, root = arrow_filesystem(uri)
    return ds.dataset(f"{root}/{stream}", filesystem=fs, format="parquet").to_table()


def journal_entries(bucket) -> list:
    """The live journal entries in the bucket, as the next run would load them."""
    journal = Journal(storage_of(bucket), "reader")
    try:
        return journal.entries
    finally:
        journal.close()


def storage_of(bucket) -> ObjectStorage:
    storage = open_storage(bucket.uri())
    assert isinstance(storage, ObjectStorage)
    return storage


# -- output_dir ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://lake/data", "lake", "data"),
        ("s3://lake/data/", "lake", "data"),
        ("s3://lake", "lake", ""),
        ("gs://lake/a/b", "lake", "a/b"),
        ("az://container/x", "container", "x"),
        ("abfss://container@acct.dfs.core.windows.net/x", "container", "x"),
    ],
)
def test_object_store_uris(uri, bucket, prefix):
    location = parse_location(uri)
    assert location is not None
    assert (location.bucket, location.prefix) == (bucket, prefix)


@pytest.mark.parametrize("path", ["out", "/tmp/out", "./s3/out", "file:///tmp/out"])
def test_local_paths_are_local(path):
    assert parse_location(path) is None


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("hdfs://namenode/data", "scheme 'hdfs://' is not supported"),
        ("s3a://lake/data", "scheme 's3a://' is not supported"),
        ("s3:///data", "names no bucket"),
        ("s3://lake/data?region=eu-west-1", "query strings"),
        ("s3://key:secret@lake/data", "no credentials or port"),
        ("s3://lake/a/../b", "'..' segments"),
    ],
)
def test_unusable_output_dir_refused_at_start_naming_the_setting(tmp_path, monkeypatch, uri, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigValidationError) as raised:
        TargetParquetParts(config={"output_dir": uri})
    (error,) = raised.value.errors  # what the SDK's CLI prints, one line, no traceback
    assert error.startswith("output_dir: ")
    assert says in error
    assert isinstance(raised.value.__cause__, UnsupportedOutputDirError)
    assert list(tmp_path.iterdir()) == []  # no local folder named 's3:' or 'hdfs:'


@pytest.mark.parametrize(
    ("uri", "module", "says"),
    [
        ("s3://lake/data", "boto3", "needs boto3 (conditional PUTs): install the 's3' extra"),
        ("gs://lake/data", "google.cloud.storage", "needs google-cloud-storage"),
        ("az://lake/data", "azure.storage.blob", "needs azure-storage-blob"),
        ("abfss://lake@acct.dfs.core.windows.net/d", "azure.storage.blob", "'azure' extra"),
    ],
)
def test_an_object_store_without_its_client_is_refused_at_start_naming_the_extra(
    tmp_path, monkeypatch, uri, module, says
):
    """Before any input is read, not at the first flush."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    with pytest.raises(ConfigValidationError) as raised:
        TargetParquetParts(config={"output_dir": uri})
    (error,) = raised.value.errors
    assert error.startswith("output_dir: ")
    assert says in error


def test_unusable_output_dir_is_one_line_from_the_command(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"output_dir": "hdfs://lake/data"}))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "target-parquet-parts"), "--config", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "output_dir: " in result.stderr
    assert "hdfs" in result.stderr
    assert "Traceback" not in result.stderr


# -- writing parts ------------------------------------------------------------------------
def test_parts_are_new_objects_read_back_whole_and_never_overwritten(s3_bucket, monkeypatch):
    uri = s3_bucket.uri()
    _, capture = run_target(
        uri, events_lines(250, state_every=100), monkeypatch, batch_size_rows=100
    )
    assert capture.states == [{"bookmarks": {"events": {"last": i}}} for i in (99, 199)]
    table = read_dataset(uri)
    assert table.num_rows == 250
    assert len(set(table.column("sequence_number_str").to_pylist())) == 250
    versions = s3_bucket.versions("data/events/")
    assert len(versions) == 3  # three flushes of up to 100 rows
    assert all(len(v) == 1 for v in versions.values())  # each key written exactly once
    assert all(k.rsplit("/", 1)[1].startswith("part-") for k in versions)
    assert s3_bucket.delete_markers("data/events/") == []
    # The run ended cleanly: its lock object is gone; the journal keeps the one part written
    # after the last STATE (records 200..249 come again if the tap resumes from STATE 199).
    [entry] = journal_entries(s3_bucket)
    assert entry.part.startswith("events/part-")
    assert all(key.endswith(".jsonl") for key in s3_bucket.keys("data/_journal/"))


@pytest.mark.parametrize("overlap", [False, True])
def test_state_only_after_the_put_returned(s3_bucket, monkeypatch, overlap):
    uri = s3_bucket.uri()
    seen: list[int] = []

    def on_state(_state):
        seen.append(len(s3_bucket.keys("data/events/")))

    run_target(
        uri,
        events_lines(300, state_every=100),
        monkeypatch,
        on_state=on_state,
        batch_size_rows=100,
        overlap_writes=overlap,
    )
    # Each STATE came after its part was listable in the bucket. With the upload on the part
    # writer, the next part may be listable too by the time the STATE goes out.
    if overlap:
        assert len(seen) == 3
        assert all(count >= n for n, count in enumerate(seen, 1)), seen
    else:
        assert seen == [1, 2, 3]


def test_date_partitions_and_rerun_drops_replayed_records(s3_bucket, monkeypatch, caplog):
    uri = s3_bucket.uri()
    # Run 1: STATE after record 149, then 50 more records; the run ends with them written but
    # not covered by a STATE, so their keys stay in the journal (as after a crash).
    run_target(
        uri,
        events_lines(200, state_every=150),
        monkeypatch,
        batch_size_rows=100,
        partition_date_field="event_time",
    )
    assert len(journal_entries(s3_bucket)) == 1  # the part holding records 100..199
    # The orchestrator resumes from STATE 149: records 150..299 (150..199 again).
    caplog.set_level(logging.INFO)
    _, capture = run_target(
        uri,
        events_lines(150, start=150, state_every=150),
        monkeypatch,
        batch_size_rows=100,
        partition_date_field="event_time",
    )
    assert capture.states[-1] == {"bookmarks": {"events": {"last": 299}}}
    assert "journal_duplicates_dropped stream=events rows=50" in caplog.text
    table = read_dataset(uri)
    keys = table.column("sequence_number_str").to_pylist()
    assert len(keys) == len(set(keys)) == 300
    assert all("/date=2024-01-01/part-" in k for k in s3_bucket.versions("data/events/"))
    assert all(len(v) == 1 for v in s3_bucket.versions("data/events/").values())
    assert s3_bucket.journal_remembers() == []  # all covered by the last STATE: cleared


def test_conditional_create_refuses_an_existing_key(s3_bucket):
    """S3's If-None-Match: * through moto: a second create of one key fails, one version."""
    storage = storage_of(s3_bucket)
    storage.store.put_new("data/events/part-x.parquet", b"first")
    with pytest.raises(ObjectExistsError):
        storage.store.put_new("data/events/part-x.parquet", b"second")
    [version] = s3_bucket.versions("data/events/part-x.parquet").values()
    assert len(version) == 1
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="data/events/part-x.parquet")
    assert body["Body"].read() == b"first"


def test_a_part_is_journaled_before_its_put_and_leaves_no_object_on_failure(s3_bucket, monkeypatch):
    storage = storage_of(s3_bucket)
    lock = storage.lock("run")
    try:
        writer = storage.part_writer("zstd", None)
        table = pa.table({"k": ["a", "b"]})
        seen: list[list[str]] = []
        part = writer.write(table, ("events",), lambda rel: seen.append(s3_bucket.keys("data/e")))
        assert seen == [[]]  # journaled while the part was not visible yet
        assert str(part.path).startswith(f"s3://{s3_bucket.name}/data/events/part-")

        def fail(_rel: str) -> None:
            raise OSError("journal write failed")

        with pytest.raises(OSError, match="journal write failed"):
            writer.write(table, ("events",), fail)
        assert len(s3_bucket.keys("data/events/")) == 1  # nothing uploaded for the failed one
    finally:
        lock.release()


def test_missing_bucket_is_named_in_the_error(s3_bucket, monkeypatch):
    uri = f"s3://{s3_bucket.name}-missing/data"
    with pytest.raises(ObjectStoreError, match=r"output_dir .*NoSuchBucket.*never creates"):
        run_target(uri, events_lines(3), monkeypatch)


# -- the lock -------------------------------------------------------------------------------
def _fake_holder(bucket, **holder) -> None:
    body = {
        "host": "elsewhere",
        "boot": None,
        "pidns": None,
        "pid": 1,
        "start": "1",
        "run": "old",
        "since": "2024-01-01T00:00:00+00:00",
        "lease_seconds": 60,
        **holder,
    }
    bucket.client.put_object(
        Bucket=bucket.name, Key="data/_journal/lock", Body=json.dumps(body).encode()
    )


def test_lock_is_exclusive_and_released(s3_bucket):
    storage = storage_of(s3_bucket)
    lock = storage.lock("first")
    try:
        with pytest.raises(OutputDirInUseError, match=r"in use .* run first.*this machine"):
            storage_of(s3_bucket).lock("second")
    finally:
        lock.release()
    assert s3_bucket.keys("data/_journal/") == []
    storage_of(s3_bucket).lock("third").release()


def test_lock_of_a_dead_process_on_this_machine_is_taken_over(s3_bucket, caplog):
    machine = objectstore._machine()
    _fake_holder(s3_bucket, **machine, pid=os.getpid(), start="not-this-process")
    lock = storage_of(s3_bucket).lock("rerun")
    lock.release()
    assert "took over the lock" in caplog.text
    assert "its process is gone" in caplog.text


def test_lock_of_another_machine_is_taken_over_once_its_lease_ran_out(s3_bucket, caplog):
    _fake_holder(s3_bucket, host="worker-gone", lease_seconds=0.001)
    lock = storage_of(s3_bucket).lock("rerun")
    lock.release()
    assert "took over the lock" in caplog.text
    assert "lease not renewed" in caplog.text


def test_lock_of_a_live_process_on_this_machine_is_not_taken_over(s3_bucket):
    machine = objectstore._machine()
    start = objectstore._process_start(os.getpid())
    _fake_holder(s3_bucket, **machine, pid=os.getpid(), start=start, lease_seconds=0)
    with pytest.raises(OutputDirInUseError, match=f"host {socket.gethostname()}"):
        storage_of(s3_bucket).lock("second")


def test_lost_lock_stops_writes_and_states(s3_bucket):
    storage = storage_of(s3_bucket)
    lock = storage.lock("slow")
    assert isinstance(lock, ObjectRunLock)
    try:
        assert lock.renew()  # a heartbeat: compare-and-swap on its own ETag
        _fake_holder(s3_bucket, run="taker")  # another run took the lock over
        assert not lock.renew()
        with pytest.raises(LockLostError, match="no longer holds its lock"):
            lock.check()
        writer = storage.part_writer("zstd", None)
        with pytest.raises(LockLostError):
            writer.write(pa.table({"k": ["a"]}), ("events",))
        assert s3_bucket.keys("data/events/") == []
    finally:
        lock.release()
    # release() never deletes a lock that is not this run's any more
    assert s3_bucket.keys("data/_journal/") == ["data/_journal/lock"]


def test_heartbeat_renews_the_lease_in_the_background(s3_bucket):
    storage = storage_of(s3_bucket)
    key = f"{storage.location.key('_journal/lock')}"
    lock = ObjectRunLock(storage.store, key, "beating", lease_seconds=0.3)
    try:
        first = storage.store.get(key)
        assert first is not None
        renewed = threading.Event()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not renewed.is_set():
            current = storage.store.get(key)
            if current is not None and json.loads(current.data)["renewals"] >= 2:
                renewed.set()
            else:
                renewed.wait(0.05)  # bounded wait for a condition, not a timing assumption
        assert renewed.is_set(), "the lease was never renewed"
        assert current is not None
        assert current.etag != first.etag
        lock.check()  # renewed, so still ours
    finally:
        lock.release()
    assert s3_bucket.keys("data/_journal/") == []


# -- the journal in the bucket ----------------------------------------------------------------
def test_journal_lines_are_objects_and_a_clean_end_leaves_none(s3_bucket):
    storage = storage_of(s3_bucket)
    journal = Journal(storage, "run1")
    table = pa.table({"log_id": ["l"], "sequence_number_str": ["1"]})
    writer = storage.part_writer("zstd", None)
    landed = writer.write(
        table, ("events",), lambda rel: journal.record("events", rel, EVENTS_KEYS, 0)
    )
    journal.record("events", "events/part-never-published.parquet", EVENTS_KEYS, 1)
    lines = [k for k in s3_bucket.keys("data/_journal/") if k.endswith(".jsonl")]
    assert [k.rsplit("/", 2)[-2:] for k in lines] == [
        ["0000000001-run1", f"{n:010d}.jsonl"] for n in range(3)
    ]  # the generation's base (the journal as read: empty), then one object per line
    journal.covered(1)  # STATE #1 emitted: the landed part's rows are covered
    journal.close()
    # The next run reads the journal: the landed part is covered; the other one never
    # published, but its upload may still land, so it stays until its stream's fence.
    assert journal_entries(s3_bucket) == []
    [waiting] = s3_bucket.journal_remembers()
    assert "part-never-published" in waiting
    fencing = Journal(storage_of(s3_bucket), "fencing")
    fencing.fence("events", table.schema)  # claimed: it can never land now
    fencing.close()
    assert s3_bucket.journal_remembers() == []
    assert s3_bucket.keys("data/events/part-never-published.parquet")  # the empty claim
    # A crashed run's entry whose part did land: its rows are replayed by the next run.
    crashed = Journal(storage_of(s3_bucket), "run2")
    crashed.record("events", str(landed.path).split("/data/", 1)[1], EVENTS_KEYS, 0)
    crashed.close()
    rerun = Journal(storage_of(s3_bucket), "run3")
    incoming = pa.table({"log_id": ["l", "l"], "sequence_number_str": ["1", "2"]})
    kept, dropped = rerun.drop_replayed("events", incoming, EVENTS_KEYS)
    assert (dropped, kept.column("sequence_number_str").to_pylist()) == (1, ["2"])
    rerun.finish(completed=True, all_covered=True)
    assert s3_bucket.journal_remembers() == []
    assert all(len(v) == 1 for v in s3_bucket.versions("data/_journal/0").values())


def test_a_covered_line_costs_no_request_and_rides_with_the_next_entry(s3_bucket, monkeypatch):
    """A STATE's ``covered`` line (appended on the reading thread, under the journal's lock)
    makes no PUT: it goes in the next part entry's object; ``close`` writes what is left."""
    storage = storage_of(s3_bucket)
    journal = Journal(storage, "run1")
    puts: list[str] = []
    real_put = type(storage.store).put_new

    def put_new(self, key, data):
        puts.append(key)
        return real_put(self, key, data)

    monkeypatch.setattr(type(storage.store), "put_new", put_new)

    def read(key: str) -> str:
        return s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read().decode()

    journal.record("events", "events/part-a.parquet", EVENTS_KEYS, 0)
    assert len(puts) == 2  # the generation's base, then the entry
    journal.covered(1)  # STATE #1 emitted: the first one also writes the stateful marker
    assert len(puts) == 3
    assert json.loads(read(puts[-1])) == {"stateful": True}  # synced: its own object
    journal.covered(1)  # nothing new to cover: no line at all
    journal.record("events", "events/part-b.parquet", EVENTS_KEYS, 1)
    assert len(puts) == 4  # the covered line made no request: it rode with part-b's entry
    covered, entry = read(puts[-1]).splitlines()
    assert json.loads(covered) == {"covered": 1, "run": "run1"}
    assert json.loads(entry)["part"] == "events/part-b.parquet"
    journal.covered(2)  # covers part-b: waits in memory
    written = len(puts)
    journal.close()  # a run that stops here (a failure on its input) still writes it
    assert len(puts) == written + 1
    assert json.loads(read(puts[-1])) == {"covered": 2, "run": "run1"}
    assert journal_entries(s3_bucket) == []  # the next run sees both parts covered


def test_a_covered_line_lost_in_a_crash_only_keeps_rows_a_little_longer(s3_bucket):
    """kill -9 after a STATE, before the next entry: its ``covered`` line is lost (crash point
    4 of journal.py): the part stays in the journal, and the next run drops only records
    that really are in it, writing the others."""
    storage = storage_of(s3_bucket)
    writer = storage.part_writer("zstd", None)
    crashed = Journal(storage, "run1")
    table = pa.table({"log_id": ["l"], "sequence_number_str": ["1"]})
    part = writer.write(
        table, ("events",), lambda rel: crashed.record("events", rel, EVENTS_KEYS, 0)
    )
    crashed.covered(1)  # the STATE went out; the process dies before anything else:
    crashed._log._unsynced.clear()  # what kill -9 loses (the bucket never saw it) ...
    crashed.close()  # ... and its lock is released here as a dead process's would be taken
    [entry] = journal_entries(s3_bucket)
    assert entry.part == str(part.path).split("/data/", 1)[1]
    rerun = Journal(storage_of(s3_bucket), "run2")
    incoming = pa.table({"log_id": ["l", "l"], "sequence_number_str": ["1", "2"]})
    kept, dropped = rerun.drop_replayed("events", incoming, EVENTS_KEYS)
    assert (dropped, kept.column("sequence_number_str").to_pylist()) == (1, ["2"])
    rerun.finish(completed=True, all_covered=True)
    assert s3_bucket.journal_remembers() == []


def test_journal_reads_the_newest_generation_with_a_base(s3_bucket):
    """A crash during a rewrite leaves older generations: the newest complete one wins."""
    storage = storage_of(s3_bucket)

    def put(name: str, text: str) -> None:
        s3_bucket.client.put_object(
            Bucket=s3_bucket.name, Key=f"data/_journal/{name}", Body=text.encode()
        )

    put("0000000001-a/0000000000.jsonl", "old base\n")
    put("0000000001-a/0000000001.jsonl", "old line\n")
    put("0000000002-b/0000000000.jsonl", "new base\n")
    put("0000000002-b/0000000001.jsonl", "new line 1\n")
    put("0000000002-b/0000000002.jsonl", "new line 2\n")
    put("0000000003-c/0000000001.jsonl", "no base: never a journal\n")
    log = storage.journal_log("d")
    assert log.read() == "new base\nnew line 1\nnew line 2\n"
    log.rewrite("compact\n")  # a new generation, then the older objects go
    assert s3_bucket.keys("data/_journal/") == ["data/_journal/0000000004-d/0000000000.jsonl"]
    assert storage.journal_log("e").read() == "compact\n"


def test_arrow_filesystem_reads_what_the_target_wrote(s3_bucket, monkeypatch):
    run_target(s3_bucket.uri(), (event_line for event_line in events_lines(5)), monkeypatch)
    fs, root = arrow_filesystem(s3_bucket.uri())
    assert isinstance(fs, pafs.S3FileSystem)
    assert root == f"{s3_bucket.name}/data"
    assert read_dataset(s3_bucket.uri()).num_rows == 5
    assert (
        event(0)["sequence_number_str"]
        in read_dataset(s3_bucket.uri()).column("sequence_number_str").to_pylist()
    )


# -- lost answers and broken lock objects -----------------------------------------------------
class _LoseFirstAnswers:
    """A lost 200: each PutObject request's first attempt per key is sent to the store (which
    applies it) and its answer thrown away, as a dropped connection would; botocore then
    retries the same conditional PUT and meets 412 (or a changed ETag)."""

    def __init__(self) -> None:
        self.lost: list[str] = []
        self._seen: set[str] = set()
        self._http = urllib3.PoolManager()

    def install(self, client) -> None:
        client.meta.events.register("before-send.s3.PutObject", self._before_send)

    def _before_send(self, request, **_):
        key = request.url.split("?", 1)[0]
        if key in self._seen:
            return  # the retry goes through
        self._seen.add(key)
        body = request.body if isinstance(request.body, bytes) else request.body.read()
        if hasattr(request.body, "seek"):
            request.body.seek(0)
        answer = self._http.request(
            request.method, request.url, body=body, headers=dict(request.headers), retries=False
        )
        assert answer.status == 200, answer.data[:300]  # the store applied it
        self.lost.append(key.rsplit("/", 1)[-1])
        raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)


@pytest.fixture
def lost_answers(monkeypatch):
    losing = _LoseFirstAnswers()
    real_init = objectstore.S3ObjectStore.__init__

    def init(self, location, **options):
        real_init(self, location, **options)
        losing.install(self._client)

    monkeypatch.setattr(objectstore.S3ObjectStore, "__init__", init)
    return losing


def test_a_put_whose_answer_was_lost_is_its_own_and_succeeds(s3_bucket, monkeypatch, lost_answers):
    """Parts, journal lines and the lock: the retry meets 412 on the object this very PUT
    wrote, which is success, not 'the part name is taken' nor 'in use by another process'."""
    uri = s3_bucket.uri()
    _, capture = run_target(
        uri, events_lines(250, state_every=100), monkeypatch, batch_size_rows=100
    )
    assert capture.states == [{"bookmarks": {"events": {"last": i}}} for i in (99, 199)]
    kinds = {
        name.split("-", 1)[0] if name.startswith("part-") else name for name in lost_answers.lost
    }
    assert "part" in kinds  # parts
    assert "lock" in kinds  # the lock's create
    assert any(name.endswith(".jsonl") for name in lost_answers.lost)  # journal lines
    table = read_dataset(uri)
    assert table.num_rows == len(set(table.column("sequence_number_str").to_pylist())) == 250
    assert all(len(v) == 1 for v in s3_bucket.versions("data/events/").values())


def test_a_lock_renewal_whose_answer_was_lost_keeps_the_lock(s3_bucket, lost_answers):
    storage = storage_of(s3_bucket)
    lock = storage.lock("renewing")
    try:
        assert lock.renew()  # the lost answer's retry met 412: our own swap
        assert lock.renew()
        lock.check()  # still ours
        holder = json.loads(
            s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="data/_journal/lock")[
                "Body"
            ].read()
        )
        assert holder["run"] == "renewing"
        assert holder["renewals"] == 2
    finally:
        lock.release()
    assert s3_bucket.keys("data/_journal/") == []  # released: deleted with its current ETag


def test_another_runs_object_is_still_refused_after_a_lost_answer(s3_bucket):
    """412 on an object this PUT did not write stays a refusal."""
    storage = storage_of(s3_bucket)
    store = storage.store
    store.put_new("data/x", b"first")
    with pytest.raises(objectstore.ObjectExistsError):
        store.put_new("data/x", b"second")
    with pytest.raises(objectstore.PreconditionError):
        store.put_if_match("data/x", b"third", '"not-its-etag"')


@pytest.mark.parametrize("lease", [float("nan"), float("inf"), 1e12, -5, 0, "soon", True, None])
def test_a_lock_with_a_broken_lease_is_read_with_the_default_and_never_hangs(
    s3_bucket, caplog, monkeypatch, lease
):
    """NaN hung the target forever; Infinity and 1e12 crashed it (timestamp out of range)."""
    monkeypatch.setattr(objectstore, "DEFAULT_LEASE_SECONDS", 0.0)  # ran out: take it over now
    body = json.dumps({"host": "elsewhere", "pid": 1, "run": "old", "lease_seconds": lease})
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="data/_journal/lock", Body=body.encode())
    lock = storage_of(s3_bucket).lock("rerun")
    lock.release()
    assert "broken lease_seconds" in caplog.text
    assert "took over the lock" in caplog.text


def test_a_store_that_never_answers_fails_the_request_instead_of_blocking(monkeypatch):
    """Accepts connections, answers nothing: every request has a deadline (here shortened)."""
    monkeypatch.setattr(objectstore, "_READ_TIMEOUT", 0.3)
    monkeypatch.setattr(objectstore, "_CONNECT_TIMEOUT", 0.3)
    monkeypatch.setattr(objectstore, "_ATTEMPTS", 2)
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        stop = threading.Event()

        def hold() -> None:
            server.settimeout(0.1)
            while not stop.is_set():
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    continue
                accepted.append(connection)  # kept open, never answered

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        port = server.getsockname()[1]
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        try:
            location = parse_location("s3://silent/data")
            assert location is not None
            store = objectstore.S3ObjectStore(location)
            with pytest.raises(objectstore.ObjectStoreError, match=r"PutObject .*silent/data/x"):
                store.put_new("data/x", b"payload")
        finally:
            stop.set()
            holder.join(timeout=10)
            for connection in accepted:
                connection.close()
    assert accepted  # the requests reached it, and each was cut at its deadline


# -- fencing: a part whose upload outlived its run's lock ---------------------------------------
LATE_PART = "events/part-20240101T000000000000Z-late.parquet"


def _events_part(rows: range) -> bytes:
    """A part as the target writes it for these events (its own Arrow schema and columns)."""
    schema = json.loads(schema_message())["schema"]
    table = build_table([event(i) for i in rows], stream_spec(schema))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _run_that_lost_its_lock(bucket) -> None:
    """Run A journaled a part and started its PUT; then it stalled past its lease (a VM pause,
    a proxy) and its lock was released to the next run. The upload has not landed yet."""
    stalled = Journal(storage_of(bucket), "stalled")
    stalled.record("events", LATE_PART, EVENTS_KEYS, 0, [[0, 100]])
    stalled.close()


def test_a_late_upload_after_the_next_run_fenced_its_name_fails_and_adds_nothing(
    s3_bucket, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    _run_that_lost_its_lock(s3_bucket)
    uri = s3_bucket.uri()
    _, capture = run_target(uri, events_lines(100, state_every=100), monkeypatch)
    assert capture.states == [{"bookmarks": {"events": {"last": 99}}}]
    assert "journal_fenced stream=events fenced=1 landed=0" in caplog.text
    # The stalled run's PUT finally arrives: refused (412), not another run's own object.
    store = storage_of(s3_bucket).store
    with pytest.raises(objectstore.ObjectExistsError):
        store.put_new(f"data/{LATE_PART}", _events_part(range(100)))
    table = read_dataset(uri)  # the fenced name holds a valid, empty part
    keys = table.column("sequence_number_str").to_pylist()
    assert len(keys) == len(set(keys)) == 100


def test_a_late_upload_that_landed_before_the_fence_is_replayed_not_written_twice(
    s3_bucket, caplog
):
    """It landed after this run read the journal, before the fence claimed its name."""
    caplog.set_level(logging.INFO)
    _run_that_lost_its_lock(s3_bucket)
    journal = Journal(storage_of(s3_bucket), "next")
    try:
        storage_of(s3_bucket).store.put_new(f"data/{LATE_PART}", _events_part(range(100)))
        spec = stream_spec(json.loads(schema_message())["schema"])
        journal.fence("events", spec.arrow_schema)
        assert "journal_fenced stream=events fenced=0 landed=1" in caplog.text
        incoming = build_table([event(i) for i in range(150)], spec)
        kept, dropped = journal.drop_replayed("events", incoming, EVENTS_KEYS)
        assert (dropped, kept.num_rows) == (100, 50)  # 0..99 are in the late part
    finally:
        journal.close()


def test_a_part_that_landed_before_the_next_run_started_is_an_ordinary_replay(
    s3_bucket, monkeypatch
):
    _run_that_lost_its_lock(s3_bucket)
    storage_of(s3_bucket).store.put_new(f"data/{LATE_PART}", _events_part(range(100)))
    uri = s3_bucket.uri()
    _, capture = run_target(uri, events_lines(150, state_every=150), monkeypatch)
    assert capture.states == [{"bookmarks": {"events": {"last": 149}}}]
    keys = read_dataset(uri).column("sequence_number_str").to_pylist()
    assert len(keys) == len(set(keys)) == 150  # 0..99 from the late part, 100..149 new


def test_an_unsettled_part_stays_journaled_until_its_stream_comes(s3_bucket, monkeypatch):
    """A run without that stream neither fences nor forgets it: it may still land."""
    _run_that_lost_its_lock(s3_bucket)
    logs = {"properties": {"id": {"type": "string"}}}
    lines = [schema_message("logs", logs, ["id"]), record_message({"id": "a"}, stream="logs")]
    run_target(s3_bucket.uri(), [*lines, state_message({"logs": 1})], monkeypatch)
    journal = Journal(storage_of(s3_bucket), "reader")
    try:
        assert [entry.part for entry in journal._unfenced] == [LATE_PART]
    finally:
        journal.close()


def test_the_lock_lease_is_the_setting_and_a_bad_one_is_refused_naming_it(s3_bucket, tmp_path):
    lock = storage_of(s3_bucket).lock("short", 5)
    try:
        body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="data/_journal/lock")
        assert json.loads(body["Body"].read())["lease_seconds"] == 5
    finally:
        lock.release()
    for bad in (0, -1, 2.9, 3601, float("inf")):
        with pytest.raises(ConfigValidationError) as raised:
            TargetParquetParts(config={"output_dir": s3_bucket.uri(), "lock_lease_seconds": bad})
        (error,) = raised.value.errors
        assert error.startswith("lock_lease_seconds: ")


@pytest.mark.parametrize("lease", [objectstore.MIN_LEASE_SECONDS, 6.0, 60.0, 3600.0])
def test_a_writers_requests_end_within_most_of_its_lease(lease):
    """Every attempt of one request, each cut at its connect and read deadlines, fits in 80% of
    the lease: a stalled request is abandoned before the lock could be lost to another run."""
    budget = 0.8 * lease
    connect, read = objectstore.request_timeouts(budget)
    assert 0 < connect <= objectstore._CONNECT_TIMEOUT
    assert 0 < read <= objectstore._READ_TIMEOUT
    assert objectstore._ATTEMPTS * (connect + read) <= budget + 1e-9
    assert objectstore.request_timeouts(None) == (
        objectstore._CONNECT_TIMEOUT,
        objectstore._READ_TIMEOUT,
    )


@pytest.mark.parametrize(
    "named", ["events/../../elsewhere/part-x.parquet", "events/data.csv", "/events/part-x.parquet"]
)
def test_a_journal_line_naming_no_part_is_never_claimed(s3_bucket, named):
    """A damaged or hostile journal cannot make the fence write outside the stream's parts."""
    stalled = Journal(storage_of(s3_bucket), "stalled")
    stalled.record("events", named, EVENTS_KEYS, 0, [[0, 1]])
    stalled.close()
    journal = Journal(storage_of(s3_bucket), "next")
    try:
        journal.fence("events", pa.schema([("log_id", pa.string())]))
    finally:
        journal.close()
    assert [key for key in s3_bucket.keys("data/") if not key.startswith("data/_journal/")] == []
    assert s3_bucket.journal_remembers() == []  # settled: dropped
