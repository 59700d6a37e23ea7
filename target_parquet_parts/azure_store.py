"""Azure Blob Storage (``az://container/prefix``, ``abfs[s]://container@account...``) with S3's
guarantees, through azure-storage-blob (the ``azure`` extra).

* **Conditional create**: every part, journal line and the lock are PUT with
  ``If-None-Match: *`` (``overwrite=False``): the service refuses (409 ``BlobAlreadyExists``) to
  replace an existing blob. **Compare-and-swap**: the lock's renewals and takeovers carry
  ``If-Match: <ETag>`` (``MatchConditions.IfNotModified``; 412 ``ConditionNotMet`` otherwise), and
  so does its release (a conditional delete).
* **A lost answer is not a refusal**: each conditional PUT writes an id of its own in the blob's
  metadata (``put_id``: Azure metadata names are C# identifiers, so not S3's ``put-id``). When
  the service applied a PUT whose answer was lost, the SDK's retry meets 409/412; the blob then
  carries this PUT's id, which is success (as ``S3ObjectStore._own_write``).
* **One request per part**: a part is uploaded with one Put Blob (``max_single_put_size`` above
  any part), never as staged blocks, so one deadline covers it.
* **Every request has a deadline**: connect and read timeouts and a few attempts with short
  linear back-off (``request_timeouts``, the S3 figures), and no retry that could not finish
  within the budget (80% of the lock lease for a writer).
* **Credentials Azure users already have**, from the environment:
  ``AZURE_STORAGE_CONNECTION_STRING`` (Azurite's too), or the account
  (``AZURE_STORAGE_ACCOUNT_NAME``/``AZURE_STORAGE_ACCOUNT``, or the one in an ``abfs://`` URI)
  with ``AZURE_STORAGE_ACCOUNT_KEY``/``AZURE_STORAGE_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``; with
  none of those, Microsoft Entra ID through ``azure-identity``'s ``DefaultAzureCredential`` when
  that package is installed. Nothing usable: the run fails at once with one line naming the
  variables to set; a wrong key, a missing container or an endpoint that does not answer fail
  within seconds, naming what to check.
* **SIGTERM and SIGINT stop a starting run at once**: until this store's first write landed (the
  lock's create), a stop signal on the main thread ends the run there (``128 + signal``), even in
  the middle of a request or a retry's back-off: there is nothing to flush yet. Later, the target's
  graceful stop applies (the request in progress ends within its deadline, then the flush).
"""

from __future__ import annotations

import datetime
import email.utils
import importlib
import logging
import os
import random
import secrets
import signal
import threading
import time
import typing as t
import weakref
from types import FrameType
from urllib.parse import urlsplit

from plugin_io.distribution import install_hint
from target_parquet_parts.objectstore import (
    _ATTEMPTS,
    ObjectExistsError,
    ObjectStore,
    ObjectStoreError,
    PreconditionError,
    StoredObject,
    request_timeouts,
)
from target_parquet_parts.storage import Location
from target_parquet_parts.threads import STOP_SIGNALS

__all__ = [
    "AZURE_SCHEMES",
    "AzureObjectStore",
    "arrow_azure_options",
    "azure_connection_settings",
    "parse_connection_string",
]

logger = logging.getLogger(__name__)

AZURE_SCHEMES = frozenset({"az", "abfs", "abfss"})
# Azure metadata names must be C# identifiers (no "-"); returned lower-case.
PUT_ID_METADATA = "put_id"
# One Put Blob per part (Put Blob takes up to 5000 MiB): never staged blocks, whose several
# requests one deadline would not bound.
_SINGLE_PUT_BYTES = 4 * 1024 * 1024 * 1024
_BACKOFF = 0.5  # seconds between attempts (plus up to as much jitter)
_CREDENTIAL_VARIABLES = (
    "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME (or the account in "
    "abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/...) with AZURE_STORAGE_ACCOUNT_KEY or "
    "AZURE_STORAGE_SAS_TOKEN"
)
_CREDENTIAL_HINT = (
    "check the credentials: the AccountKey or SharedAccessSignature in "
    "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN "
    "(expired? its permissions?), and the account name"
)
_HINTS = {
    "AuthenticationFailed": _CREDENTIAL_HINT,
    "AuthorizationFailure": "the credential may not do this (the SAS token's permissions, the "
    "role's data actions, the account's firewall)",
    "AuthorizationPermissionMismatch": "the credential may not do this (the SAS token's "
    "permissions or the role: writing needs read, write, create, delete and list)",
    "InvalidAuthenticationInfo": _CREDENTIAL_HINT,
    "NoAuthenticationInformation": f"no credentials: set {_CREDENTIAL_VARIABLES}",
    "ContainerNotFound": "the container does not exist (the target never creates containers)",
    "ResourceNotFound": "the container or account does not exist (the target never creates "
    "containers)",
    "InvalidResourceName": "not a valid container name (3 to 63 lower-case letters, digits and "
    "'-')",
    "OutOfRangeInput": "not a valid container name (3 to 63 lower-case letters, digits and '-')",
    "AccountIsDisabled": "the storage account is disabled",
}


def parse_connection_string(text: str) -> dict[str, str]:
    """``Key=Value;...`` as a dict (keys as written; values may hold ``=``)."""
    settings: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            settings[name.strip()] = value.strip()
    return settings


def _account_from_env(location: Location) -> str:
    return location.account or (
        os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        or os.environ.get("AZURE_STORAGE_ACCOUNT")
        or ""
    )


def azure_connection_settings(location: Location) -> dict[str, str]:
    """What the environment says about the account: ``account``, ``blob_endpoint``, ``key``,
    ``sas`` (each possibly empty) and ``source`` (which variables), or ``ObjectStoreError``
    naming the variables to set when it names no account or no usable credential form."""
    where = f"output_dir {location.uri!r}"
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
    if connection:
        fields = {k.lower(): v for k, v in parse_connection_string(connection).items()}
        if "usedevelopmentstorage" in fields:
            msg = (
                f"{where}: AZURE_STORAGE_CONNECTION_STRING 'UseDevelopmentStorage=true' is not "
                "supported: give Azurite's full connection string (AccountName, AccountKey, "
                "BlobEndpoint)"
            )
            raise ObjectStoreError(msg)
        account = fields.get("accountname", "")
        endpoint = fields.get("blobendpoint", "")
        if not account and endpoint:
            account = urlsplit(endpoint).netloc.split(".", 1)[0]
        if not account or not (fields.get("accountkey") or fields.get("sharedaccesssignature")):
            msg = (
                f"{where}: AZURE_STORAGE_CONNECTION_STRING needs AccountName (or BlobEndpoint) and "
                "AccountKey or SharedAccessSignature (copy it from the portal: Access keys)"
            )
            raise ObjectStoreError(msg)
        if location.account and location.account != account:
            msg = (
                f"{where}: the URI names the account '{location.account}' but "
                f"AZURE_STORAGE_CONNECTION_STRING is for '{account}': make them agree"
            )
            raise ObjectStoreError(msg)
        if not endpoint:
            protocol = fields.get("defaultendpointsprotocol", "https")
            suffix = fields.get("endpointsuffix", "core.windows.net")
            endpoint = f"{protocol}://{account}.blob.{suffix}"
        return {
            "account": account,
            "blob_endpoint": endpoint.rstrip("/"),
            "key": fields.get("accountkey", ""),
            "sas": fields.get("sharedaccesssignature", "").lstrip("?"),
            "source": "AZURE_STORAGE_CONNECTION_STRING",
        }
    account = _account_from_env(location)
    if not account:
        msg = f"{where}: no Azure storage account: set {_CREDENTIAL_VARIABLES}"
        raise ObjectStoreError(msg)
    key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or os.environ.get("AZURE_STORAGE_KEY") or ""
    sas = (os.environ.get("AZURE_STORAGE_SAS_TOKEN") or "").strip().lstrip("?")
    return {
        "account": account,
        "blob_endpoint": f"https://{account}.blob.core.windows.net",
        "key": key,
        "sas": sas,
        "source": "account key" if key else "SAS token" if sas else "",
    }


# -- SIGTERM / SIGINT while starting ----------------------------------------------------------
_starting: weakref.WeakSet[AzureObjectStore] = weakref.WeakSet()
_previous_handlers: dict[int, t.Any] = {}


class StoppedWhileStarting(SystemExit):
    """A stop signal before anything was written: the run ends at once with 128 + signal."""


def _stop_handler(signum: int, frame: FrameType | None) -> None:
    previous = _previous_handlers.get(signum)
    if callable(previous):
        previous(signum, frame)  # the target records the stop (and may stop on its own)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    starting = [store for store in list(_starting) if store.starting]
    if not starting:
        return
    name = signal.Signals(signum).name
    store = starting[0]
    doing = store.current or "starting"
    os.write(
        2,
        (
            f"target_stopped_by_signal signal={name} exit_code={128 + signum} during=start-up: "
            f"output_dir '{store.location.uri}': stopped while {doing} (nothing written yet)\n"
        ).encode(),
    )
    for waiting in starting:
        waiting.starting = False
    raise StoppedWhileStarting(128 + signum)


def _stop_at_once_while_starting(store: AzureObjectStore) -> None:
    """Chain our handler before the current ones (main thread only: Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _starting.add(store)
    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if current is _stop_handler:
            continue
        if current is None or current == signal.SIG_IGN:
            continue  # a signal the process ignores stays ignored
        _previous_handlers[signum] = current
        signal.signal(signum, _stop_handler)


class _DeadlineRetry:
    """Linear retries that never start an attempt which could not end within the budget."""

    @staticmethod
    def policy(budget_seconds: float, attempt_seconds: float) -> t.Any:
        from azure.storage.blob import LinearRetry  # noqa: PLC0415

        class DeadlineRetry(LinearRetry):
            def configure_retries(self, request: t.Any) -> dict[str, t.Any]:
                settings: dict[str, t.Any] = super().configure_retries(request)
                settings["deadline"] = time.monotonic() + budget_seconds
                return settings

            def get_backoff_time(self, settings: dict[str, t.Any]) -> float:
                return _BACKOFF + random.uniform(0, _BACKOFF)  # jitter

            def increment(self, settings: dict[str, t.Any], *args: t.Any, **kwargs: t.Any) -> bool:
                if not super().increment(settings, *args, **kwargs):
                    return False
                # the next attempt, back-off included, must end before the deadline
                left = settings["deadline"] - time.monotonic()
                return bool(left >= 2 * _BACKOFF + attempt_seconds)

        # get_backoff_time above decides the waits (LinearRetry's are whole seconds)
        return DeadlineRetry(backoff=1, random_jitter_range=1, retry_total=_ATTEMPTS - 1)


class AzureObjectStore(ObjectStore):
    """Azure Blob Storage through azure-storage-blob: conditional PUTs are atomic."""

    conditional = True

    def __init__(self, location: Location, request_budget_seconds: float | None = None) -> None:
        try:
            from azure.core import MatchConditions  # noqa: PLC0415  (optional: the extra)
            from azure.core.exceptions import AzureError, HttpResponseError  # noqa: PLC0415
            from azure.storage.blob import BlobServiceClient  # noqa: PLC0415
        except ImportError:
            msg = (
                f"output_dir {location.uri!r} needs azure-storage-blob (conditional PUTs): "
                f"{install_hint('azure')}"
            )
            raise ObjectStoreError(msg) from None
        self.location = location
        self.starting = True  # until the first write landed (see the module docstring)
        self.current = ""  # the request in progress, for the stop line
        self._match = MatchConditions
        self._errors: tuple[type[Exception], ...] = (AzureError,)
        self._http_error = HttpResponseError
        found = azure_connection_settings(location)
        connect, read = request_timeouts(request_budget_seconds)
        budget = (
            request_budget_seconds
            if request_budget_seconds is not None
            else _ATTEMPTS * (connect + read)
        )
        credential: t.Any
        if found["key"]:
            credential = {"account_name": found["account"], "account_key": found["key"]}
        elif found["sas"]:
            from azure.core.credentials import AzureSasCredential  # noqa: PLC0415

            credential = AzureSasCredential(found["sas"])
        else:
            credential = self._default_credential()
        quiet = logging.getLogger("azure")
        if quiet.level == logging.NOTSET:  # not the SDK's INFO lines for every request
            quiet.setLevel(logging.WARNING)
        self._client = BlobServiceClient(
            found["blob_endpoint"],
            credential=credential,
            connection_timeout=connect,
            read_timeout=read,
            retry_policy=_DeadlineRetry.policy(budget, connect + read),
            max_single_put_size=_SINGLE_PUT_BYTES,
        )
        self._container = self._client.get_container_client(location.bucket)
        _stop_at_once_while_starting(self)

    def _default_credential(self) -> t.Any:
        """Microsoft Entra ID (managed identity, workload identity, a service principal's
        AZURE_CLIENT_* variables) when azure-identity is installed; else name what to set."""
        try:
            identity = importlib.import_module("azure.identity")  # not in the extra
        except ImportError:
            msg = (
                f"output_dir {self.location.uri!r}: no Azure credentials: set "
                f"{_CREDENTIAL_VARIABLES} (or install azure-identity for Microsoft Entra ID)"
            )
            raise ObjectStoreError(msg) from None
        return identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)

    # -- errors ----------------------------------------------------------------------------
    def _code(self, exc: Exception) -> str:
        code = getattr(exc, "error_code", None)
        if code is not None:
            return str(getattr(code, "value", code))
        return ""

    def _status(self, exc: Exception) -> int | None:
        return getattr(exc, "status_code", None)

    def _fail(self, operation: str, key: str, exc: Exception) -> ObjectStoreError:
        code = self._code(exc)
        first = str(getattr(exc, "message", None) or exc).strip().splitlines()
        text = f"{code}: {first[0] if first else type(exc).__name__}" if code else ""
        if not text:
            text = f"{type(exc).__name__}: {first[0] if first else ''}"
        hint = _HINTS.get(code, "")
        if self._status(exc) == 403 and "authenticate" in text:
            hint = _CREDENTIAL_HINT  # a bad signature (Azurite calls it AuthorizationFailure)
        if not hint and self._status(exc) == 403:
            hint = _CREDENTIAL_HINT
        if not hint and type(exc).__name__ in ("ServiceRequestError", "ServiceRequestTimeoutError"):
            hint = (
                "is the endpoint right? (the account name, BlobEndpoint in "
                "AZURE_STORAGE_CONNECTION_STRING)"
            )
        if not hint and "Credential" in type(exc).__name__:
            hint = f"set {_CREDENTIAL_VARIABLES}"
        msg = f"output_dir {self.location.uri!r}: {operation} of '{self.where(key)}' failed: {text}"
        return ObjectStoreError(f"{msg} ({hint})" if hint else msg)

    def _doing(self, what: str) -> None:
        self.current = what

    def _wrote(self) -> None:
        self.starting = False
        self.current = ""

    # -- the operations ----------------------------------------------------------------------
    def put_new(self, key: str, data: bytes) -> str:
        put_id = secrets.token_hex(16)
        self._doing(f"creating '{self.where(key)}'")
        try:
            answer = self._container.get_blob_client(key).upload_blob(
                data, overwrite=False, metadata={PUT_ID_METADATA: put_id}
            )
        except self._errors as exc:
            if self._status(exc) in (409, 412):
                etag = self._own_write(key, put_id)
                if etag is not None:
                    self._wrote()
                    return etag  # our PUT landed; only its answer was lost (a retry met it)
                raise ObjectExistsError(key) from None
            raise self._fail("Put Blob (If-None-Match: *)", key, exc) from exc
        self._wrote()
        return str(answer["etag"])

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        put_id = secrets.token_hex(16)
        self._doing(f"replacing '{self.where(key)}'")
        try:
            answer = self._container.get_blob_client(key).upload_blob(
                data,
                overwrite=True,
                etag=etag,
                match_condition=self._match.IfNotModified,
                metadata={PUT_ID_METADATA: put_id},
            )
        except self._errors as exc:
            if self._status(exc) in (404, 409, 412):
                landed = self._own_write(key, put_id)
                if landed is not None:
                    self._wrote()
                    return landed  # our swap landed; only its answer was lost
                raise PreconditionError(key) from None
            raise self._fail("Put Blob (If-Match)", key, exc) from exc
        self._wrote()
        return str(answer["etag"])

    def _own_write(self, key: str, put_id: str) -> str | None:
        """The blob's ETag when it carries ``put_id`` (this very PUT landed), else None."""
        try:
            properties = self._container.get_blob_client(key).get_blob_properties()
        except self._errors as exc:
            if self._status(exc) == 404:
                return None
            raise self._fail("Get Blob Properties", key, exc) from exc
        if (properties.metadata or {}).get(PUT_ID_METADATA) != put_id:
            return None
        return str(properties.etag)

    def get(self, key: str) -> StoredObject | None:
        dates: list[str] = []

        def keep_date(response: t.Any) -> None:
            date = response.http_response.headers.get("Date")
            if date and not dates:
                dates.append(date)

        self._doing(f"reading '{self.where(key)}'")
        try:
            download = self._container.download_blob(key, raw_response_hook=keep_date)
            data = download.readall()
        except self._errors as exc:
            if self._status(exc) == 404 and self._code(exc) == "BlobNotFound":
                return None
            raise self._fail("Get Blob", key, exc) from exc
        properties = download.properties
        now = email.utils.parsedate_to_datetime(dates[0]) if dates else _utcnow()
        modified = properties.last_modified or now
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=datetime.UTC)
        return StoredObject(bytes(data), str(properties.etag), modified, now)

    def exists(self, key: str) -> bool:
        self._doing(f"looking for '{self.where(key)}'")
        try:
            self._container.get_blob_client(key).get_blob_properties()
        except self._errors as exc:
            if self._status(exc) == 404 and self._code(exc) in ("BlobNotFound", ""):
                return False
            raise self._fail("Get Blob Properties", key, exc) from exc
        return True

    def list_keys(self, prefix: str) -> list[str]:
        self._doing(f"listing '{self.where(prefix)}'")
        try:
            return list(self._container.list_blob_names(name_starts_with=prefix))
        except self._errors as exc:
            raise self._fail("List Blobs", prefix, exc) from exc

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self._container.delete_blob(key)
            except self._errors as exc:
                if self._status(exc) == 404 and self._code(exc) == "BlobNotFound":
                    continue
                raise self._fail("Delete Blob", key, exc) from exc

    def delete_if_match(self, key: str, etag: str) -> None:
        try:
            self._container.delete_blob(key, etag=etag, match_condition=self._match.IfNotModified)
        except self._errors as exc:
            if self._status(exc) in (404, 412):
                return  # not ours any more, or gone: leave it
            raise self._fail("Delete Blob (If-Match)", key, exc) from exc

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def arrow_azure_options(location: Location) -> dict[str, t.Any]:
    """pyarrow ``AzureFileSystem`` arguments from the same environment as the store (readers:
    reconcile, tests): the account, its key or SAS token (else Azure's default credential), and
    the endpoint of a connection string's ``BlobEndpoint`` (Azurite: ``http``, path-style)."""
    found = azure_connection_settings(location)
    options: dict[str, t.Any] = {"account_name": found["account"]}
    if found["key"]:
        options["account_key"] = found["key"]
    elif found["sas"]:
        options["sas_token"] = found["sas"]
    endpoint = urlsplit(found["blob_endpoint"])
    if endpoint.netloc != f"{found['account']}.blob.core.windows.net":
        host = endpoint.netloc
        # account.blob.<suffix> (another cloud) or an emulator's host:port/account (path-style)
        authority = host.split(".", 1)[1] if host.startswith(f"{found['account']}.") else host
        options.update(
            blob_storage_authority=authority,
            blob_storage_scheme=endpoint.scheme,
            dfs_storage_authority=authority.replace("blob.", "dfs.", 1),
            dfs_storage_scheme=endpoint.scheme,
        )
    return options
