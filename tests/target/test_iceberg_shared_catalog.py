"""A shared Iceberg catalog across machines: a PostgreSQL SQL catalog, an S3 warehouse.

Three real ``target-parquet-parts`` processes share no disk (each runs in its own folder, with
its own config, input, output and TMPDIR; nothing is written beside them), only the catalog on
a real PostgreSQL server (tests/postgres_fixtures.py) and the warehouse on S3 (moto,
tests/s3_fixtures.py). Each gets a disjoint slice of the records; one SIGKILLs itself mid-run
(the target's test hook, right after its third commit was accepted and before its STATE went
out) and is rerun from its last STATE as soon as it died. The table is then
read by pyiceberg and by DuckDB's own Iceberg reader (``iceberg_scan`` on the metadata file the
catalog names, the extensions loaded from the ``duckdb-extension-*`` packages: no network).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from target_parquet_parts import iceberg
from target_parquet_parts.iceberg import (
    POSTGRES_CONNECT_TIMEOUT_SECONDS,
    describe_catalog,
    load_iceberg_catalog,
)
from target_parquet_parts.settings import TargetSettings
from tests.postgres_fixtures import PostgresDatabase
from tests.s3_fixtures import S3Bucket
from tests.target.conftest import TARGET_BIN
from tests.target.singer_data import event, record_message, schema_message, state_message

pytestmark = pytest.mark.e2e

KILL_ENV = "TARGET_PARQUET_PARTS_TEST_KILL"
WRITERS = 3
PER_WRITER = 3000
BATCH = 500  # rows per commit, one STATE per batch
KILLED = 1  # the writer that is killed
KILL_AT = "after_commit:3"  # its 3rd commit is in the catalog, its STATE never went out
WAIT_SECONDS = 120
DUCKDB_EXTENSIONS = ("httpfs", "avro", "iceberg")  # iceberg needs the other two


def writer_lines(writer: int, start: int, stop: int) -> list[str]:
    """Writer ``writer``'s records ``start..stop-1`` (global indices), a STATE every batch."""
    log_id = f"log-{writer}"
    lines = [schema_message()]
    for i in range(start, stop):
        lines.append(record_message(event(i, log_id=log_id)))
        if (i + 1) % BATCH == 0 or i + 1 == stop:
            lines.append(state_message({"bookmarks": {"events": {"last": i}}}))
    return lines


def expected_keys() -> list[tuple[str, str]]:
    return sorted(
        (f"log-{w}", event(i, log_id=f"log-{w}")["sequence_number_str"])
        for w in range(WRITERS)
        for i in range(w * PER_WRITER, (w + 1) * PER_WRITER)
    )


def catalog_properties(database: PostgresDatabase, bucket: S3Bucket) -> dict[str, str]:
    """The ``iceberg_catalog`` every writer and reader uses: PostgreSQL, S3 warehouse."""
    return {
        "type": "sql",
        "uri": database.url,
        "warehouse": bucket.uri("lake"),
        "s3.endpoint": bucket.endpoint,
        "s3.access-key-id": bucket.env["AWS_ACCESS_KEY_ID"],
        "s3.secret-access-key": bucket.env["AWS_SECRET_ACCESS_KEY"],
        "s3.region": bucket.env["AWS_REGION"],
    }


class Writer:
    """One target process in its own folder (its "machine")."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
        self.runs = 0

    def start(self, lines: list[str], kill: str | None = None) -> subprocess.Popen[bytes]:
        self.runs += 1
        run = self.folder / f"run{self.runs}"
        (run.with_suffix(".in")).write_text("".join(line + "\n" for line in lines))
        env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
        env["TMPDIR"] = str(self.folder)
        if kill:
            env[KILL_ENV] = kill
        with (
            run.with_suffix(".in").open("rb") as stdin,
            run.with_suffix(".out").open("wb") as stdout,
            run.with_suffix(".err").open("wb") as stderr,
        ):
            return subprocess.Popen(
                [TARGET_BIN, "--config", "config.json"],
                cwd=self.folder,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=env,
            )

    def states(self, run: int) -> list[Any]:
        text = (self.folder / f"run{run}.out").read_text()
        return [json.loads(line) for line in text.splitlines() if line]

    def stderr(self, run: int) -> str:
        return (self.folder / f"run{run}.err").read_text()


def load_duckdb_extensions(con: duckdb.DuckDBPyConnection) -> None:
    """LOAD httpfs, avro and iceberg from their ``duckdb-extension-*`` packages (offline)."""
    for name in DUCKDB_EXTENSIONS:
        package = importlib.import_module(f"duckdb_extension_{name}")
        [path] = Path(package.__file__ or "").parent.glob(f"extensions/*/{name}.duckdb_extension")
        con.execute(f"LOAD '{path}'")


def duckdb_iceberg_rows(metadata_location: str, bucket: S3Bucket) -> list[tuple[str, str]]:
    """(log_id, sequence_number_str) of every row, by DuckDB's iceberg_scan over S3 (moto)."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,  # nothing downloaded, nothing loaded by itself
        "autoload_known_extensions": False,
    }
    with duckdb.connect(config=config) as con:
        load_duckdb_extensions(con)
        endpoint = bucket.endpoint.removeprefix("http://")
        env = bucket.env
        con.execute(
            f"CREATE SECRET moto (TYPE s3, KEY_ID '{env['AWS_ACCESS_KEY_ID']}', "
            f"SECRET '{env['AWS_SECRET_ACCESS_KEY']}', REGION '{env['AWS_REGION']}', "
            f"ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)"
        )
        rows = con.execute(
            "select log_id, sequence_number_str from iceberg_scan(?)", [metadata_location]
        ).fetchall()
    return sorted((str(a), str(b)) for a, b in rows)


def wait(proc: subprocess.Popen[bytes], deadline: float) -> int:
    return proc.wait(timeout=max(deadline - time.monotonic(), 1))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process a test starts; killed if still running when the test ends."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_three_writers_sharing_only_a_postgres_catalog_and_s3(
    tmp_path, postgres_database, s3_bucket, processes
):
    began = time.monotonic()
    catalog = catalog_properties(postgres_database, s3_bucket)
    config = {
        "output_dir": s3_bucket.uri("lake"),
        "table_format": "iceberg",
        "iceberg_catalog": catalog,
        "batch_size_rows": BATCH,
        "partition_date_field": "event_time",
    }
    writers = [Writer(tmp_path / f"machine-{w}", config) for w in range(WRITERS)]
    slices = [(w * PER_WRITER, (w + 1) * PER_WRITER) for w in range(WRITERS)]
    for w, writer in enumerate(writers):
        kill = KILL_AT if w == KILLED else None
        processes.append(writer.start(writer_lines(w, *slices[w]), kill=kill))
    deadline = time.monotonic() + WAIT_SECONDS

    # The killed writer: rerun from its last STATE as soon as it died (the others may still write)
    victim = writers[KILLED]
    assert wait(processes[KILLED], deadline) == -signal.SIGKILL, victim.stderr(1)[-3000:]
    last = victim.states(1)[-1]["bookmarks"]["events"]["last"]
    start, stop = slices[KILLED]
    assert last == start + 2 * BATCH - 1  # commit 3 (records 1000..1499) landed, no STATE
    still_writing = sum(p.poll() is None for w, p in enumerate(processes) if w != KILLED)
    processes.append(victim.start(writer_lines(KILLED, last + 1, stop)))
    codes = [wait(proc, deadline) for proc in processes]
    assert codes == [0, -signal.SIGKILL, 0, 0], [w.stderr(w.runs)[-2000:] for w in writers]
    for writer, (_, stop) in zip(writers, slices, strict=True):
        assert writer.states(writer.runs)[-1] == {"bookmarks": {"events": {"last": stop - 1}}}
    rerun_log = victim.stderr(2)
    # the rerun replays what commit 3 already holds: dropped by the bookkeeping in the table
    assert f"iceberg_duplicates_dropped stream=events table=singer.events rows={BATCH}" in rerun_log

    # Nothing shared on disk: each folder holds only what the test put there and the run logs.
    for writer in writers:
        names = {p.name for p in writer.folder.iterdir() if not p.name.startswith(".coverage")}
        allowed = {"config.json"} | {f"run{r}{s}" for r in (1, 2) for s in (".in", ".out", ".err")}
        assert names <= allowed, names
    # ... and no writer printed the catalog's password
    password = postgres_database.server.password
    for writer in writers:
        for run in range(1, writer.runs + 1):
            assert password not in writer.stderr(run)
            assert password not in (writer.folder / f"run{run}.out").read_text()

    # Reader 1: pyiceberg through the same PostgreSQL catalog
    settings = TargetSettings(output_dir=s3_bucket.uri("lake"), iceberg_catalog=catalog)
    reader = load_iceberg_catalog(settings)
    try:
        table = reader.load_table(("singer", "events"))
        rows = table.scan(selected_fields=("log_id", "sequence_number_str")).to_arrow()
        metadata_location = table.metadata_location
        run_ids = {s.summary.additional_properties.get("singer.run-id") for s in table.snapshots()}
    finally:
        reader.close()
    keys = sorted(
        zip(
            rows.column("log_id").to_pylist(),
            rows.column("sequence_number_str").to_pylist(),
            strict=True,
        )
    )
    expected = expected_keys()
    assert keys == expected  # every record once: none lost, none twice
    assert len(run_ids - {None}) == WRITERS + 1  # three runs and the rerun committed
    assert metadata_location.startswith(f"s3://{s3_bucket.name}/lake/singer/events/metadata/")

    # The catalog is the PostgreSQL database: its row names that metadata file
    connection = postgres_database.server.connect(postgres_database.name)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "select table_namespace, table_name, metadata_location from iceberg_tables"
            )
            assert cursor.fetchall() == [("singer", "events", metadata_location)]
    finally:
        connection.close()

    # Reader 2: DuckDB's Iceberg extension, on S3, given the catalog's current metadata file
    duck = duckdb_iceberg_rows(metadata_location, s3_bucket)
    assert duck == expected
    print(
        f"shared catalog: records in {len(expected)}; pyiceberg rows {len(keys)} distinct "
        f"{len(set(keys))}; duckdb iceberg_scan rows {len(duck)} distinct {len(set(duck))}; "
        f"killed at {KILL_AT} of writer {KILLED} (last STATE {last}), rerun with "
        f"{still_writing} other writer(s) still running; "
        f"{time.monotonic() - began:.1f} s"
    )


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return int(listener.getsockname()[1])


def test_a_postgres_catalog_is_named_with_its_password_hidden():
    uri = "postgresql+psycopg2://app:pw-hidden-4721@db.example:5432/lake"
    described = describe_catalog({"type": "sql", "uri": uri})
    assert described == "SQL catalog 'postgresql+psycopg2://app:***@db.example:5432/lake'"


def run_failing_catalog(tmp_path: Path, uri: str, level: str) -> tuple[str, str, float]:
    """The target CLI with ``uri`` as its SQL catalog: (its one ERROR line, all output, seconds)."""
    config = {
        "output_dir": str(tmp_path / "out"),
        "table_format": "iceberg",
        "iceberg_catalog": {"type": "sql", "uri": uri},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.endswith("LOGLEVEL")}
    if level == "DEBUG":
        env["LOGLEVEL"] = "DEBUG"
    text = "".join(line + "\n" for line in writer_lines(0, 0, 3))
    began = time.monotonic()
    result = subprocess.run(
        [TARGET_BIN, "--config", str(tmp_path / "config.json")],
        input=text,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "| ERROR " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stdout == ""  # no STATE: nothing was committed
    assert ("Traceback (most recent call last)" in result.stderr) == (level == "DEBUG")
    return errors[0], result.stderr + result.stdout, elapsed


@pytest.mark.parametrize("level", ["default", "DEBUG"])
def test_an_unreachable_postgres_catalog_fails_fast_in_one_line_without_its_password(
    tmp_path, level
):
    port = closed_port()
    uri = f"postgresql+psycopg2://app:pw-hidden-4720@127.0.0.1:{port}/lake"
    error, output, elapsed = run_failing_catalog(tmp_path, uri, level)
    catalog = f"Iceberg SQL catalog 'postgresql+psycopg2://app:***@127.0.0.1:{port}/lake"
    assert catalog in error  # with the connect_timeout the target adds
    assert "Connection refused" in error
    assert "check that the server is up and reachable from here" in error
    assert "pw-hidden-4720" not in output
    assert elapsed < 20, f"{elapsed:.1f} s"


def test_a_wrong_postgres_password_is_one_line_without_it(tmp_path, postgres_database):
    server = postgres_database.server
    uri = server.url(postgres_database.name).replace(server.password, "pw-wrong-4722")
    error, output, elapsed = run_failing_catalog(tmp_path, uri, "DEBUG")
    where = f"{server.user}:***@{server.host}:{server.port}/{postgres_database.name}"
    assert f"Iceberg SQL catalog 'postgresql+psycopg2://{where}?connect_timeout=" in error
    assert "password authentication failed" in error
    assert "pw-wrong-4722" not in output
    assert server.password not in output
    assert elapsed < 20, f"{elapsed:.1f} s"


def test_a_postgres_catalog_that_never_answers_fails_within_its_connect_timeout(tmp_path):
    """A server that accepts the connection and never answers (a stalled proxy, a hung host):
    libpq gives up after ``connect_timeout`` (for SSL, then plain), and the target fails in one
    line naming the catalog, without retrying what is not a race between writers."""
    with socket.create_server(
        ("127.0.0.1", 0), backlog=8
    ) as silent:  # never accepts, never answers
        port = silent.getsockname()[1]
        uri = f"postgresql+psycopg2://app:pw-hidden-4723@127.0.0.1:{port}/lake?connect_timeout=1"
        error, output, _ = run_failing_catalog(tmp_path, uri, "default")
    assert f"SQL catalog 'postgresql+psycopg2://app:***@127.0.0.1:{port}/lake" in error
    assert "timeout expired" in error
    assert "iceberg_catalog_retry" not in output  # a connection failure is not a lost race
    assert "pw-hidden-4723" not in output


def test_a_postgres_catalog_gets_a_connect_timeout_unless_its_uri_sets_one(tmp_path):
    def uri_of(uri: str) -> str:
        settings = TargetSettings(
            output_dir=str(tmp_path), iceberg_catalog={"type": "sql", "uri": uri}
        )
        return iceberg.catalog_properties(settings)["uri"]

    default = f"connect_timeout={POSTGRES_CONNECT_TIMEOUT_SECONDS}"
    assert (
        uri_of("postgresql+psycopg2://app:pw@db/lake")
        == f"postgresql+psycopg2://app:pw@db/lake?{default}"
    )
    assert (
        uri_of("postgresql://db/lake?sslmode=require")
        == f"postgresql://db/lake?sslmode=require&{default}"
    )
    assert (
        uri_of("postgresql://db/lake?connect_timeout=3") == "postgresql://db/lake?connect_timeout=3"
    )
    assert uri_of("sqlite:////tmp/c.db") == "sqlite:////tmp/c.db"
