"""output_dir on Azure Blob Storage (``az://``), against Azurite (a real HTTP Blob API on loopback).

S3's guarantees, kept on Azure (``azure_store.py``): every part a new blob written once,
conditional creates (``If-None-Match: *``) and compare-and-swaps (``If-Match``) for parts,
journal lines and the lock, a lost answer taken for the success it was, one run per output_dir
(a second writer refused), exactly once across ``kill -9`` and SIGTERM loops, credentials from
the variables Azure users have (missing or wrong ones fail in seconds, naming what to set), a stop
signal obeyed during start-up, and reconcile reading the dataset.

What Azurite lacks and the real service has: blob versions (so "written once" is counted in
Azurite's request log, not as versions), Microsoft Entra ID tokens (only shared keys and SAS here),
and hierarchical-namespace (ADLS Gen2, ``abfs://``) accounts: those paths are not exercised here.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from target_parquet_parts import azure_store
from target_parquet_parts.azure_store import AzureObjectStore
from target_parquet_parts.lock import OutputDirInUseError
from target_parquet_parts.objectstore import (
    ObjectExistsError,
    ObjectStorage,
    ObjectStoreError,
    PreconditionError,
)
from target_parquet_parts.storage import open_storage, parse_location
from tests.azure_fixtures import ACCOUNT, AZURE_VARIABLES, connection_string
from tests.target.conftest import TARGET_BIN, run_target
from tests.target.singer_data import event, events_lines, schema_message, state_message
from tests.target.test_object_storage import (
    LATE_PART,
    _events_part,
    _run_that_lost_its_lock,
    journal_entries,
    read_dataset,
)
from tests.target.test_object_storage_crash import _lines, _send, _start
from tests.target.test_signals import _Output

# test_signals' SIGTERM/SIGINT loop (about 10 cancels aimed at flushes, each resumed from the last
# STATE), collected here too: with this module's ``output`` fixture it writes to Azurite.
from tests.target.test_signals import (  # noqa: F401
    test_signals_aimed_at_flushes_then_resume_lose_and_duplicate_nothing as test_signal_loop,
)


def storage_of(container) -> ObjectStorage:
    storage = open_storage(container.uri())
    assert isinstance(storage, ObjectStorage)
    assert isinstance(storage.store, AzureObjectStore)
    return storage


def _only_parts_each_written_once(container) -> dict[str, int]:
    """Only parts and the journal under the prefix; every part and journal blob written once."""
    for key in container.keys("data/"):
        relative = key.removeprefix("data/")
        assert relative.startswith(("events/part-", "_journal/")), key
        if relative.startswith("events/"):
            assert relative.endswith(".parquet"), key
    writes = container.writes("data/")
    parts = {k: n for k, n in writes.items() if k.startswith("data/events/")}
    assert set(container.keys("data/events/")) <= set(parts)  # every part is a logged write
    assert all(n == 1 for n in parts.values()), parts
    lines = {k: n for k, n in writes.items() if k.endswith(".jsonl")}
    assert all(n == 1 for n in lines.values()), lines
    return parts


# -- writing parts ------------------------------------------------------------------------
def test_parts_are_new_blobs_read_back_whole_and_never_overwritten(azure_container, monkeypatch):
    uri = azure_container.uri()
    _, capture = run_target(
        uri, events_lines(250, state_every=100), monkeypatch, batch_size_rows=100
    )
    assert capture.states == [{"bookmarks": {"events": {"last": i}}} for i in (99, 199)]
    table = read_dataset(uri)  # pyarrow's AzureFileSystem, endpoint from the connection string
    assert table.num_rows == len(set(table.column("sequence_number_str").to_pylist())) == 250
    parts = _only_parts_each_written_once(azure_container)
    assert len(parts) == 3  # three flushes of up to 100 rows, each blob written once
    # A clean end: the lock blob is gone; the journal keeps the part after the last STATE.
    [entry] = journal_entries(azure_container)
    assert entry.part.startswith("events/part-")
    assert all(key.endswith(".jsonl") for key in azure_container.keys("data/_journal/"))


def test_conditional_create_and_compare_and_swap_refuse_another_writers_blob(azure_container):
    store = storage_of(azure_container).store
    etag = store.put_new("data/events/part-x.parquet", b"first")
    with pytest.raises(ObjectExistsError):
        store.put_new("data/events/part-x.parquet", b"second")
    with pytest.raises(PreconditionError):
        store.put_if_match("data/events/part-x.parquet", b"third", '"0x0"')
    with pytest.raises(PreconditionError):
        store.put_if_match("data/events/part-missing.parquet", b"fourth", etag)
    store.delete_if_match("data/events/part-x.parquet", '"0x0"')  # not its ETag: kept
    assert azure_container.read("data/events/part-x.parquet") == b"first"
    assert azure_container.writes("data/events/") == {"data/events/part-x.parquet": 1}
    swapped = store.put_if_match("data/events/part-x.parquet", b"fifth", etag)
    found = store.get("data/events/part-x.parquet")
    assert found is not None
    assert (found.data, found.etag) == (b"fifth", swapped)
    assert abs((found.now - found.modified).total_seconds()) < 60  # the store's own clock
    store.delete_if_match("data/events/part-x.parquet", swapped)
    assert store.get("data/events/part-x.parquet") is None
    assert not store.exists("data/events/part-x.parquet")


# -- lost answers --------------------------------------------------------------------------
class _LoseFirstAnswers:
    """A lost 201: each blob's first PUT is sent to Azurite (which applies it) and its answer
    thrown away, as a dropped connection would; the SDK retries the same conditional PUT and
    meets 409 (If-None-Match) or 412 (If-Match)."""

    def __init__(self) -> None:
        self.lost: list[str] = []
        self._seen: set[str] = set()

    def transport(self, **timeouts):
        from azure.core.exceptions import ServiceResponseError
        from azure.core.pipeline.transport import RequestsTransport

        losing = self

        class Losing(RequestsTransport):
            def send(self, request, **kwargs):
                answer = super().send(request, **kwargs)
                key = request.url.split("?", 1)[0]
                if request.method == "PUT" and key not in losing._seen:
                    losing._seen.add(key)
                    assert answer.status_code == 201  # Azurite applied it
                    losing.lost.append(key.rsplit("/", 1)[-1])
                    raise ServiceResponseError("connection reset before the answer")
                return answer

        return Losing(**timeouts)


@pytest.fixture
def lost_answers(monkeypatch):
    import azure.storage.blob

    losing = _LoseFirstAnswers()
    real = azure.storage.blob.BlobServiceClient

    def client(*args, **kwargs):
        timeouts = {k: kwargs[k] for k in ("connection_timeout", "read_timeout")}
        return real(*args, transport=losing.transport(**timeouts), **kwargs)

    monkeypatch.setattr(azure.storage.blob, "BlobServiceClient", client)
    monkeypatch.setattr(azure_store, "_BACKOFF", 0.02)  # each retry comes at once
    return losing


def test_a_put_whose_answer_was_lost_is_its_own_and_succeeds(
    azure_container, monkeypatch, lost_answers
):
    """Parts, journal lines and the lock: the retry meets 409 on the blob this very PUT wrote
    (its put_id in the metadata), which is success, not 'the part name is taken' nor 'in use'."""
    uri = azure_container.uri()
    _, capture = run_target(
        uri, events_lines(250, state_every=100), monkeypatch, batch_size_rows=100
    )
    assert capture.states == [{"bookmarks": {"events": {"last": i}}} for i in (99, 199)]
    assert any(name.startswith("part-") for name in lost_answers.lost)
    assert "lock" in lost_answers.lost  # the lock's create
    assert any(name.endswith(".jsonl") for name in lost_answers.lost)  # journal lines
    table = read_dataset(uri)
    assert table.num_rows == len(set(table.column("sequence_number_str").to_pylist())) == 250
    _only_parts_each_written_once(azure_container)
    storage = storage_of(azure_container)
    lock = storage.lock("renewing")  # a renewal's lost answer: its retry meets 412, our own
    try:
        assert lock.renew()
        lock.check()
        holder = json.loads(azure_container.read("data/_journal/lock"))
        assert (holder["run"], holder["renewals"]) == ("renewing", 1)
    finally:
        lock.release()
    assert "lock" not in [k.rsplit("/", 1)[-1] for k in azure_container.keys("data/_journal/")]


def test_a_stalled_request_is_abandoned_within_its_budget(azure_container, monkeypatch):
    """An endpoint that accepts and never answers: the attempts end within the writer's budget
    (80% of its lease), naming the blob, instead of blocking the run past its lease."""
    hole = _BlackHole()
    try:
        endpoint = f"http://127.0.0.1:{hole.port}/{ACCOUNT}"
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(endpoint))
        location = parse_location(azure_container.uri())
        assert location is not None
        store = AzureObjectStore(location, request_budget_seconds=2.4)  # a 3 s lease
        began = time.monotonic()
        with pytest.raises(ObjectStoreError, match=r"Put Blob \(If-None-Match: \*\) of 'az://"):
            store.put_new("data/events/part-x.parquet", b"x")
        elapsed = time.monotonic() - began
    finally:
        hole.close()
    assert hole.accepted >= 2  # retried, within the budget
    assert elapsed < 2.4


def test_a_late_upload_after_the_next_run_fenced_its_name_fails_and_adds_nothing(
    azure_container, monkeypatch, caplog
):
    """A run that lost its lock journaled a part whose upload has not landed; the next run
    claims the name with an empty part (If-None-Match: *), so the late PUT is refused."""
    caplog.set_level(logging.INFO)
    _run_that_lost_its_lock(azure_container)
    uri = azure_container.uri()
    _, capture = run_target(uri, events_lines(100, state_every=100), monkeypatch)
    assert capture.states == [{"bookmarks": {"events": {"last": 99}}}]
    assert "journal_fenced stream=events fenced=1 landed=0" in caplog.text
    with pytest.raises(ObjectExistsError):
        storage_of(azure_container).store.put_new(f"data/{LATE_PART}", _events_part(range(100)))
    keys = read_dataset(uri).column("sequence_number_str").to_pylist()
    assert len(keys) == len(set(keys)) == 100


# -- the lock --------------------------------------------------------------------------------
def test_the_lock_is_exclusive_and_released(azure_container):
    first = storage_of(azure_container).lock("first")
    try:
        with pytest.raises(OutputDirInUseError, match="its process is running on this machine"):
            storage_of(azure_container).lock("second")
    finally:
        first.release()
    second = storage_of(azure_container).lock("second")  # released: free again
    second.release()
    assert azure_container.keys("data/_journal/") == []


def test_a_second_target_process_on_the_same_container_is_refused(azure_container, tmp_path):
    with _start(tmp_path, azure_container, "holder", batch_size_rows=10) as holder:
        assert holder.stdout is not None
        _send(holder, [schema_message(), *_lines(0, 10, 10)])
        assert holder.stdout.readline()  # the holder has its lock and wrote a part
        with _start(tmp_path, azure_container, "second") as second:
            second.communicate("\n".join([schema_message(), *_lines(0, 5, 5)]).encode() + b"\n")
        assert second.returncode != 0
        stderr = (tmp_path / "target-second.stderr").read_text()
        refused = f"in use by another target-parquet-parts process (pid {holder.pid}"
        assert refused in stderr
        print("second writer:", next(line for line in stderr.splitlines() if refused in line))
        holder.communicate(b"")
    assert holder.returncode == 0
    assert azure_container.journal_remembers() == []


# -- kill -9 and SIGTERM loops ---------------------------------------------------------------
KILL_SEED = 21
KILL_CYCLES = 6
KILL_TOTAL = 3000


@pytest.mark.e2e
def test_kill9_loop_then_rerun_is_exactly_once_on_azure(azure_container, tmp_path):
    """The real target killed -9 at seeded points (mid-parse, mid-flush, mid-PUT), each rerun
    resuming from the last STATE it emitted: no record lost or doubled, every blob written once,
    nothing but parts visible, the journal and lock gone after the clean final run."""
    rng = random.Random(KILL_SEED)
    resume = 0
    figures = []
    for cycle in range(KILL_CYCLES):
        batch = rng.choice([40, 64, 100, 150])
        state_every = rng.choice([30, 50, 75])
        with _start(
            tmp_path, azure_container, f"c{cycle}", batch_size_rows=batch,
            state_max_lag_seconds=3600,
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            try:
                first = resume + state_every + batch + rng.randint(0, batch)
                _send(proc, [schema_message(), *_lines(resume, first, state_every)])
                seen = proc.stdout.readline()  # one STATE is out: parts are landing now
                assert seen
                more = first + rng.randint(0, 2 * batch)
                _send(proc, _lines(first, min(more, KILL_TOTAL), state_every))
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                out = proc.stdout.read()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        emitted = [json.loads(line) for line in (seen + out).splitlines() if line.strip()]
        last = emitted[-1]["bookmarks"]["events"]["last"]
        figures.append((cycle, min(more, KILL_TOTAL), last))
        _only_parts_each_written_once(azure_container)
        resume = last + 1
    with _start(tmp_path, azure_container, "final", batch_size_rows=100) as proc:
        lines = [schema_message(), *_lines(resume, KILL_TOTAL, 50)]
        lines.append(state_message({"bookmarks": {"events": {"last": KILL_TOTAL - 1}}}))
        out, _ = proc.communicate("".join(line + "\n" for line in lines).encode())
    assert proc.returncode == 0, (tmp_path / "target-final.stderr").read_text()[-3000:]
    keys = read_dataset(azure_container.uri()).column("sequence_number_str").to_pylist()
    expected = {event(i)["sequence_number_str"] for i in range(KILL_TOTAL)}
    dropped = sum(
        int(line.rsplit("rows=", 1)[1])
        for path in tmp_path.glob("target-*.stderr")
        for line in path.read_text().splitlines()
        if "journal_duplicates_dropped" in line
    )
    print(
        f"kill -9 loop (azure): (cycle, sent to, last STATE) {figures}; records in {KILL_TOTAL}, "
        f"rows {len(keys)}, distinct {len(set(keys))}, replayed rows dropped {dropped}"
    )
    assert len(keys) == len(set(keys)) == KILL_TOTAL
    assert set(keys) == expected
    parts = _only_parts_each_written_once(azure_container)
    assert len(parts) == len(azure_container.keys("data/events/"))
    assert azure_container.journal_remembers() == []


@pytest.fixture
def output(azure_container, tmp_path: Path) -> _Output:
    """test_signals' cancel loops, writing to an Azurite container."""
    return _Output("azure", azure_container.uri(), azure_container.env, tmp_path / "runs", {})


# -- credentials and start-up ------------------------------------------------------------------
def _target(tmp_path: Path, env: dict[str, str], uri: str = "az://lake/data", **config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"output_dir": uri, **config}))
    clean = {k: v for k, v in os.environ.items() if k not in AZURE_VARIABLES}
    return subprocess.Popen(
        [TARGET_BIN, "--config", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**clean, **env},
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("env", "says"),
    [
        pytest.param({}, "no Azure storage account: set AZURE_STORAGE_CONNECTION_STRING, or "
                     "AZURE_STORAGE_ACCOUNT_NAME", id="nothing"),
        pytest.param({"AZURE_STORAGE_ACCOUNT_NAME": "lakeacct"}, "no Azure credentials: set "
                     "AZURE_STORAGE_CONNECTION_STRING", id="account-without-key"),
        pytest.param({"AZURE_STORAGE_CONNECTION_STRING": "AccountName=x"},
                     "AZURE_STORAGE_CONNECTION_STRING needs AccountName (or BlobEndpoint) and "
                     "AccountKey or SharedAccessSignature", id="connection-string-without-key"),
        # Azurite answers a bad signature with AuthorizationFailure, Azure AuthenticationFailed
        pytest.param("wrong-key", "Server failed to authenticate the request. Make sure the "
                     "value of the Authorization header is formed correctly including the "
                     "signature. (check the credentials: the AccountKey or SharedAccessSignature "
                     "in AZURE_STORAGE_CONNECTION_STRING", id="wrong-key"),
        pytest.param("closed-port", "is the endpoint right? (the account name, BlobEndpoint in "
                     "AZURE_STORAGE_CONNECTION_STRING)", id="nothing-listening"),
        pytest.param("no-container", "ContainerNotFound", id="no-container"),
    ],
)  # fmt: skip
def test_missing_or_wrong_credentials_fail_in_seconds_naming_what_to_set(
    azure_container, tmp_path, env, says
):
    uri = azure_container.uri()
    if env == "wrong-key":
        wrong = "A" * 86 + "=="  # well-formed, not the account's
        env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string(
            azure_container.azurite.endpoint, key=wrong)}  # fmt: skip
    elif env == "closed-port":
        endpoint = f"http://127.0.0.1:{_closed_port()}/{ACCOUNT}"
        env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string(endpoint)}
    elif env == "no-container":
        env, uri = azure_container.env, f"az://{azure_container.name}-gone/data"
    began = time.monotonic()
    proc = _target(tmp_path, env, uri)
    _, err = proc.communicate(f"{schema_message()}\n".encode(), timeout=60)
    elapsed = time.monotonic() - began
    lines = [line for line in err.decode().splitlines() if "METRIC" not in line]
    print(f"{elapsed:.1f} s: {lines[-1] if lines else ''}")
    assert proc.returncode == 1
    assert says in lines[-1], err.decode()[-3000:]
    assert "Traceback" not in err.decode()
    assert "Request URL" not in err.decode()  # not the Azure SDK's line per request
    assert elapsed < 15  # seconds, not the lease (48 s) or a hang


class _BlackHole:
    """A loopback server that accepts connections and never answers (a stalled endpoint)."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.connected = threading.Event()
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1
            self.connected.set()

    def close(self) -> None:
        self._server.close()
        for conn in self._held:
            conn.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_start_up_stops_the_run_at_once(tmp_path, signum):
    """The endpoint accepts the lock's PUT and never answers (each attempt would wait its
    read timeout, all of them most of the 60 s lease): the signal ends the run at once."""
    hole = _BlackHole()
    try:
        endpoint = f"http://127.0.0.1:{hole.port}/{ACCOUNT}"
        env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string(endpoint)}
        proc = _target(tmp_path, env)
        assert proc.stdin is not None
        proc.stdin.write(f"{schema_message()}\n".encode())
        proc.stdin.flush()
        assert hole.connected.wait(60)  # the lock's create is in flight
        began = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - began
    finally:
        hole.close()
    text = err.decode()
    print(f"stopped {elapsed:.2f} s after {signal.Signals(signum).name}")
    assert proc.returncode == 128 + signum, text[-2000:]
    assert (
        f"target_stopped_by_signal signal={signal.Signals(signum).name} "
        f"exit_code={128 + signum} during=start-up" in text
    )
    assert "stopped while creating 'az://lake/data/_journal/lock'" in text
    assert "Traceback" not in text
    assert elapsed < 5


# -- reconcile -------------------------------------------------------------------------------
def test_reconcile_reads_a_dataset_on_azure(azure_container, tmp_path, monkeypatch, capsys):
    from pipeline_tools.reconcile import cli as reconcile_cli
    from tests.reconcile.test_reconcile_s3 import _cli

    events = [event(i) for i in range(300)]
    uri = azure_container.uri()
    run_target(uri, events_lines(300), monkeypatch, batch_size_rows=100)
    args = _cli(tmp_path, monkeypatch, events, uri)
    assert reconcile_cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"dataset {uri} (stream events, 3 parts)" in out
    assert "OK: every window matches" in out
    # A part uploaded twice under another name (another pipeline on the same prefix): named.
    first = azure_container.keys("data/events/")[0]
    copy = first.replace("part-", "part-copy-")
    azure_container.client.upload_blob(copy, azure_container.read(first))
    assert reconcile_cli.main([*args, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["totals"]["duplicates"] == 100
