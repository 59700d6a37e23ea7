"""Object storage (``s3://``, ``gs://``, ``az://``, ``abfs[s]://``): the disk's promises, kept.

* **Every part is a new object, never overwritten.** Its name holds 128 random bits, and on S3 it
  is created with ``PutObject`` + ``If-None-Match: *``: the store refuses (412) to replace an
  existing key; on GCS with ``ifGenerationMatch=0`` (``gcs_store.py``), on Azure with
  ``If-None-Match: *`` (``azure_store.py``). pyarrow's filesystems expose no conditional write,
  so each cloud goes through its own client (the ``s3``, ``gcs`` and ``azure`` extras); pyarrow
  only reads (``arrow_filesystem_for``: reconcile, readers).
* **No partial or temporary object is ever visible.** The part is encoded in memory, its footer
  read back (a part that would not open is never uploaded), then uploaded with one PUT straight
  to its final key. An object store shows an object only once its upload has completed, whole;
  a process killed mid-upload leaves nothing (there is no temporary object to sweep).
* **STATE only after the object is durable:** the PUT has returned (S3 is strongly consistent:
  a completed PUT is durable and visible to every reader at once).
* **Exactly once across kill -9: the journal and the run lock live in the bucket, next to the
  data**, under ``{output_dir}/_journal/`` (``_``-prefixed: pyarrow, Spark, Trino and DuckDB
  Hive readers skip it). Not on the local disk: an orchestrator runs the rerun on another,
  fresh worker, where a local journal would be gone (its replay keys lost: duplicates) and a
  local lock would lock nothing (two workers writing one dataset).

  - Journal: the disk journal's lines (``journal.py``: same lifecycle, same crash points), each
    a small object ``_journal/{generation}-{run id}/{sequence}.jsonl`` PUT (and so durable)
    before the part it names (``ObjectJournalLog``: a rewrite starts a new generation and
    deletes the older objects; a clean run with nothing to resume leaves none). A torn line
    cannot exist (PUTs are atomic).
  - Lock: the object ``_journal/lock``, created with ``If-None-Match: *`` (only one run can
    create it), holding the holder's host, pid, run id and lease. The holder renews it every
    ``lease/3`` seconds with ``If-Match: <its ETag>`` (a compare-and-swap) and stops writing if
    it could not renew within the lease. A lock whose holder is gone is taken over with the same
    compare-and-swap (so only one run wins): at once when the holder ran on this machine and its
    process is dead (a ``kill -9`` and a rerun on one machine), else once its lease ran out
    without a renewal (measured on the store's clock: its ``Last-Modified`` and ``Date``). A run
    that sees the lock renewed is refused at once, naming the holder. A ``lease_seconds`` that is
    not a number of seconds in (0, ``MAX_LEASE_SECONDS``] is read as the default (never a hang).
* **A lost answer is not a refusal**: each conditional PUT carries its own id in the object's
  metadata; a retry that meets 412 on an object holding that id is this PUT's success.
* **Every request has a deadline** (connect, read and send timeouts, a few attempts); a
  writer's requests, attempts included, end within 80% of its lock lease (``request_timeouts``):
  a stalled upload is abandoned before another run can take the lock over, and what it still
  delivers late meets the next run's fence.

Credentials, region and endpoint come from each cloud's standard configuration: for S3 the AWS
chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, instance and web-identity roles); for GCS Google's
default credentials (``GOOGLE_APPLICATION_CREDENTIALS``); for Azure ``AZURE_STORAGE_ACCOUNT_NAME``
(or the account in an ``abfs://container@account.dfs.core.windows.net`` URI) with
``AZURE_STORAGE_ACCOUNT_KEY``, ``AZURE_STORAGE_SAS_TOKEN`` or Azure's default credential.
"""

from __future__ import annotations

import abc
import datetime
import email.utils
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
import typing as t
import weakref
from collections.abc import Callable
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from target_parquet_parts.errors import DescribedOSError, UnreadablePartError
from target_parquet_parts.lock import LOCK_FILE, OutputDirInUseError
from target_parquet_parts.naming import JOURNAL_DIR, is_part_path, new_part_name
from target_parquet_parts.parts import WrittenPart
from target_parquet_parts.settings import DEFAULT_LOCK_LEASE_SECONDS
from target_parquet_parts.storage import Location, PartWriterLike, RunLockLike, Storage
from target_parquet_parts.threads import leave_stop_signals_to_main_thread
from target_parquet_parts.writes import BackgroundCall

if t.TYPE_CHECKING:
    from target_parquet_parts.journal import JournalLog

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "LockLostError",
    "ObjectExistsError",
    "ObjectRunLock",
    "ObjectStorage",
    "ObjectStore",
    "ObjectStoreError",
    "S3ObjectStore",
    "arrow_filesystem_for",
]

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = DEFAULT_LOCK_LEASE_SECONDS
# A lock object's lease is read from the store: a value that is not a finite number in this
# range (NaN, Infinity, 1e12, text) is a broken lock, read as the default lease (never a hang,
# never a wait the clock cannot express).
MAX_LEASE_SECONDS = 3600.0
# A run's own lease (lock_lease_seconds) is at least this: its requests' deadlines are cut from
# the lease (request_timeouts), and below it they would be too short for any store to answer.
MIN_LEASE_SECONDS = 3.0
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_GCS_RETRY_SECONDS = 20.0  # pyarrow's GcsFileSystem (readers): retries end after this
# Every request has a deadline: a store that accepts connections but never answers fails the
# request after at most _ATTEMPTS x (_CONNECT_TIMEOUT + _READ_TIMEOUT) seconds (a stalled send or
# read counts), not after the SDK's default 60 s per read and 5 attempts.
_CONNECT_TIMEOUT = 5.0
_READ_TIMEOUT = 20.0
_ATTEMPTS = 4
# Metadata of every conditional PUT: an id unique to that PUT. When the store applied a PUT but
# its answer was lost, the client's retry meets 412 (the object exists, or its ETag changed);
# finding our own id on the object tells our own write from another run's.
PUT_ID_KEY = "put-id"


class ObjectStoreError(DescribedOSError):
    """An object-store request failed; the message names output_dir, operation, key and cause."""


class ObjectExistsError(Exception):
    """A conditional create found the key taken."""


class PreconditionError(Exception):
    """A compare-and-swap found the object changed (or gone)."""


class LockLostError(OutputDirInUseError):
    """This run could not renew its lock in time, or another run took it over."""


class StoredObject(t.NamedTuple):
    """An object read back, with the store's clock."""

    data: bytes
    etag: str
    modified: datetime.datetime
    now: datetime.datetime  # the store's time when it answered


# -- the handful of object operations the target needs ---------------------------------------
class ObjectStore(abc.ABC):
    """Keys are full object keys inside the bucket."""

    conditional = False  # True when put_new / put_if_match are atomic on the store itself
    location: Location

    @abc.abstractmethod
    def put_new(self, key: str, data: bytes) -> str:
        """Create ``key``; raise ``ObjectExistsError`` if it exists. Returns the ETag."""

    @abc.abstractmethod
    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Replace ``key`` only if its ETag is ``etag``; else ``PreconditionError``."""

    @abc.abstractmethod
    def get(self, key: str) -> StoredObject | None:
        """The object, or None when it does not exist."""

    @abc.abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abc.abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete keys (missing ones are fine)."""

    @abc.abstractmethod
    def delete_if_match(self, key: str, etag: str) -> None:
        """Delete ``key`` only if its ETag is ``etag`` (else leave it)."""

    def where(self, key: str) -> str:
        """``scheme://bucket/key`` for messages."""
        return f"{self.location.scheme}://{self.location.bucket}/{key}"


_S3_HINTS = {
    "NoSuchBucket": "the bucket does not exist (the target never creates buckets)",
    "AccessDenied": "check the credentials and the bucket policy (AWS_PROFILE, "
    "AWS_ACCESS_KEY_ID, the role)",
    "InvalidAccessKeyId": "check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": "check the credentials (AWS_SECRET_ACCESS_KEY) and AWS_REGION",
    "NotImplemented": "the store does not implement this request (conditional writes need "
    "S3 or a compatible store that supports If-None-Match / If-Match)",
}


def request_timeouts(budget_seconds: float | None) -> tuple[float, float]:
    """Connect and read (no progress) timeouts so that all attempts of one request end within
    ``budget_seconds`` (None: the plain defaults). A writer's budget is most of its lease: a
    request stalled past it is abandoned, and the run stops before a STATE."""
    if budget_seconds is None:
        return _CONNECT_TIMEOUT, _READ_TIMEOUT
    per_attempt = budget_seconds / _ATTEMPTS
    connect = min(_CONNECT_TIMEOUT, per_attempt / 4)
    return connect, min(_READ_TIMEOUT, per_attempt - connect)


class S3ObjectStore(ObjectStore):
    """S3 through boto3: conditional PUTs (``If-None-Match: *``, ``If-Match``) are atomic."""

    conditional = True

    def __init__(self, location: Location, request_budget_seconds: float | None = None) -> None:
        import boto3  # noqa: PLC0415  (optional: the [s3] extra)
        from botocore.config import Config  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        self.location = location
        # The standard AWS chain: AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL(_S3), keys, roles.
        session = boto3.session.Session()
        connect, read = request_timeouts(request_budget_seconds)
        self._client = session.client(
            "s3",
            config=Config(
                retries={"mode": "standard", "max_attempts": _ATTEMPTS},
                connect_timeout=connect,
                read_timeout=read,
            ),
        )
        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        self._client_error = ClientError

    def _fail(self, operation: str, key: str, exc: Exception) -> ObjectStoreError:
        code = ""
        if isinstance(exc, self._client_error):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            text = f"{code}: {error.get('Message', exc)}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        hint = _S3_HINTS.get(code, "")
        if not code and "Credentials" in type(exc).__name__:
            hint = "no AWS credentials found (AWS_PROFILE, AWS_ACCESS_KEY_ID, an instance role)"
        if not code and "Endpoint" in type(exc).__name__:
            hint = "is the endpoint right? (AWS_ENDPOINT_URL, AWS_REGION)"
        msg = f"output_dir {self.location.uri!r}: {operation} of '{self.where(key)}' failed: {text}"
        return ObjectStoreError(f"{msg} ({hint})" if hint else msg)

    def _code(self, exc: Exception) -> str:
        if isinstance(exc, self._client_error):
            return str(exc.response.get("Error", {}).get("Code", ""))
        return ""

    def put_new(self, key: str, data: bytes) -> str:
        put_id = secrets.token_hex(16)
        try:
            answer = self._client.put_object(
                Bucket=self.location.bucket,
                Key=key,
                Body=data,
                IfNoneMatch="*",
                Metadata={PUT_ID_KEY: put_id},
            )
        except self._errors as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                etag = self._own_write(key, put_id)
                if etag is not None:
                    return etag  # our PUT landed; only its answer was lost (a retry met it)
                raise ObjectExistsError(key) from None
            raise self._fail("PutObject (If-None-Match: *)", key, exc) from exc
        return str(answer["ETag"])

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        put_id = secrets.token_hex(16)
        try:
            answer = self._client.put_object(
                Bucket=self.location.bucket,
                Key=key,
                Body=data,
                IfMatch=etag,
                Metadata={PUT_ID_KEY: put_id},
            )
        except self._errors as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                landed = self._own_write(key, put_id)
                if landed is not None:
                    return landed  # our swap landed; only its answer was lost
                raise PreconditionError(key) from None
            raise self._fail("PutObject (If-Match)", key, exc) from exc
        return str(answer["ETag"])

    def _own_write(self, key: str, put_id: str) -> str | None:
        """The object's ETag when it carries ``put_id`` (this very PUT landed), else None."""
        try:
            head = self._client.head_object(Bucket=self.location.bucket, Key=key)
        except self._errors as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail("HeadObject", key, exc) from exc
        if head.get("Metadata", {}).get(PUT_ID_KEY) != put_id:
            return None
        return str(head["ETag"])

    def get(self, key: str) -> StoredObject | None:
        try:
            answer = self._client.get_object(Bucket=self.location.bucket, Key=key)
        except self._errors as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._fail("GetObject", key, exc) from exc
        body = answer["Body"]
        try:
            data = body.read()
        except self._errors as exc:
            raise self._fail("GetObject", key, exc) from exc
        finally:
            body.close()
        date = answer["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        now = email.utils.parsedate_to_datetime(date) if date else _utcnow()
        return StoredObject(data, str(answer["ETag"]), answer["LastModified"], now)

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.location.bucket, Key=key)
        except self._errors as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("HeadObject", key, exc) from exc
        return True

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except self._errors as exc:
            raise self._fail("ListObjectsV2", prefix, exc) from exc
        return keys

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            try:
                answer = self._client.delete_objects(
                    Bucket=self.location.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            except self._errors as exc:
                raise self._fail("DeleteObjects", batch[0], exc) from exc
            for error in answer.get("Errors", []):
                msg = (
                    f"output_dir {self.location.uri!r}: DeleteObjects of "
                    f"'{self.where(error.get('Key', ''))}' failed: {error.get('Code')}: "
                    f"{error.get('Message')}"
                )
                raise ObjectStoreError(msg)

    def delete_if_match(self, key: str, etag: str) -> None:
        try:
            self._client.delete_object(Bucket=self.location.bucket, Key=key, IfMatch=etag)
        except self._errors as exc:
            code = self._code(exc)
            if code in ("PreconditionFailed", "NoSuchKey"):
                return  # not ours any more, or gone: leave it
            if code in ("NotImplemented", "InvalidArgument"):
                current = self.get(key)  # a store without conditional deletes
                if current is not None and current.etag == etag:
                    self.delete([key])
                return
            raise self._fail("DeleteObject (If-Match)", key, exc) from exc


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _endpoint_from_env() -> tuple[str | None, str | None]:
    """(scheme, host:port) from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, as boto3 reads them."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return None, None
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.scheme, parts.netloc + parts.path.rstrip("/")


def arrow_filesystem_for(location: Location) -> pafs.FileSystem:
    """pyarrow's filesystem for ``location``, configured from the environment."""
    if location.scheme == "s3":
        kwargs: dict[str, t.Any] = {}
        scheme, endpoint = _endpoint_from_env()
        if endpoint:
            kwargs.update(endpoint_override=endpoint, scheme=scheme)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs)
    if location.scheme == "gs":
        # never pyarrow's default 15-minute retry (a run without credentials looked hung)
        gcs: dict[str, t.Any] = {"retry_time_limit": datetime.timedelta(seconds=_GCS_RETRY_SECONDS)}
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:  # an emulator (fake-gcs-server): plain HTTP, no credentials
            parts = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
            gcs.update(endpoint_override=parts.netloc, scheme=parts.scheme, anonymous=True)
        return pafs.GcsFileSystem(**gcs)
    # az://, abfs[s]://: the account, key or SAS token, and a connection string's endpoint
    from target_parquet_parts.azure_store import arrow_azure_options  # noqa: PLC0415  (cycle)

    return pafs.AzureFileSystem(**arrow_azure_options(location))


# -- the run lock --------------------------------------------------------------------------
def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _machine() -> dict[str, t.Any]:
    """What identifies this machine and pid namespace (a container has its own pids)."""
    return {
        "host": socket.gethostname(),
        "boot": _read_text("/proc/sys/kernel/random/boot_id"),
        "pidns": _pid_namespace(),
    }


def _same_pid_namespace(holder: dict[str, t.Any]) -> bool:
    """True when the holder ran on this machine (boot) and in this pid namespace."""
    here = _machine()
    if here["boot"] is None or here["pidns"] is None:
        return False  # cannot tell machines or containers apart: rely on the lease
    return all(holder.get(k) == here[k] for k in ("host", "boot", "pidns"))


def _holder_is_dead_here(holder: dict[str, t.Any]) -> bool:
    """True only when the holder ran on this machine, in this pid namespace, and is gone."""
    if not _same_pid_namespace(holder):
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    start = _process_start(pid)
    return start is None or start != holder.get("start")


def _describe(holder: dict[str, t.Any]) -> str:
    try:
        return (
            f"pid {holder['pid']} on host {holder['host']}, run {holder['run']}, "
            f"since {holder['since']}"
        )
    except (KeyError, TypeError):
        return "holder unknown"


def check_lease(seconds: float) -> float:
    """``seconds`` as this run's lease, or ``ValueError`` saying what a lease must be."""
    if not (math.isfinite(seconds) and MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS):
        msg = (
            f"{seconds} is not a number of seconds in "
            f"[{MIN_LEASE_SECONDS:.0f}, {MAX_LEASE_SECONDS:.0f}]"
        )
        raise ValueError(msg)
    return float(seconds)


class ObjectRunLock:
    """``{output_dir}/_journal/lock`` in the bucket: conditional create, lease, heartbeat."""

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        run_id: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self._store = store
        self.key = key
        self.lease = lease_seconds
        self._stop = threading.Event()
        self._lost: str | None = None
        self._renewals = 0
        started = _utcnow().isoformat(timespec="seconds")
        self._holder = {
            **_machine(),
            "pid": os.getpid(),
            "start": _process_start(os.getpid()),
            "run": run_id,
            "since": started,
            "lease_seconds": lease_seconds,
        }
        self._etag = self._acquire()
        self._renewed_at = time.monotonic()
        # The heartbeat holds the lock only weakly: a lock a library caller dropped without
        # release() stops being renewed (its lease then runs out) instead of living forever.
        self._thread = threading.Thread(
            target=_heartbeat,
            args=(weakref.ref(self), self._stop, self.lease / 3),
            name="target-parquet-parts-lock",
            daemon=True,
        )
        self._thread.start()
        weakref.finalize(self, self._stop.set)

    def _body(self) -> bytes:
        renewed = _utcnow().isoformat(timespec="milliseconds")
        data = {**self._holder, "renewals": self._renewals, "renewed": renewed}
        return (json.dumps(data) + "\n").encode()

    def _in_use(self, holder: dict[str, t.Any], why: str) -> OutputDirInUseError:
        where = self._store.where(self.key)
        msg = (
            f"output_dir '{self._store.location.uri}' is in use by another target-parquet-parts "
            f"process ({_describe(holder)}; lock object '{where}', {why}): give each concurrent "
            "run its own output_dir, or wait for that run to end"
        )
        return OutputDirInUseError(msg)

    def _acquire(self) -> str:
        first_seen: str | None = None
        while True:
            try:
                return self._store.put_new(self.key, self._body())
            except ObjectExistsError:
                pass
            current = self._store.get(self.key)
            if current is None:
                continue  # released meanwhile: try again
            try:
                holder = json.loads(current.data)
                if not isinstance(holder, dict):
                    raise TypeError
            except (ValueError, TypeError):
                holder = {}
            lease = self._lease_of(holder)
            age = (current.now - current.modified).total_seconds()
            dead = _holder_is_dead_here(holder)
            if not dead and _same_pid_namespace(holder):
                # Alive on this machine: known to be running, whatever its lease says (a
                # process stalled past its lease would otherwise lose the lock while writing).
                raise self._in_use(holder, "its process is running on this machine")
            if dead or age > lease:
                reason = "its process is gone" if dead else f"lease not renewed for {age:.0f} s"
                try:
                    etag = self._store.put_if_match(self.key, self._body(), current.etag)
                except PreconditionError:
                    continue  # another run changed it first: look again
                logger.warning(
                    "took over the lock '%s' of %s (%s)",
                    self._store.where(self.key),
                    _describe(holder),
                    reason,
                )
                return etag
            if first_seen is not None and current.etag != first_seen:
                raise self._in_use(holder, "its lease is being renewed")
            if first_seen is None:
                first_seen = current.etag
                logger.warning(
                    "output_dir '%s' is locked by %s on another machine; waiting up to %.0f s "
                    "for its lease to be renewed (then this run is refused) or to run out (then "
                    "the lock is taken over)",
                    self._store.location.uri,
                    _describe(holder),
                    lease - age,
                )
            self._stop.wait(min(max(lease - age, 0.0) + 0.5, max(lease / 6, 0.5)))

    def _lease_of(self, holder: dict[str, t.Any]) -> float:
        """The holder's lease in seconds; a broken value is read as the default, with a word."""
        lease = holder.get("lease_seconds", DEFAULT_LEASE_SECONDS)
        if (
            isinstance(lease, int | float)
            and not isinstance(lease, bool)
            and math.isfinite(lease)
            and 0 < lease <= MAX_LEASE_SECONDS
        ):
            return float(lease)
        logger.warning(
            "the lock '%s' holds a broken lease_seconds (%s; expected a number of seconds in "
            "(0, %.0f]): read as %.0f s",
            self._store.where(self.key),
            json.dumps(lease)[:40],
            MAX_LEASE_SECONDS,
            DEFAULT_LEASE_SECONDS,
        )
        return DEFAULT_LEASE_SECONDS

    def renew(self) -> bool:
        """Renew the lease once (compare-and-swap on the ETag); False once the lock is lost."""
        begun = time.monotonic()
        self._renewals += 1
        try:
            self._etag = self._store.put_if_match(self.key, self._body(), self._etag)
        except PreconditionError:
            self._lost = "another run took the lock over (its lease had run out)"
            logger.error("lost the lock '%s': %s", self._store.where(self.key), self._lost)
            return False
        except ObjectStoreError as exc:
            logger.warning("could not renew the lock (will retry): %s", exc)
            return True
        self._renewed_at = begun
        return True

    def check(self) -> None:
        """Raise ``LockLostError`` unless the lease is surely still this run's."""
        if self._lost is None and time.monotonic() - self._renewed_at > self.lease * 0.8:
            self._lost = f"the lease could not be renewed for {self.lease * 0.8:.0f} s"
        if self._lost is not None:
            msg = (
                f"output_dir '{self._store.location.uri}': this run no longer holds its lock "
                f"'{self._store.where(self.key)}' ({self._lost}); stopping before writing more, "
                "so two runs never write one dataset at once. Rerun from the last STATE."
            )
            raise LockLostError(msg)

    def release(self) -> None:
        """Stop renewing and delete the lock (only if it is still this run's)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if self._lost is None:
            try:
                self._store.delete_if_match(self.key, self._etag)
            except ObjectStoreError as exc:
                logger.warning("could not delete the lock (its lease will run out): %s", exc)


def _heartbeat(
    lock_ref: weakref.ReferenceType[ObjectRunLock], stop: threading.Event, interval: float
) -> None:
    """Renew the lease every ``interval`` seconds until released, lost or dropped."""
    leave_stop_signals_to_main_thread()
    while not stop.wait(interval):
        lock = lock_ref()
        if lock is None or not lock.renew():
            return
        del lock


# -- the journal ---------------------------------------------------------------------------
class ObjectJournalLog:
    """The journal's lines as objects: ``_journal/{generation}-{run id}/{sequence}.jsonl``.

    A generation starts with its object ``0000000000``, the whole journal at that point (as the
    run read it, or as a rewrite made it); each appended line is one more object, in sequence.
    Reading takes the highest generation that has its ``0000000000`` object, plus its lines in
    order. Each run starts a new generation at its first line, and every rewrite starts one
    too, then deletes the older objects (lines first, then the bases): a crash at any point
    leaves the newest journal readable, or, at worst, an older one whose rows only ever drop
    records that really are in a part. Every object is created with a conditional PUT and never
    rewritten; a PUT that returned is durable; objects cannot be torn.

    A line appended without ``sync`` (``covered`` and ``consumed``: losing one only keeps rows
    a little longer, ``journal.py``) is not a request of its own: it waits in memory and goes
    in the same object as the next synced line (the next part's entry), or is superseded by a
    rewrite. Why: the ``covered`` line is appended when a STATE is emitted, on the reading
    thread and under the journal's lock, and a PUT there (a round trip per STATE) held up the
    reading; on disk the same line is a write without fsync. A crash loses at most the lines
    since the last part's entry (crash point 4 of ``journal.py``: those rows stay until a run
    ends cleanly).
    """

    _NAME = re.compile(r"^(\d{10})-([^/]+)/(\d{10})\.jsonl$")

    def __init__(self, storage: ObjectStorage, run_id: str) -> None:
        self._storage = storage
        self._store = storage.store
        self._prefix = storage.location.key(JOURNAL_DIR) + "/"
        self.where = storage.location.url(JOURNAL_DIR)
        self._run_id = run_id
        self._generation = 0  # the highest generation seen or written
        self._sequence = 0
        self._has_base = False  # this run has started its own generation
        self._text = ""  # the journal as read: the base of this run's first generation
        self._keys: list[tuple[int, int, str]] = []  # (generation, sequence, key) in the bucket
        self._unsynced: list[str] = []  # lines appended without sync, not yet in an object

    def _key(self, generation: int, sequence: int) -> str:
        return f"{self._prefix}{generation:010d}-{self._run_id}/{sequence:010d}.jsonl"

    def read(self) -> str:
        found: list[tuple[int, int, str]] = []
        for key in self._store.list_keys(self._prefix):
            match = self._NAME.match(key[len(self._prefix) :])
            if match:
                found.append((int(match[1]), int(match[3]), key))
        found.sort()
        based = [generation for generation, sequence, _ in found if sequence == 0]
        current = max(based, default=None)
        parts: list[str] = []
        for generation, _, key in found:
            if generation == current:
                stored = self._store.get(key)
                if stored is not None:
                    parts.append(stored.data.decode("utf-8"))
        self._text = "".join(parts)
        self._keys = found
        self._generation = max((g for g, _, _ in found), default=0)
        self._has_base = False
        return self._text

    def append(self, line: str, *, sync: bool) -> None:
        if not sync:  # goes with the next synced line (class docstring)
            self._unsynced.append(line)
            return
        if not self._has_base:
            self._start_generation(self._text, keep_empty=True)
        self._storage.check_lock()
        self._sequence += 1
        key = self._key(self._generation, self._sequence)
        self._store.put_new(key, "".join((*self._unsynced, line)).encode("utf-8"))
        self._unsynced.clear()
        self._keys.append((self._generation, self._sequence, key))

    def rewrite(self, text: str) -> None:
        self._unsynced.clear()  # the rewritten journal holds their effect
        self._start_generation(text, keep_empty=False)

    def _start_generation(self, text: str, *, keep_empty: bool) -> None:
        self._storage.check_lock()
        older = self._keys
        self._generation += 1
        self._sequence = 0
        self._text = text
        self._keys = []
        self._has_base = bool(text) or keep_empty
        if self._has_base:  # an empty journal is no object at all
            key = self._key(self._generation, 0)
            self._store.put_new(key, text.encode("utf-8"))
            self._keys.append((self._generation, 0, key))
        self._store.delete([key for _, sequence, key in older if sequence])
        self._store.delete([key for _, sequence, key in older if not sequence])

    def close(self) -> None:
        """Write the lines still unsynced (a run that failed on its input, say, keeps its
        ``covered`` lines), as one more object; if that fails too, they are lost, which only
        keeps rows a little longer (class docstring): the run's own error is the one to see."""
        if not self._unsynced:
            return
        lines, self._unsynced = self._unsynced, []
        try:
            self.append("".join(lines), sync=True)
        except Exception as exc:  # best effort, explained above
            logger.debug("journal: %d unsynced line(s) not written at close: %s", len(lines), exc)


# -- parts -----------------------------------------------------------------------------------
class ObjectPartWriter:
    """Journal (while encoding), read the footer back, then one PUT to the final key.

    The journal entry names the part before it exists, so its PUT runs while the part is being
    encoded (the entry of a part never uploaded only names a missing object: no keys, harmless,
    as for a crash before the upload). The part's own PUT starts only once the entry is durable.
    """

    def __init__(
        self, storage: ObjectStorage, compression: str, compression_level: int | None
    ) -> None:
        self._storage = storage
        self.compression = None if compression == "none" else compression
        self.compression_level = compression_level

    def write(
        self,
        table: pa.Table,
        directory: tuple[str, ...],
        before_publish: Callable[[str], None] | None = None,
    ) -> WrittenPart:
        relative = "/".join((*directory, new_part_name()))
        location = self._storage.location
        where = location.url(relative)
        self._storage.check_lock()
        journal = BackgroundCall(before_publish, relative) if before_publish else None
        try:
            data = self._encode(table, where)
        except BaseException:
            if journal is not None:
                journal.wait(raise_error=False)  # the encoding error is the one to report
            raise
        if journal is not None:
            journal.wait()  # the entry is durable (or its error raised) before the PUT
        self._storage.check_lock()
        body = data.to_pybytes()
        try:
            self._storage.store.put_new(location.key(relative), body)
        except ObjectExistsError:
            msg = f"output_dir {location.uri!r}: the part name '{where}' is already taken"
            raise ObjectStoreError(msg) from None
        return WrittenPart(where, table.num_rows, len(body))

    def _encode(self, table: pa.Table, where: str) -> pa.Buffer:
        """The part's bytes, whose footer reads back with the right row count."""
        sink = pa.BufferOutputStream()
        pq.write_table(
            table, sink, compression=self.compression, compression_level=self.compression_level
        )
        data = sink.getvalue()
        try:
            # Not ``read_metadata(...).schema``: a FileMetaData/ParquetSchema reference cycle
            # per part, left for the rarely run cyclic GC (see ``parts.read_back_rows``).
            with pq.ParquetFile(pa.BufferReader(data)) as footer:
                footer.schema_arrow  # noqa: B018 - the conversion is the check
                rows = footer.metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            msg = f"the part for {where} cannot be read back ({exc}); it is not uploaded"
            raise UnreadablePartError(msg) from exc
        if rows != table.num_rows:
            msg = (
                f"the part for {where} reads back {rows} rows instead of "
                f"{table.num_rows}; it is not uploaded"
            )
            raise UnreadablePartError(msg)
        return data


class ObjectStorage(Storage):
    """An object-store ``output_dir``."""

    def __init__(self, location: Location, store: ObjectStore) -> None:
        self.location = location
        self.store = store
        self.display = location.uri
        self._lock: ObjectRunLock | None = None

    @classmethod
    def open(cls, location: Location, lease_seconds: float | None = None) -> ObjectStorage:
        """The store for ``location``: boto3 for S3, pyarrow's filesystem otherwise.

        ``lease_seconds``: the lock lease the writer will hold; every S3 request (its retries
        included) then ends within 80% of it, when ``ObjectRunLock.check`` would stop the run.
        """
        store: ObjectStore
        budget = None if lease_seconds is None else 0.8 * check_lease(lease_seconds)
        if location.scheme == "s3":
            store = S3ObjectStore(location, request_budget_seconds=budget)
        elif location.scheme == "gs":
            from target_parquet_parts.gcs_store import GcsObjectStore  # noqa: PLC0415  ([gcs])

            store = GcsObjectStore(location, request_budget_seconds=budget)
        elif location.scheme in ("az", "abfs", "abfss"):
            from target_parquet_parts.azure_store import AzureObjectStore  # noqa: PLC0415  ([azure])

            store = AzureObjectStore(location, request_budget_seconds=budget)
        else:  # storage.parse_location refuses every other scheme, naming output_dir
            msg = f"output_dir {location.uri!r}: no object store for {location.scheme}://"
            raise ObjectStoreError(msg)
        return cls(location, store)

    def lock(self, run_id: str, lease_seconds: float | None = None) -> RunLockLike:
        key = self.location.key(f"{JOURNAL_DIR}/{LOCK_FILE}")
        lease = DEFAULT_LOCK_LEASE_SECONDS if lease_seconds is None else check_lease(lease_seconds)
        self._lock = ObjectRunLock(self.store, key, run_id, lease)
        return self._lock

    def check_lock(self) -> None:
        """Before anything becomes visible: is the lease still ours?"""
        if self._lock is not None:
            self._lock.check()

    def journal_log(self, run_id: str) -> JournalLog:
        return ObjectJournalLog(self, run_id)

    def part_writer(self, compression: str, compression_level: int | None) -> PartWriterLike:
        return ObjectPartWriter(self, compression, compression_level)

    def part_exists(self, relative: str) -> bool:
        return self.store.exists(self.location.key(relative))

    def read_part(self, relative: str) -> pq.ParquetFile:
        found = self.store.get(self.location.key(relative))
        if found is None:
            raise FileNotFoundError(self.location.url(relative))
        return pq.ParquetFile(pa.BufferReader(found.data))

    # A run that lost its lock (a VM pause, a stalled proxy) may still have a part's PUT in
    # flight: its journal line is there, its object not yet. The next holder claims that name.
    late_parts_possible = True

    def fence_part(self, relative: str, schema: pa.Schema) -> bool:
        """Claim the name with a zero-row part of the stream's schema (``If-None-Match: *``):
        the late PUT then meets 412 and fails; readers see a valid, empty part. False when the
        part is there (it landed first: its rows are the journal's to replay). A journal line
        naming no part (``..``, another file) is never written to: nothing of ours can land there.
        """
        if not is_part_path(relative):
            logger.warning("journal: ignoring %s: not a part's path", relative)
            return True
        sink = pa.BufferOutputStream()
        pq.write_table(schema.empty_table(), sink)
        try:
            self.store.put_new(self.location.key(relative), sink.getvalue().to_pybytes())
        except ObjectExistsError:
            return False
        return True
