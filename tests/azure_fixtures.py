"""A real Azure Blob API on loopback for the az:// tests: Azurite, one per test session.

``azurite`` starts ``azurite-blob`` (npm's ``azurite``, installed into ``.tools/azurite`` by
``scripts/test.sh``; ``AZURITE_BLOB_BIN`` names another) on a free loopback port, in memory, with
telemetry off and a request log (stopped at the end of the session). ``azure_container`` gives
each test its own container, the environment a target process needs
(``AZURE_STORAGE_CONNECTION_STRING``, Azurite's well-known development account, and none of the
machine's own Azure variables), and a client for looking at the container.

Azurite keeps no blob versions (the S3 tests count versions in a versioned bucket), so "written
once" is read from Azurite's request log instead: the successful writes of each blob.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

AZURITE_VERSION = "3.37.0"
INSTALL = f"npm install --prefix .tools/azurite azurite@{AZURITE_VERSION}"
_ROOT = Path(__file__).resolve().parent.parent
# Azurite's development account: a public, documented key, not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURE_VARIABLES = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)
_CONTAINERS = itertools.count()
_WRITES = {"BlockBlob_Upload", "BlockBlob_CommitBlockList", "Blob_StartCopyFromURL"}


def connection_string(endpoint: str, key: str = ACCOUNT_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={endpoint};"
    )


@dataclass
class Azurite:
    """The running emulator: its account's blob endpoint and its request log."""

    endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    log: Path

    def successful_writes(self, container: str) -> Counter[str]:
        """Blob name -> writes Azurite answered with success (201), from its request log."""
        requests: dict[str, dict[str, str]] = {}
        pattern = re.compile(
            r"^\S+ (\S+) \w+: (?:BlobStorageContextMiddleware: Account=\S+ Container=(\S*) "
            r"Blob=(.*)|DispatchMiddleware: Operation=(\S+)|EndMiddleware: End response\. "
            r"TotalTimeInMS=\d+ StatusCode=(\d+))"
        )
        with self.log.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                match = pattern.match(line)
                if match is None:
                    continue
                request = requests.setdefault(match[1], {})
                if match[2] is not None:
                    request.update(container=match[2], blob=match[3])
                elif match[4] is not None:
                    request["operation"] = match[4]
                else:
                    request["status"] = match[5]
        return Counter(
            r["blob"]
            for r in requests.values()
            if r.get("container") == container
            and r.get("operation") in _WRITES
            and r.get("status", "").startswith("2")
        )


@dataclass
class AzureContainer:
    """One container on Azurite."""

    name: str
    azurite: Azurite
    env: dict[str, str]  # variables to add to a target process's environment
    client: Any = field(repr=False)  # azure.storage.blob.ContainerClient

    def uri(self, prefix: str = "data") -> str:
        """``az://container/prefix``."""
        return f"az://{self.name}/{prefix}"

    def keys(self, prefix: str = "") -> list[str]:
        """Current blob names under ``prefix``."""
        return sorted(self.client.list_blob_names(name_starts_with=prefix))

    def read(self, key: str) -> bytes:
        return bytes(self.client.download_blob(key).readall())

    def writes(self, prefix: str = "") -> dict[str, int]:
        """Blob name under ``prefix`` -> how many writes of it succeeded (Azurite's log)."""
        counted = self.azurite.successful_writes(self.name)
        return {k: n for k, n in counted.items() if k.startswith(prefix)}

    def journal_remembers(self, prefix: str = "data/_journal/") -> list[str]:
        """What the journal still holds: its lines less the ``{"stateful": true}`` marker, and
        the lock's name while a run holds it (as ``S3Bucket.journal_remembers``)."""
        held: list[str] = []
        for key in self.keys(prefix):
            if key.endswith("/lock"):
                held.append(key)
                continue
            text = self.read(key).decode()
            held += [line for line in text.splitlines() if line and line != '{"stateful":true}']
        return held


def azurite_binary() -> str:
    """The ``azurite-blob`` command, or a failure saying how to install it (never a skip)."""
    named = os.environ.get("AZURITE_BLOB_BIN")
    binary = Path(named) if named else _ROOT / ".tools/azurite/node_modules/.bin/azurite-blob"
    if not binary.exists():
        hint = f"run `{INSTALL}` (Node 18+; scripts/test.sh does it)"
        pytest.fail(f"Azurite is not installed ({binary} missing): {hint}")
    return str(binary)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """``azurite-blob`` on a free loopback port, in memory, for the whole session."""
    binary = azurite_binary()
    workdir = tmp_path_factory.mktemp("azurite")
    log = workdir / "requests.log"
    # in memory, no telemetry (nothing leaves the machine), any SDK's API version, a request log
    options = ["--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence"]
    options += ["--extentMemoryLimit", "512", "--disableTelemetry", "--skipApiVersionCheck"]
    proc = subprocess.Popen(
        [binary, *options, "--silent", "--debug", str(log)],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    endpoint = ""
    pending = b""
    deadline = time.monotonic() + 60
    # os.read, not readline: a buffered readline may take several lines from the pipe at once,
    # and select would then wait for more output that azurite never writes.
    while not endpoint and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            seen.append(line.rstrip())
            found = re.search(r"listens on (http://127\.0\.0\.1:\d+)", line)
            if found:
                endpoint = f"{found[1]}/{ACCOUNT}"
    if not endpoint:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail(f"azurite-blob did not start: {' | '.join(seen)[-500:]}")
    try:
        yield Azurite(endpoint=endpoint, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture
def azure_container(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureContainer]:
    """A fresh container; this process's environment points at Azurite too."""
    from azure.storage.blob import BlobServiceClient

    for name in AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string(azurite.endpoint)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    service = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
    name = f"lake-{os.getpid()}-{next(_CONTAINERS)}"
    client = service.create_container(name)
    try:
        yield AzureContainer(name=name, azurite=azurite, env=env, client=client)
    finally:
        service.close()
