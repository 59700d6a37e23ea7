"""Google Cloud Storage (``gs://``) through google-cloud-storage: the same guarantees as S3.

* **Conditional create**: every part, journal line and the lock is uploaded with
  ``ifGenerationMatch=0`` (the store refuses, 412, when the name exists); a renewal of the lock
  is a compare-and-swap, ``ifGenerationMatch=<generation>`` (the generation is this store's
  ETag: a new one at every write), and its release a ``delete`` with the same precondition.
* **A lost answer is not a refusal**: each conditional upload carries its own id in the object's
  metadata (``put-id``, as on S3); a retry that meets 412 on an object holding that id is this
  upload's success.
* **Every request has a deadline**: connect and read timeouts on each attempt and at most
  ``objectstore._ATTEMPTS`` attempts (this module retries, the library's own retry is off), all
  within 80% of a writer's lock lease (``objectstore.request_timeouts``); the access-token
  request shares each attempt's timeouts. Nothing waits on a store, a token endpoint or a
  metadata server without one, so SIGTERM/SIGINT (recorded by the target's handler) are acted
  on within that deadline, and a second signal stops at once.
* **Credentials users already have**, checked when the store is opened, each failure one line
  naming what to set: ``STORAGE_EMULATOR_HOST`` (an emulator: anonymous, no credentials),
  else ``GOOGLE_APPLICATION_CREDENTIALS`` (a key file, read now: missing or unreadable fails
  at once), else Google's default credentials (``gcloud auth application-default login``, the
  metadata server of GCE/GKE/Cloud Run). ``GOOGLE_CLOUD_PROJECT`` is optional (object requests
  need no project).
"""

from __future__ import annotations

import datetime
import email.utils
import os
import secrets
import threading
import time
import typing as t
from collections.abc import Callable

from plugin_io.distribution import install_hint
from target_parquet_parts import objectstore
from target_parquet_parts.objectstore import (
    PUT_ID_KEY,
    ObjectExistsError,
    ObjectStore,
    ObjectStoreError,
    PreconditionError,
    StoredObject,
)

if t.TYPE_CHECKING:
    from target_parquet_parts.storage import Location

__all__ = ["GcsObjectStore", "gcs_credentials"]

_T = t.TypeVar("_T")
_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_EMULATOR = "STORAGE_EMULATOR_HOST"
_KEY_FILE = "GOOGLE_APPLICATION_CREDENTIALS"
_SET_CREDENTIALS = (
    f"set {_KEY_FILE} to a service-account key file, run `gcloud auth application-default "
    f"login`, or set {_EMULATOR} for an emulator"
)
_HINTS = {
    401: f"the credentials were refused: check {_KEY_FILE}",
    403: f"the credentials may not use this bucket: check {_KEY_FILE} and the bucket's IAM "
    "(roles/storage.objectAdmin)",
    404: "the bucket does not exist (the target never creates buckets)",
}
_RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF = 0.2  # seconds before the 2nd attempt, doubled after each, always within the deadline


def gcs_credentials(where: str) -> tuple[t.Any, str | None]:
    """(credentials, project) from the environment, or one ``ObjectStoreError`` line naming what
    to set. ``where`` names the output_dir in the message."""
    import google.auth  # noqa: PLC0415  (optional: the [gcs] extra)
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
    from google.auth.exceptions import GoogleAuthError  # noqa: PLC0415

    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
    if os.environ.get(_EMULATOR):
        return AnonymousCredentials(), project
    path = os.environ.get(_KEY_FILE)
    try:
        if path:
            credentials, found = google.auth.load_credentials_from_file(path, scopes=_SCOPES)
        else:
            credentials, found = google.auth.default(scopes=_SCOPES)
    except (GoogleAuthError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if path:
            msg = (
                f"output_dir {where!r}: {_KEY_FILE}={path!r} is not a usable Google credentials "
                f"file ({first}): set {_KEY_FILE} to a service-account key file, or unset it"
            )
        else:
            msg = f"output_dir {where!r}: no Google Cloud credentials found: {_SET_CREDENTIALS}"
        raise ObjectStoreError(msg) from None
    return credentials, project or found


class GcsObjectStore(ObjectStore):
    """GCS through google-cloud-storage: ``ifGenerationMatch`` makes creates and swaps atomic."""

    conditional = True

    def __init__(self, location: Location, request_budget_seconds: float | None = None) -> None:
        try:
            from google.api_core import exceptions as api  # noqa: PLC0415  (optional: [gcs])
            from google.auth import exceptions as auth  # noqa: PLC0415
            from google.auth.transport.requests import AuthorizedSession  # noqa: PLC0415
            from google.cloud import storage  # noqa: PLC0415
        except ImportError:
            msg = (
                f"output_dir {location.uri!r} needs google-cloud-storage (conditional "
                f"uploads): {install_hint('gcs')}"
            )
            raise ObjectStoreError(msg) from None
        from requests import exceptions as http  # noqa: PLC0415

        self.location = location
        self._budget = request_budget_seconds
        credentials, project = gcs_credentials(location.uri)
        session = AuthorizedSession(credentials)
        self._seen = threading.local()  # the store's Date header, per thread (the heartbeat)
        session.hooks["response"].append(self._saw_answer)
        self._session = session
        self._client = storage.Client(project=project, credentials=credentials, _http=session)
        self._bucket = self._client.bucket(location.bucket)
        self._api = api
        self._refused = auth.RefreshError  # the token endpoint said no: retrying cannot help
        self._transient: tuple[type[Exception], ...] = (
            http.ConnectionError,
            http.Timeout,
            http.ChunkedEncodingError,
            auth.TransportError,
            ConnectionError,
            TimeoutError,
        )
        self._errors: tuple[type[Exception], ...] = (
            api.GoogleAPICallError,
            auth.GoogleAuthError,
            http.RequestException,
            OSError,
        )

    def close(self) -> None:
        """Close the HTTP session's connections."""
        self._session.close()

    # -- requests with a deadline -----------------------------------------------------------
    def _saw_answer(self, response: t.Any, *args: t.Any, **kwargs: t.Any) -> None:
        del args, kwargs
        self._seen.date = response.headers.get("Date")

    def _call(self, request: Callable[[tuple[float, float]], _T]) -> _T:
        """``request(timeout)`` with at most ``_ATTEMPTS`` attempts, all within the budget.

        Retried: connection failures, timeouts, 408/429/5xx. Anything else (412, 404, 401, a
        refused token) is raised at once, to the caller that knows what it means.
        """
        attempts = objectstore._ATTEMPTS
        connect, read = objectstore.request_timeouts(self._budget)
        budget = self._budget if self._budget is not None else attempts * (connect + read)
        deadline = time.monotonic() + budget
        backoff = _BACKOFF
        attempt = 1
        while True:
            left = deadline - time.monotonic()
            try:
                return request((min(connect, max(left, 0.01)), min(read, max(left, 0.01))))
            except self._errors as exc:
                if not self._retryable(exc) or attempt >= attempts:
                    raise
                left = deadline - time.monotonic()
                if left <= backoff:
                    raise
            time.sleep(backoff)  # interrupted by a signal, its handler runs, then it ends
            backoff *= 2
            attempt += 1

    def _retryable(self, exc: Exception) -> bool:
        if isinstance(exc, self._refused):
            return False
        if isinstance(exc, self._api.GoogleAPICallError):
            return exc.code in _RETRIED_STATUS
        return isinstance(exc, self._transient)

    def _status(self, exc: Exception) -> int | None:
        if isinstance(exc, self._api.GoogleAPICallError):
            return exc.code
        return None

    def _fail(self, operation: str, key: str, exc: Exception) -> ObjectStoreError:
        status = self._status(exc)
        if isinstance(exc, self._api.GoogleAPICallError):
            first = exc.errors[0] if exc.errors and isinstance(exc.errors[0], dict) else {}
            detail = first.get("message") or (exc.message or "").split(":", 1)[0]
            text = f"{status} {type(exc).__name__}: {detail}"
        else:
            text = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        hint = _HINTS.get(status or 0, "")  # a 404 here: the bucket (objects 404 elsewhere)
        if isinstance(exc, self._refused):
            hint = f"could not get an access token: check {_KEY_FILE}"
        elif status is None and isinstance(exc, self._transient):
            emulator = os.environ.get(_EMULATOR)
            hint = (
                f"is the emulator at {_EMULATOR}={emulator!r} running?"
                if emulator
                else "no answer in time from storage.googleapis.com or the token endpoint"
            )
        msg = f"output_dir {self.location.uri!r}: {operation} of '{self.where(key)}' failed: {text}"
        return ObjectStoreError(f"{msg} ({hint})" if hint else msg)

    # -- the operations ---------------------------------------------------------------------
    def _upload(self, key: str, data: bytes, generation: int, operation: str) -> str | None:
        """Upload under ``ifGenerationMatch=generation``: the new generation, or None on 412
        (or 404: the object to swap is gone) unless the object is this very upload's."""
        put_id = secrets.token_hex(16)

        def upload(timeout: tuple[float, float]) -> str:
            blob = self._bucket.blob(key)
            blob.metadata = {PUT_ID_KEY: put_id}
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=generation,
                timeout=timeout,
                retry=None,
            )
            return str(blob.generation)

        try:
            return self._call(upload)
        except (self._api.PreconditionFailed, self._api.NotFound) as exc:
            if isinstance(exc, self._api.NotFound) and generation == 0:
                raise self._fail(operation, key, exc) from exc  # the bucket is missing
            return self._own_write(key, put_id)  # a lost answer: a retry met our own object
        except self._errors as exc:
            raise self._fail(operation, key, exc) from exc

    def put_new(self, key: str, data: bytes) -> str:
        generation = self._upload(key, data, 0, "upload (ifGenerationMatch=0)")
        if generation is None:
            raise ObjectExistsError(key)
        return generation

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        try:
            expected = int(etag)
        except ValueError:
            raise PreconditionError(key) from None
        generation = self._upload(key, data, expected, "upload (ifGenerationMatch)")
        if generation is None:
            raise PreconditionError(key)
        return generation

    def _own_write(self, key: str, put_id: str) -> str | None:
        """The object's generation when it carries ``put_id`` (this very upload landed)."""
        blob = self._get_blob(key)
        if blob is None or (blob.metadata or {}).get(PUT_ID_KEY) != put_id:
            return None
        return str(blob.generation)

    def _get_blob(self, key: str) -> t.Any:
        try:
            return self._call(
                lambda timeout: self._bucket.get_blob(key, timeout=timeout, retry=None)
            )
        except self._errors as exc:
            raise self._fail("get metadata", key, exc) from exc

    def get(self, key: str) -> StoredObject | None:
        for _ in range(objectstore._ATTEMPTS):
            blob = self._get_blob(key)
            if blob is None:
                return None
            now = _parse_date(getattr(self._seen, "date", None))

            def download(timeout: tuple[float, float], blob: t.Any = blob) -> bytes:
                return bytes(
                    blob.download_as_bytes(
                        if_generation_match=blob.generation, timeout=timeout, retry=None
                    )
                )

            try:
                data = self._call(download)
            except (self._api.PreconditionFailed, self._api.NotFound):
                continue  # rewritten or deleted between the two requests: look again
            except self._errors as exc:
                raise self._fail("download", key, exc) from exc
            modified = blob.updated or _utcnow()
            return StoredObject(data, str(blob.generation), modified, now)
        msg = f"output_dir {self.location.uri!r}: '{self.where(key)}' kept changing while read"
        raise ObjectStoreError(msg)

    def exists(self, key: str) -> bool:
        return self._get_blob(key) is not None

    def list_keys(self, prefix: str) -> list[str]:
        def listing(timeout: tuple[float, float]) -> list[str]:
            blobs = self._client.list_blobs(
                self._bucket, prefix=prefix, timeout=timeout, retry=None
            )
            return [blob.name for blob in blobs]

        try:
            return self._call(listing)
        except self._errors as exc:
            raise self._fail("list", prefix, exc) from exc

    def delete(self, keys: list[str]) -> None:
        for key in keys:

            def remove(timeout: tuple[float, float], key: str = key) -> None:
                self._bucket.delete_blob(key, timeout=timeout, retry=None)

            try:
                self._call(remove)
            except self._api.NotFound:
                continue  # gone already (or a retry after a lost answer)
            except self._errors as exc:
                raise self._fail("delete", key, exc) from exc

    def delete_if_match(self, key: str, etag: str) -> None:
        try:
            expected = int(etag)
        except ValueError:
            return

        def remove(timeout: tuple[float, float]) -> None:
            self._bucket.delete_blob(key, if_generation_match=expected, timeout=timeout, retry=None)

        try:
            self._call(remove)
        except (self._api.PreconditionFailed, self._api.NotFound):
            return  # not ours any more, or gone: leave it
        except self._errors as exc:
            raise self._fail("delete (ifGenerationMatch)", key, exc) from exc


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _parse_date(header: str | None) -> datetime.datetime:
    """The store's clock from its Date header (this machine's clock when there is none)."""
    if not header:
        return _utcnow()
    try:
        return email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return _utcnow()
