"""A real PostgreSQL server on loopback for the shared-catalog tests: one per test session.

``postgres_server`` runs Debian's PostgreSQL (``initdb`` and ``pg_ctl`` on ``PATH`` or under
``/usr/lib/postgresql/<version>/bin``; scripts/test.sh installs the ``postgresql`` package when
they are missing) as a non-root user: PostgreSQL refuses to run as root, so a root test run uses
the ``postgres`` system user (created when missing). The cluster lives in a fresh temporary
folder owned by that user, listens on 127.0.0.1 on a free port with its unix socket in that
folder, and has one password-protected superuser (TCP connections need the password, as a real
server's do). Stopped and removed at the end of the session.

``postgres_database`` gives each test its own empty database (dropped afterwards) and its URL.
Without the binaries the fixture fails, naming the package to install: the tests that use it
never skip.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_DATABASES = itertools.count()
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
    "/usr/lib/postgresql/*/bin: install Debian's package, `apt-get install -y postgresql` "
    "(scripts/test.sh does)"
)
SERVER_USER = "postgres"  # who runs the server when the tests run as root
START_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster: where it listens and the superuser's credentials."""

    host: str
    port: int
    user: str
    password: str
    root: Path  # the temporary folder: data directory, unix socket, server log

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """An SQLAlchemy URL for ``database`` over TCP, password included."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg2 connection in autocommit mode (the caller closes it)."""
        import psycopg2

        connection = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            connect_timeout=10,
        )
        connection.autocommit = True
        return connection


@dataclass(frozen=True)
class PostgresDatabase:
    """One test's database on the session's server."""

    server: PostgresServer
    name: str

    @property
    def url(self) -> str:
        """Its SQLAlchemy URL (psycopg2 driver), password included."""
        return self.server.url(self.name)


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, newest installed version first."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")

    def version(path: str) -> tuple[int, ...]:
        text = Path(path).parent.parent.name
        return tuple(int(n) for n in text.split(".") if n.isdigit())

    for pg_ctl in sorted(candidates, key=version, reverse=True):
        folder = Path(pg_ctl).parent
        if (folder / "initdb").exists():
            return folder
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The non-root account to run the server as; None when this process is not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", SERVER_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVER_USER)


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return int(listener.getsockname()[1])


class _Runner:
    """Runs the server's commands as its account, in its folder, with a minimal environment."""

    def __init__(self, bin_dir: Path, root: Path, account: pwd.struct_passwd | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.account = account

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self.account is not None:
            extra = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        env = {
            "PATH": f"{self.bin_dir}:/usr/bin:/bin",
            "HOME": str(self.root),
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
        }
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **extra,
        )


def _log_tail(root: Path) -> str:
    log = root / "server.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-15:])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster on 127.0.0.1, started for the session, stopped and removed after."""
    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    account = _server_account()
    # /tmp, not TMPDIR: the server's account must reach the folder, and a unix socket's path is
    # limited to about 100 characters
    root = Path(tempfile.mkdtemp(prefix="pytest-postgres-", dir="/tmp"))
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    run = _Runner(bin_dir, root, account)
    user, password = "lake", f"pg-{secrets.token_hex(8)}"
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        init = run(
            "initdb", "-D", str(root / "data"), "-U", user, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
            "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            pytest.fail(f"initdb failed: {init.stderr.strip()[-2000:]}", pytrace=False)
        pwfile.unlink()
        port = 0
        for _ in range(3):  # a free port may be taken between the probe and the server's bind
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            started = run(
                "pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-o",
                options, "-w", "-t", str(START_TIMEOUT_SECONDS), "start",
                timeout=START_TIMEOUT_SECONDS + 15,
            )  # fmt: skip
            if started.returncode == 0:
                break
        else:
            pytest.fail(
                f"PostgreSQL did not start: {started.stderr.strip()}\n{_log_tail(root)}",
                pytrace=False,
            )
        try:
            yield PostgresServer("127.0.0.1", port, user, password, root)
        finally:
            stopped = run("pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop")
            if stopped.returncode != 0:
                run("pg_ctl", "-D", str(root / "data"), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh database for this test (dropped afterwards, its connections ended)."""
    name = f"test_{os.getpid()}_{next(_DATABASES)}"
    connection = postgres_server.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    try:
        yield PostgresDatabase(postgres_server, name)
    finally:
        connection = postgres_server.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            connection.close()
