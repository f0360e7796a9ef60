"""Blob, Queue and Table clients: one place that knows how to reach the storage account.

Locally (Azurite) a connection string; in Azure the account's service URLs with a
managed identity, never an account key. Queue messages are base64, which is what the
Functions queue trigger expects by default (host.json leaves ``messageEncoding`` alone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContentSettings, LinearRetry
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, QueueClient
from azure.storage.queue import LinearRetry as QueueLinearRetry

from . import telemetry
from .config import Settings, SettingsError, azurite_connection_string

# The SDKs retry transient failures themselves; these bound how long a request may hang.
_TIMEOUTS = {"connection_timeout": 10, "read_timeout": 60}


def _retries(settings: Settings, kind: str) -> dict:
    """A short retry budget (STORAGE_RETRY_*): the blob and queue SDKs' own default waits
    15 s, 18 s and 24 s between attempts, so an outage held an upload for over a minute
    before it could answer 503. Now a request gives up within a few seconds and the
    caller (HTTP client, queue redelivery) retries later."""
    total, backoff = settings.storage_retry_total, settings.storage_retry_backoff
    if kind == "table":
        return {"retry_total": total, "retry_backoff_factor": backoff, "retry_backoff_max": max(backoff * 4, 1.0)}
    policy = LinearRetry if kind == "blob" else QueueLinearRetry
    return {"retry_policy": policy(backoff=backoff, retry_total=total, random_jitter_range=backoff / 2)}


def _connection_string(settings: Settings) -> str:
    raw = settings.storage_connection_string
    # The Functions tooling's shorthand; the Tables SDK does not understand it.
    return azurite_connection_string() if raw.strip().lower() == "usedevelopmentstorage=true" else raw


def _credential(settings: Settings):
    """``AzureWebJobsStorage__clientId`` names the user-assigned managed identity (the host's
    own rule): that identity and nothing else, with no fall-back chain to try first or after.
    Without it, DefaultAzureCredential (a system-assigned identity, or a developer's sign-in)."""
    if settings.managed_identity_client_id:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


@dataclass
class Storage:
    """Lazily-built clients for one storage account, shared by the API and the worker."""

    settings: Settings

    def __post_init__(self) -> None:
        s = self.settings
        if s.storage_connection_string:
            return
        uris = {"blob": s.blob_service_uri, "queue": s.queue_service_uri, "table": s.table_service_uri}
        if not (s.storage_account_name or any(uris.values())):
            raise SettingsError(
                "storage is not configured: set AzureWebJobsStorage to a connection string "
                "(UseDevelopmentStorage=true for Azurite) or AzureWebJobsStorage__accountName"
            )
        missing = [kind for kind, uri in uris.items() if not uri]
        if missing and not s.storage_account_name:
            # Every service is used (blobs, the queue, the jobs table): one URI alone is not enough.
            raise SettingsError("set AzureWebJobsStorage__accountName or " + ", ".join(
                f"AzureWebJobsStorage__{kind}ServiceUri" for kind in missing))

    def _service_url(self, kind: str, explicit: str) -> str:
        return explicit or f"https://{self.settings.storage_account_name}.{kind}.core.windows.net"

    @cached_property
    def _identity(self):
        return _credential(self.settings)

    @cached_property
    def blobs(self) -> BlobServiceClient:
        if self.settings.storage_connection_string:
            return BlobServiceClient.from_connection_string(
                _connection_string(self.settings), **_TIMEOUTS, **_retries(self.settings, "blob")
            )
        return BlobServiceClient(
            self._service_url("blob", self.settings.blob_service_uri), self._identity, **_TIMEOUTS,
            **_retries(self.settings, "blob"),
        )

    @cached_property
    def tables(self) -> TableServiceClient:
        if self.settings.storage_connection_string:
            return TableServiceClient.from_connection_string(
                _connection_string(self.settings), **_retries(self.settings, "table")
            )
        return TableServiceClient(
            self._service_url("table", self.settings.table_service_uri), credential=self._identity,
            **_retries(self.settings, "table"),
        )

    def queue(self, name: str) -> QueueClient:
        # The service client does not hand its encode policy on to get_queue_client(), so
        # each queue client is built with the codec itself.
        codec = {"message_encode_policy": BinaryBase64EncodePolicy(), "message_decode_policy": BinaryBase64DecodePolicy(),
                 **_retries(self.settings, "queue")}
        if self.settings.storage_connection_string:
            return QueueClient.from_connection_string(_connection_string(self.settings), name, **codec, **_TIMEOUTS)
        url = self._service_url("queue", self.settings.queue_service_uri)
        return QueueClient(url, name, credential=self._identity, **codec, **_TIMEOUTS)

    @cached_property
    def jobs_queue(self) -> QueueClient:
        return self.queue(self.settings.jobs_queue)

    @cached_property
    def poison_queue(self) -> QueueClient:
        return self.queue(self.settings.poison_queue)

    @cached_property
    def webhooks_queue(self) -> QueueClient:
        """Webhook deliveries: a queue of their own, so a slow receiver never delays a job."""
        return self.queue(self.settings.webhooks_queue)

    def container(self, name: str):
        return self.blobs.get_container_client(name)

    # -- blobs ------------------------------------------------------------------------

    def put_blob(self, container: str, name: str, data: bytes, content_type: str) -> None:
        self.container(container).upload_blob(
            name, data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
        )

    def get_blob(self, container: str, name: str) -> bytes:
        return self.container(container).download_blob(name).readall()

    def delete_prefix(self, container: str, prefix: str) -> int:
        client = self.container(container)
        names = [blob.name for blob in client.list_blobs(name_starts_with=prefix)]
        for name in names:
            self.delete_blob(container, name)
        return len(names)

    def delete_blob(self, container: str, name: str) -> None:
        """Gone already is fine: a DELETE and a worker cleaning up after it may both remove
        the same job's blobs, in either order."""
        try:
            self.container(container).delete_blob(name, delete_snapshots="include")
        except ResourceNotFoundError:
            pass

    # -- queue ------------------------------------------------------------------------

    def enqueue_job(self, job_id: str) -> None:
        with telemetry.producing(self.settings.jobs_queue, job_id) as carried:
            self.jobs_queue.send_message(encode_job_message(job_id, carried))

    def ensure_resources(self) -> None:
        """Create containers, queues and the table if absent (Azurite, first local run).
        In Azure the Bicep template creates them and this is a no-op."""
        for name in (self.settings.uploads_container, self.settings.results_container):
            _ignore_exists(self.container(name).create_container)
        for client in (self.jobs_queue, self.poison_queue, self.webhooks_queue):
            _ignore_exists(client.create_queue)
        self.tables.create_table_if_not_exists(self.settings.jobs_table)


def _ignore_exists(create) -> None:
    try:
        create()
    except ResourceExistsError:
        pass


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    # The trace context (W3C traceparent) and send time the message carries; messages from
    # before telemetry carry neither.
    context: dict[str, str] = field(default_factory=dict)

    @property
    def enqueued_at(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.context["enqueued_at"])
        except (KeyError, TypeError, ValueError):
            return None


def encode_job_message(job_id: str, context: dict[str, str] | None = None) -> bytes:
    """The queue message: the job id (claim check) and its trace context, as JSON bytes; the
    queue client base64-encodes it on the wire."""
    return json.dumps({"job_id": job_id, **(context or {})}).encode()


def decode_job_message(body: bytes | str) -> JobMessage:
    """The message from a body (already base64-decoded by the client or the host). Raises
    ValueError for anything that is not our message."""
    try:
        payload = json.loads(body)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise ValueError("queue message is not JSON") from None
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("queue message has no job_id")
    context = {key: value for key, value in payload.items() if key != "job_id" and isinstance(value, str)}
    return JobMessage(job_id, context)
