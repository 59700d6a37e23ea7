"""A real S3 API on loopback for the object-storage tests: moto's server, one per test session.

``moto_s3`` starts ``moto.server.ThreadedMotoServer`` on a free loopback port (stopped at the end
of the session); ``s3_bucket`` gives each test its own bucket with versioning ON (so "never
overwritten" is checked by counting object versions), the environment a target process needs
(``AWS_ENDPOINT_URL`` and dummy credentials, nothing from the machine's own AWS configuration),
and a boto3 client for looking at the bucket.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

_BUCKETS = itertools.count()


@dataclass
class S3Bucket:
    """One versioned bucket on the moto server."""

    name: str
    endpoint: str
    env: dict[str, str]  # variables to add to a target process's environment
    client: Any = field(repr=False)

    def uri(self, prefix: str = "data") -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.name}/{prefix}"

    def versions(self, prefix: str = "") -> dict[str, list[str]]:
        """Every key under ``prefix`` with its version ids (delete markers not included)."""
        found: dict[str, list[str]] = {}
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.name, Prefix=prefix
        )
        for page in pages:
            for version in page.get("Versions", []):
                found.setdefault(version["Key"], []).append(version["VersionId"])
        return found

    def delete_markers(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` that have a delete marker."""
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.name, Prefix=prefix
        )
        return [m["Key"] for page in pages for m in page.get("DeleteMarkers", [])]

    def journal_remembers(self, prefix: str = "data/_journal/") -> list[str]:
        """What the journal under ``prefix`` still holds: its lines less the
        ``{"stateful": true}`` marker, and the lock's key while a run holds it."""
        held: list[str] = []
        for key in self.keys(prefix):
            if key.endswith("/lock"):
                held.append(key)
                continue
            body = self.client.get_object(Bucket=self.name, Key=key)["Body"].read().decode()
            held += [line for line in body.splitlines() if line and line != '{"stateful":true}']
        return held

    def keys(self, prefix: str = "") -> list[str]:
        """Current (visible) keys under ``prefix``."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def s3_environment(endpoint: str) -> dict[str, str]:
    """Dummy credentials and the endpoint; the machine's AWS files and instance roles ignored."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on a free loopback port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh versioned bucket; this process's environment points at moto too."""
    import boto3

    env = s3_environment(moto_s3)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    client = boto3.session.Session().client("s3")
    name = f"lake-{os.getpid()}-{next(_BUCKETS)}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    try:
        yield S3Bucket(name=name, endpoint=moto_s3, env=env, client=client)
    finally:
        client.close()
