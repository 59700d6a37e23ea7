"""output_dir gs://: the guarantees of S3, against fake-gcs-server (tests/gcs_fixtures.py).

Parts, journal lines and the lock are uploaded with ``ifGenerationMatch=0`` (a conditional
create), the lease renewed with ``ifGenerationMatch=<generation>``; a lost answer is not a
refusal; a run without credentials fails in seconds naming what to set; kill -9 and SIGTERM
loops resume from the last STATE exactly once; reconcile reads the dataset.

What the emulator lacks and so is not checked here (docs/runbook.md, "GCS"): ``ifGenerationMatch``
on a delete (fake-gcs-server deletes anyway; GCS answers 412, and the lock's release relies on
it only to leave another run's lock alone), noncurrent versions (each key's generation is
compared instead), IAM (401/403 answers) and the metadata server of GCE.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import requests

from target_parquet_parts.gcs_store import GcsObjectStore
from target_parquet_parts.lock import OutputDirInUseError
from target_parquet_parts.objectstore import (
    LockLostError,
    ObjectExistsError,
    ObjectRunLock,
    ObjectStoreError,
    PreconditionError,
)
from tests.gcs_fixtures import GOOGLE_VARIABLES
from tests.reconcile.test_reconcile_s3 import _cli as reconcile_args
from tests.target.conftest import TARGET_BIN, run_target
from tests.target.cycles import dataset_indexes, run_cycle
from tests.target.singer_data import event, events_lines, schema_message, state_message
from tests.target.test_object_storage import (
    LATE_PART,
    _events_part,
    _run_that_lost_its_lock,
    journal_entries,
    read_dataset,
    storage_of,
)
from tests.target.test_object_storage_crash import _lines, _send, _start
from tests.target.test_signals import _stop_at_flush, _stop_when_quiet


def _unchanged(bucket, seen: dict[str, int]) -> None:
    """Only parts and the journal under the prefix; every part seen before is still there with
    the generation it was created with (an overwrite or a delete would show)."""
    now = bucket.generations("data/")
    for key in now:
        relative = key.removeprefix("data/")
        assert relative.startswith(("events/part-", "_journal/")), key
        if relative.startswith("events/"):
            assert relative.endswith(".parquet"), key
    for key, generation in seen.items():
        assert now.get(key) == generation, f"{key} was rewritten or deleted"
    seen.update({k: g for k, g in now.items() if k.startswith("data/events/")})


# -- writing parts --------------------------------------------------------------------------
def test_parts_are_new_objects_read_back_whole_and_never_overwritten(gcs_bucket, monkeypatch):
    uri = gcs_bucket.uri()
    storage = storage_of(gcs_bucket)
    assert isinstance(storage.store, GcsObjectStore)
    assert storage.store.conditional
    _, capture = run_target(
        uri, events_lines(250, state_every=100), monkeypatch, batch_size_rows=100
    )
    assert capture.states == [{"bookmarks": {"events": {"last": i}}} for i in (99, 199)]
    table = read_dataset(uri)  # pyarrow's GcsFileSystem on the emulator (readers, reconcile)
    assert table.num_rows == len(set(table.column("sequence_number_str").to_pylist())) == 250
    seen: dict[str, int] = {}
    _unchanged(gcs_bucket, seen)
    assert len(seen) == 3  # three flushes of up to 100 rows
    [entry] = journal_entries(gcs_bucket)  # records 200..249: no STATE after them
    assert entry.part.startswith("events/part-")
    # the orchestrator resumes from STATE 199: the replayed rows are dropped, no part rewritten
    run_target(uri, events_lines(100, start=200, state_every=50), monkeypatch, batch_size_rows=100)
    _unchanged(gcs_bucket, seen)
    keys = read_dataset(uri).column("sequence_number_str").to_pylist()
    assert len(keys) == len(set(keys)) == 300
    assert gcs_bucket.journal_remembers() == []


def test_conditional_create_and_swap_are_the_stores_own(gcs_bucket):
    """ifGenerationMatch=0 refuses an existing name; ifGenerationMatch=<g> a changed one."""
    store = storage_of(gcs_bucket).store
    first = store.put_new("data/events/part-x.parquet", b"first")
    with pytest.raises(ObjectExistsError):
        store.put_new("data/events/part-x.parquet", b"second")
    assert gcs_bucket.read("data/events/part-x.parquet") == b"first"
    assert gcs_bucket.generations("data/events/") == {"data/events/part-x.parquet": int(first)}
    with pytest.raises(PreconditionError):
        store.put_if_match("data/events/part-x.parquet", b"third", str(int(first) + 1))
    with pytest.raises(PreconditionError):
        store.put_if_match("data/missing", b"third", first)
    swapped = store.put_if_match("data/events/part-x.parquet", b"fourth", first)
    assert swapped != first
    found = store.get("data/events/part-x.parquet")
    assert found is not None
    assert (found.data, found.etag) == (b"fourth", swapped)
    assert abs((found.now - found.modified).total_seconds()) < 60  # the store's clock
    assert store.get("data/missing") is None
    assert not store.exists("data/missing")
    assert store.list_keys("data/") == ["data/events/part-x.parquet"]
    store.delete_if_match("data/events/part-x.parquet", swapped)
    store.delete(["data/events/part-x.parquet", "data/missing"])  # missing ones are fine
    assert store.list_keys("data/") == []


def test_missing_bucket_is_named_in_the_error(gcs_bucket, monkeypatch):
    uri = f"gs://{gcs_bucket.name}-missing/data"
    with pytest.raises(ObjectStoreError, match=r"output_dir .*404.*never creates buckets"):
        run_target(uri, events_lines(3), monkeypatch)


# -- lost answers ---------------------------------------------------------------------------
class _LoseFirstAnswers:
    """A lost 200: on each thread, every other upload is sent to the store (which applies it)
    and its answer thrown away, as a dropped connection would; the store's retry of the same
    conditional upload then meets 412 on the object it wrote itself."""

    def __init__(self) -> None:
        self.lost: list[str] = []
        self._turn = threading.local()

    def install(self, session) -> None:
        real = session.request

        def request(method, url, *args, **kwargs):
            if method != "POST" or "/upload/" not in url:
                return real(method, url, *args, **kwargs)
            losing = not getattr(self._turn, "lost_last", False)
            self._turn.lost_last = losing
            answer = real(method, url, *args, **kwargs)
            if not losing:
                return answer
            assert answer.status_code == 200, answer.text[:300]  # the store applied it
            body = kwargs.get("data") or b""
            name = re.search(rb'"name": ?"([^"]+)"', body)
            self.lost.append(name[1].decode().rsplit("/", 1)[-1] if name else url)
            raise requests.exceptions.ConnectionError("the answer was lost")

        session.request = request


@pytest.fixture
def lost_answers(monkeypatch):
    losing = _LoseFirstAnswers()
    real_init = GcsObjectStore.__init__

    def init(self, location, **options):
        real_init(self, location, **options)
        losing.install(self._session)

    monkeypatch.setattr(GcsObjectStore, "__init__", init)
    return losing


def test_a_put_whose_answer_was_lost_is_its_own_and_succeeds(gcs_bucket, monkeypatch, lost_answers):
    """Parts, journal lines and the lock: the retry meets 412 on the object this very upload
    wrote, which is success, not 'the part name is taken' nor 'in use by another process'."""
    uri = gcs_bucket.uri()
    _, capture = run_target(
        uri, events_lines(250, state_every=100), monkeypatch, batch_size_rows=100
    )
    assert capture.states == [{"bookmarks": {"events": {"last": i}}} for i in (99, 199)]
    kinds = {name.split("-", 1)[0] for name in lost_answers.lost}
    assert {"part", "lock"} <= kinds
    assert any(name.endswith(".jsonl") for name in lost_answers.lost)  # journal lines
    table = read_dataset(uri)
    assert table.num_rows == len(set(table.column("sequence_number_str").to_pylist())) == 250


def test_a_lock_renewal_whose_answer_was_lost_keeps_the_lock(gcs_bucket, lost_answers):
    storage = storage_of(gcs_bucket)
    lock = storage.lock("renewing")
    try:
        assert lock.renew()
        assert lock.renew()
        lock.check()
        holder = json.loads(gcs_bucket.read("data/_journal/lock"))
        assert (holder["run"], holder["renewals"]) == ("renewing", 2)
    finally:
        lock.release()
    assert "lock" in lost_answers.lost
    assert gcs_bucket.keys("data/_journal/") == []


# -- the lock -------------------------------------------------------------------------------
def test_lock_is_exclusive_renewed_and_lost_to_a_takeover(gcs_bucket):
    storage = storage_of(gcs_bucket)
    lock = storage.lock("first")
    assert isinstance(lock, ObjectRunLock)
    try:
        with pytest.raises(OutputDirInUseError, match=r"in use .* run first.*this machine"):
            storage_of(gcs_bucket).lock("second")
        assert lock.renew()  # compare-and-swap on its own generation
        gcs_bucket.put("data/_journal/lock", b'{"run": "taker"}')  # another run took it over
        assert not lock.renew()
        with pytest.raises(LockLostError, match="no longer holds its lock"):
            lock.check()
        with pytest.raises(LockLostError):
            storage.part_writer("zstd", None).write(pa.table({"k": ["a"]}), ("events",))
    finally:
        lock.release()
    assert gcs_bucket.keys("data/_journal/") == ["data/_journal/lock"]  # not its lock any more
    assert gcs_bucket.keys("data/events/") == []


def test_second_process_on_the_same_prefix_is_refused(gcs_bucket, tmp_path):
    with _start(tmp_path, gcs_bucket, "holder", batch_size_rows=10) as holder:
        assert holder.stdout is not None
        _send(holder, [schema_message(), *_lines(0, 10, 10)])
        assert holder.stdout.readline()  # the holder has its lock and wrote a part
        with _start(tmp_path, gcs_bucket, "second") as second:
            second.communicate("\n".join([schema_message(), *_lines(0, 5, 5)]).encode() + b"\n")
        assert second.returncode != 0
        stderr = (tmp_path / "target-second.stderr").read_text()
        refused = f"in use by another target-parquet-parts process (pid {holder.pid}"
        assert refused in stderr
        print("second writer:", next(line for line in stderr.splitlines() if refused in line))
        holder.communicate(b"")
    assert holder.returncode == 0
    assert gcs_bucket.journal_remembers() == []


def test_a_late_upload_after_the_next_run_fenced_its_name_fails(gcs_bucket, monkeypatch):
    _run_that_lost_its_lock(gcs_bucket)
    _, capture = run_target(gcs_bucket.uri(), events_lines(100, state_every=100), monkeypatch)
    assert capture.states == [{"bookmarks": {"events": {"last": 99}}}]
    with pytest.raises(ObjectExistsError):  # the stalled run's upload finally arrives
        storage_of(gcs_bucket).store.put_new(f"data/{LATE_PART}", _events_part(range(100)))
    keys = read_dataset(gcs_bucket.uri()).column("sequence_number_str").to_pylist()
    assert len(keys) == len(set(keys)) == 100


# -- crashes and cancels --------------------------------------------------------------------
@pytest.mark.e2e
def test_kill9_loop_then_rerun_is_exactly_once_on_gcs(gcs_bucket, tmp_path):
    rng = random.Random(21)
    total, resume, seen, figures = 3000, 0, {}, []
    for cycle in range(6):
        batch = rng.choice([40, 64, 100, 150])
        state_every = rng.choice([30, 50, 75])
        with _start(
            tmp_path, gcs_bucket, f"c{cycle}", batch_size_rows=batch, state_max_lag_seconds=3600
        ) as proc:
            assert proc.stdout is not None
            try:
                first = resume + state_every + batch + rng.randint(0, batch)
                _send(proc, [schema_message(), *_lines(resume, first, state_every)])
                seen_line = proc.stdout.readline()  # one STATE is out: parts are landing now
                assert seen_line
                more = first + rng.randint(0, 2 * batch)
                _send(proc, _lines(first, min(more, total), state_every))
            finally:
                os.kill(proc.pid, signal.SIGKILL)  # mid-parse, mid-flush or mid-upload
                out = proc.stdout.read()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        emitted = [json.loads(line) for line in (seen_line + out).splitlines() if line.strip()]
        resume = emitted[-1]["bookmarks"]["events"]["last"] + 1
        figures.append(resume)
        _unchanged(gcs_bucket, seen)
    with _start(tmp_path, gcs_bucket, "final", batch_size_rows=100) as proc:
        lines = [schema_message(), *_lines(resume, total, 50)]
        lines.append(state_message({"bookmarks": {"events": {"last": total - 1}}}))
        proc.communicate("".join(line + "\n" for line in lines).encode())
    assert proc.returncode == 0, (tmp_path / "target-final.stderr").read_text()[-3000:]
    keys = read_dataset(gcs_bucket.uri()).column("sequence_number_str").to_pylist()
    assert len(keys) == len(set(keys)) == total
    assert set(keys) == {event(i)["sequence_number_str"] for i in range(total)}
    _unchanged(gcs_bucket, seen)
    print(
        f"kill -9 loop on gcs: resumes {figures}; records in {total}, rows {len(keys)}, "
        f"distinct {len(set(keys))}, parts {len(seen)}"
    )
    assert gcs_bucket.journal_remembers() == []  # clean end: entries covered, lock released


@pytest.mark.e2e
def test_sigterm_loop_resumes_from_the_last_state_exactly_once_on_gcs(gcs_bucket, tmp_path):
    """Cancels during flushes (a full batch's, or the idle watcher's while the tap is quiet),
    each run resumed from the last STATE any run wrote."""
    rng = random.Random(2121)
    total = 6000
    config = {"output_dir": gcs_bucket.uri(), "batch_size_rows": 400, "state_max_lag_seconds": 0.3}
    position, figures = 0, []
    for number in range(6):
        signum = rng.choice([signal.SIGTERM, signal.SIGINT])
        quiet = number % 3 == 2
        cycle = run_cycle(
            tmp_path,
            start=position,
            total=total,
            state_every=50,
            config=config,
            trigger=_stop_when_quiet if quiet else _stop_at_flush(rng.randint(1, 3)),
            action=lambda proc, signum=signum: proc.send_signal(signum),
            pause_after=rng.randint(30, 380) if quiet else None,
            env=gcs_bucket.env,
        )
        assert cycle.triggered, f"cycle {number}: the input ended before the stop"
        assert cycle.returncode == 128 + signum, "\n".join(cycle.stderr[-20:])
        position = cycle.resume_from if cycle.resume_from is not None else position
        on_store = dataset_indexes(gcs_bucket.uri())
        assert len(on_store) == len(set(on_store)), f"cycle {number}: duplicates"
        assert set(range(position)) <= set(on_store), f"cycle {number}: STATE ahead of the data"
        figures.append((signal.Signals(signum).name, position))
    final = run_cycle(
        tmp_path, start=position, total=total, state_every=50, config=config,
        trigger=lambda cycle, kind, line: False, action=lambda proc: None, env=gcs_bucket.env,
    )  # fmt: skip
    assert final.returncode == 0, "\n".join(final.stderr[-20:])
    on_store = dataset_indexes(gcs_bucket.uri())
    print(
        f"signal loop on gcs: {figures}; records in {total}, rows {len(on_store)}, "
        f"distinct {len(set(on_store))}"
    )
    assert len(on_store) == len(set(on_store)) == total
    assert set(on_store) == set(range(total))


# -- credentials and start-up ---------------------------------------------------------------
def _bare_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This machine's environment less every Google variable, with a HOME that holds no
    gcloud configuration (no application-default credentials)."""
    env = {k: v for k, v in os.environ.items() if k not in GOOGLE_VARIABLES}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "CLOUDSDK_CONFIG": str(home / "gcloud"), **extra}


def _run_cli(tmp_path: Path, env: dict[str, str], **config) -> tuple[subprocess.Popen, Path]:
    config_path = tmp_path / "target.json"
    config_path.write_text(json.dumps({"output_dir": "gs://lake/data", **config}))
    stderr_path = tmp_path / "target.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [TARGET_BIN, "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    return proc, stderr_path


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        ({}, "no Google Cloud credentials found: set GOOGLE_APPLICATION_CREDENTIALS"),
        (
            {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json"},
            "GOOGLE_APPLICATION_CREDENTIALS='/nonexistent/key.json' is not a usable",
        ),
    ],
    ids=["none", "missing-key-file"],
)
def test_missing_credentials_fail_in_seconds_naming_what_to_set(tmp_path, variables, says):
    """The issue's hang (>1000 s, deaf to SIGTERM): now one line within seconds."""
    proc, stderr_path = _run_cli(tmp_path, _bare_environment(tmp_path, **variables))
    begun = time.monotonic()
    with proc:
        out, _ = proc.communicate(
            "".join(f"{line}\n" for line in events_lines(3)).encode(), timeout=60
        )
    took = time.monotonic() - begun
    stderr = stderr_path.read_text()
    print(f"missing credentials ({variables or 'none'}): exit {proc.returncode} in {took:.1f} s")
    assert proc.returncode == 1, stderr[-2000:]
    assert took < 20
    assert out == b""
    [line] = [line for line in stderr.splitlines() if says in line]
    print(line)
    assert "output_dir 'gs://lake/data'" in line
    assert "Traceback" not in stderr


class _RefusingTokenEndpoint:
    """An OAuth token endpoint on loopback that refuses every key (a revoked or wrong key)."""

    def __init__(self) -> None:
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = b'{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}'
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


def test_a_refused_key_fails_in_seconds_naming_the_variable(tmp_path):
    """A service-account key file whose key the token endpoint refuses (here one on loopback,
    named by the file's token_uri): one line naming GOOGLE_APPLICATION_CREDENTIALS, no retry."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with _RefusingTokenEndpoint() as token_uri:
        key_file = tmp_path / "key.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "test",
                    "private_key_id": "0",
                    "private_key": pem,
                    "client_email": "writer@test.iam.gserviceaccount.com",
                    "client_id": "1",
                    "token_uri": token_uri,
                }
            )
        )
        env = _bare_environment(tmp_path, GOOGLE_APPLICATION_CREDENTIALS=str(key_file))
        proc, stderr_path = _run_cli(tmp_path, env)
        begun = time.monotonic()
        with proc:
            proc.communicate("".join(f"{line}\n" for line in events_lines(3)).encode(), timeout=60)
        took = time.monotonic() - begun
    stderr = stderr_path.read_text()
    print(f"refused key: exit {proc.returncode} in {took:.1f} s")
    assert proc.returncode == 1, stderr[-2000:]
    assert took < 20
    [line] = [line for line in stderr.splitlines() if "could not get an access token" in line]
    print(line)
    assert "check GOOGLE_APPLICATION_CREDENTIALS" in line
    assert "Traceback" not in stderr


class _SilentStore:
    """Accepts connections on loopback and never answers (a store or proxy that hangs)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.accepted = threading.Event()
        self._connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _hold(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            self._connections.append(connection)
            self.accepted.set()

    def __enter__(self) -> _SilentStore:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for connection in self._connections:
            connection.close()
        self.server.close()


def _stop_a_hung_start_up(tmp_path: Path, lease: int, *, again: bool) -> tuple[int, float, str]:
    """Start a run whose store accepts connections and never answers; once its lock's upload
    waits for an answer, SIGTERM it (``again``: repeatedly, as a user pressing Ctrl-C again:
    signals sent before the first was handled merge into one). Exit code, seconds, stderr."""
    with _SilentStore() as silent:
        env = _bare_environment(tmp_path, STORAGE_EMULATOR_HOST=silent.url)
        proc, stderr_path = _run_cli(tmp_path, env, lock_lease_seconds=lease)
        with proc:
            assert proc.stdin is not None
            proc.stdin.write("".join(f"{line}\n" for line in events_lines(3)).encode())
            proc.stdin.flush()
            assert silent.accepted.wait(60)  # the lock's upload is waiting for an answer
            begun = time.monotonic()
            try:
                while True:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        code = proc.wait(timeout=0.5 if again else 30)
                        break
                    except subprocess.TimeoutExpired:
                        if not again or time.monotonic() - begun > 30:
                            raise
            finally:
                if proc.poll() is None:
                    proc.kill()
            took = time.monotonic() - begun
    return code, took, stderr_path.read_text()


def test_sigterm_during_a_hung_start_up_stops_it_within_the_request_deadline(tmp_path):
    """Start-up stuck on a store that never answers: one SIGTERM, and the run ends within its
    request deadline (80% of the 6 s lease), the failed request named in one line."""
    code, took, stderr = _stop_a_hung_start_up(tmp_path, 6, again=False)
    print(f"SIGTERM during a hung start-up (lease 6 s): exit {code} in {took:.1f} s")
    assert code in (1, 128 + signal.SIGTERM), stderr[-2000:]
    assert took < 0.8 * 6 + 3
    if code == 1:
        assert "STORAGE_EMULATOR_HOST" in stderr  # the request failed naming the endpoint
    assert "Traceback" not in stderr


def test_sigterm_again_during_a_hung_start_up_stops_it_at_once(tmp_path):
    """The same with the default-like 60 s lease (48 s of deadline): the second SIGTERM stops
    the run at once, as Ctrl-C twice does."""
    code, took, stderr = _stop_a_hung_start_up(tmp_path, 60, again=True)
    print(f"SIGTERM twice during a hung start-up (lease 60 s): exit {code} in {took:.1f} s")
    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    assert took < 10
    assert "target_stopped_by_signal signal=SIGTERM at_once=true" in stderr


# -- readers --------------------------------------------------------------------------------
def test_reconcile_reads_a_dataset_on_gcs(gcs_bucket, tmp_path, monkeypatch, capsys):
    from pipeline_tools.reconcile import cli as reconcile_cli

    events = [event(i) for i in range(300)]
    run_target(gcs_bucket.uri(), events_lines(300), monkeypatch, batch_size_rows=100)
    args = reconcile_args(tmp_path, monkeypatch, events, gcs_bucket.uri())
    assert reconcile_cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"dataset {gcs_bucket.uri()} (stream events, 3 parts)" in out
    assert "OK: every window matches" in out
    # A part uploaded twice under another name (another pipeline on the same prefix): named.
    [first, *_] = gcs_bucket.keys("data/events/")
    gcs_bucket.put(first.replace("part-", "part-copy-"), gcs_bucket.read(first))
    assert reconcile_cli.main([*args, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["totals"]["duplicates"] == 100
