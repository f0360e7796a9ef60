"""Webhooks: a signed POST to the caller's URL when a job (or batch) starts or ends.

Replicate's model: ``webhook`` and a filter of events on the submission; the body is the job
(or batch) as GET returned it when the event happened. Signed per Standard Webhooks
(standardwebhooks.com): headers ``webhook-id`` (the same on every retry, so receivers dedupe on
it), ``webhook-timestamp`` (unix seconds of the attempt) and ``webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed with the bytes of the ``whsec_`` secret.

Each event a job asked for becomes a delivery row beside the job's row (same partition,
RowKey ``webhook-<event>``): inserted once (ResourceExistsError says it already was), then given
the body as of the event (a ``start`` delivered late still says running, and every retry of one
webhook-id sends the same bytes), then a message on the webhooks queue. Whoever takes that
message (the polling worker's thread, or the queue-triggered function) makes one attempt and
records it on the row; a failed attempt is retried by a new message sent invisible for the next
delay (five tries over about an hour).

Server-side request forgery: a target must be https to an address on the public internet,
checked when the job is submitted and again, after resolving the name, when each call is made;
the connection goes to the address that was checked (no second lookup that could answer
otherwise), TLS still verifies the certificate against the host name, redirects are not
followed, timeouts are short and the receiver's answer is not kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from ..config import Settings, secret_bytes
from ..storage import Storage
from .batches import BatchNotFound
from .options import InvalidOption
from .records import TERMINAL, Job, JobNotFound, utcnow

if TYPE_CHECKING:  # the service builds on this module (deliveries, checks); this one only uses its repositories
    from .service import JobService

log = logging.getLogger(__name__)

JOB_EVENTS = ("start", "completed")
# A batch: its own start (its first job starts) and end (its last job ends), and, when asked,
# each of its jobs' (the body is then that job).
BATCH_EVENTS = ("start", "completed", "job_start", "job_completed")
DEFAULT_EVENTS = ("completed",)
ROW_PREFIX = "webhook-"
MAX_URL = 2048
# Addresses that answer for the platform (instance metadata, Azure's host agent) whatever the
# network they sit in: never a target, even with WEBHOOK_ALLOW_PRIVATE.
METADATA = frozenset(map(ipaddress.ip_address, ("169.254.169.254", "168.63.129.16", "fd00:ec2::254")))

# A body is kept on its delivery row up to this size (a Table property holds 64 KiB); a larger
# one (a batch of hundreds of jobs) is rendered again at each attempt.
MAX_KEPT_BODY = 60_000

PENDING, RETRYING, DELIVERED, FAILED, REFUSED = "pending", "retrying", "delivered", "failed", "refused"
FINAL = frozenset({DELIVERED, FAILED, REFUSED})


@dataclass(frozen=True)
class WebhookRequest:
    url: str
    events: tuple[str, ...]


def requested(url: str | None, events: str | None, allowed: tuple[str, ...], allow_private: bool) -> WebhookRequest | None:
    """The submission's ``webhook`` and ``webhook_events`` (comma-separated, default
    ``completed``), checked; None when no webhook was asked for. Raises InvalidOption."""
    if not url:
        if events:
            raise InvalidOption("webhook_events", "webhook_events needs a webhook URL")
        return None
    names = tuple(dict.fromkeys(part.strip() for part in (events or "").split(",") if part.strip())) or DEFAULT_EVENTS
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise InvalidOption("webhook_events", f"unknown event {unknown[0]!r}: choose from {', '.join(allowed)}")
    try:
        check_target(url, allow_private)
    except TargetRefused as refused:
        raise InvalidOption("webhook", str(refused)) from None
    return WebhookRequest(url, names)


# -- targets ---------------------------------------------------------------------------


class NoWebhookSecret(LookupError):
    """There is no secret to sign this caller's webhooks with."""


class TargetRefused(ValueError):
    """Not a URL the service will call; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked address the connection goes to


def address_problem(address: str, allow_private: bool) -> str | None:
    """Why the service must not connect to ``address``; None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast:
        return "an unspecified or multicast address"
    if ip.is_global or allow_private:
        return None
    kind = ("a loopback" if ip.is_loopback else "a link-local" if ip.is_link_local
            else "a private" if ip.is_private else "a reserved")
    return f"{kind} address"


def check_target(url: str, allow_private: bool) -> Target:
    """Where a call to ``url`` would go: https (http too with ``allow_private``), a host that
    resolves only to public addresses. Raises TargetRefused."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise TargetRefused(f"not a URL: {error}") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefused("must be an https:// URL")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise TargetRefused("must name a host, without a user name or password")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise TargetRefused(f"{parts.hostname} does not resolve") from None
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    # Every address the name has must be allowed: a name that resolves to a public and a
    # private address could be answered either way on the next lookup.
    for address in addresses:
        problem = address_problem(address, allow_private)
        if problem:
            raise TargetRefused(f"{parts.hostname} resolves to {address}, {problem}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address already checked, verifying the certificate (and sending SNI) for
    the host name: http.client would look the name up again when it connects."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext):
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float,
         context: ssl.SSLContext | None = None) -> int:
    """One POST to ``target``; its status (a redirect is an answer, not followed). The
    receiver's body is read only to finish the exchange (at most 64 KB) and dropped."""
    if target.scheme == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPS(target, timeout, context or ssl.create_default_context())
    else:
        connection = _PinnedHTTP(target, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        connection.close()


# -- signing ----------------------------------------------------------------------------


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = secret_bytes(secret)
    if key is None:
        raise ValueError("not a whsec_ secret")
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "user-agent": "face-restoration-webhooks/1",
            "webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, webhook_id, timestamp, body)}


# -- deliveries -------------------------------------------------------------------------


@dataclass
class Delivery:
    """One event of one job or batch, and what became of its calls."""

    subject: str  # the job's or batch's id
    event: str
    kind: str  # job | batch: what the body is
    url: str
    owner: str  # whose secret signs it
    webhook_id: str = field(default_factory=lambda: "msg_" + secrets.token_hex(12))
    status: str = PENDING
    attempts: int = 0
    last_status: int | None = None  # the receiver's HTTP status
    last_error: str = ""
    created_at: datetime = field(default_factory=utcnow)
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    body: bytes | None = None  # the event's body, rendered when it was scheduled


_DELIVERY_FIELDS = [f.name for f in fields(Delivery) if f.name not in ("subject", "event")]
# What the views and the sweep read: everything but the body.
_SUMMARY = ["PartitionKey", "RowKey", *(name for name in _DELIVERY_FIELDS if name != "body")]


def _from_row(row) -> Delivery:
    values = {name: row[name] for name in _DELIVERY_FIELDS if name in row}
    for name in ("created_at", "last_attempt_at", "next_attempt_at"):
        if isinstance(values.get(name), datetime) and values[name].tzinfo is None:
            values[name] = values[name].replace(tzinfo=timezone.utc)
    if "last_status" in values and values["last_status"] is not None:
        values["last_status"] = int(values["last_status"])
    if values.get("body") is not None:
        values["body"] = bytes(values["body"])
    return Delivery(subject=row["PartitionKey"], event=row["RowKey"][len(ROW_PREFIX):], **values)


class Deliveries:
    """The delivery rows, beside their job's (or batch's) row in the jobs table."""

    def __init__(self, table: TableClient):
        self.table = table

    @staticmethod
    def _entity(delivery: Delivery) -> dict[str, Any]:
        entity = {"PartitionKey": delivery.subject, "RowKey": ROW_PREFIX + delivery.event}
        entity.update({name: value for name, value in asdict(delivery).items()
                       if name in _DELIVERY_FIELDS and value is not None})
        return entity

    def create(self, delivery: Delivery) -> bool:
        """Insert if absent: False when this event of this subject was scheduled already."""
        try:
            self.table.create_entity(self._entity(delivery))
        except ResourceExistsError:
            return False
        return True

    def get(self, subject: str, event: str) -> Delivery | None:
        try:
            return _from_row(self.table.get_entity(subject, ROW_PREFIX + event))
        except ResourceNotFoundError:
            return None

    def save(self, delivery: Delivery) -> None:
        self.table.upsert_entity(self._entity(delivery), mode=UpdateMode.REPLACE)

    def of(self, subject: str) -> list[Delivery]:
        rows = self.table.query_entities(
            "PartitionKey eq @subject and RowKey ge @first and RowKey lt @past",
            parameters={"subject": subject, "first": ROW_PREFIX, "past": ROW_PREFIX[:-1] + "."}, select=_SUMMARY)
        return sorted((_from_row(row) for row in rows), key=lambda delivery: delivery.created_at)

    def unfinished(self) -> list[Delivery]:
        """Every delivery still to be made (pending, or waiting for a retry), of every job."""
        rows = self.table.query_entities(
            "RowKey ge @first and RowKey lt @past and (status eq @pending or status eq @retrying )",
            parameters={"first": ROW_PREFIX, "past": ROW_PREFIX[:-1] + ".", "pending": PENDING, "retrying": RETRYING},
            select=_SUMMARY)
        return [_from_row(row) for row in rows]

    def delete_of(self, subject: str) -> None:
        for delivery in self.of(subject):
            try:
                self.table.delete_entity(subject, ROW_PREFIX + delivery.event)
            except ResourceNotFoundError:
                pass


def encode_message(subject: str, event: str) -> bytes:
    return json.dumps({"webhook": subject, "event": event}).encode()


def decode_message(body: bytes | str) -> tuple[str, str]:
    try:
        payload = json.loads(body)
        return str(payload["webhook"]), str(payload["event"])
    except (TypeError, ValueError, KeyError, UnicodeDecodeError):
        raise ValueError("not a webhook message") from None


class Webhooks:
    """Schedules the calls a job or batch asked for, and makes them.

    ``secret_for(owner)`` is the signing secret for a job's owner (an API key's own, or the
    service's), None when there is none; ``render(kind, id)`` is the body: the job or batch
    view as GET answers it, None when it is gone. Both come from the entry points, which know
    the API's views and the key table."""

    def __init__(self, service: JobService, secret_for: Callable[[str], str | None],
                 render: Callable[[str, str], bytes | None], context: ssl.SSLContext | None = None):
        self.settings: Settings = service.settings
        self.storage: Storage = service.storage
        self.jobs, self.batches, self.deliveries = service.jobs, service.batches, service.deliveries
        self.secret_for = secret_for
        self.render = render
        self.context = context  # the TLS trust a test puts in; the system's otherwise

    # -- scheduling (the worker, when a job starts and ends) -------------------------------

    def job_started(self, job: Job) -> None:
        self._events(job, "start")

    def job_ended(self, job_id: str) -> None:
        try:
            job = self.jobs.get(job_id)
        except JobNotFound:
            return
        self._events(job, "completed")

    def _events(self, job: Job, event: str) -> None:
        """Never fails the job: a delivery that could not be scheduled is logged."""
        try:
            if job.webhook and event in job.webhook_events:
                self.schedule(job.id, "job", event, job.webhook, job.owner)
            if job.batch_id:
                self._batch_event(job, event)
        except Exception as error:  # noqa: BLE001
            log.error("job %s: webhook %s not scheduled (%s)", job.id, event, error.__class__.__name__)

    def _batch_event(self, job: Job, event: str) -> None:
        try:
            batch = self.batches.get(job.batch_id)
        except BatchNotFound:
            return
        if not batch.webhook or event not in batch.webhook_events:
            return
        if event == "completed" and not all(member.status in TERMINAL for member in self.jobs.in_batch(batch.id)):
            return
        # Two workers ending a batch's last two jobs may both get here; the row is made once.
        self.schedule(batch.id, "batch", event, batch.webhook, batch.owner)

    def schedule(self, subject: str, kind: str, event: str, url: str, owner: str) -> bool:
        delivery = Delivery(subject=subject, event=event, kind=kind, url=url, owner=owner)
        if not self.deliveries.create(delivery):
            return False
        # Rendered once the row exists, so the body lists this delivery (a receiver finds the
        # event behind the webhook-id there). A process that dies before saving it leaves the
        # delivery to render its body when it is made.
        body = self.render(kind, subject)
        if body is not None and len(body) <= MAX_KEPT_BODY:
            delivery.body = body
            self.deliveries.save(delivery)
        self.storage.webhooks_queue.send_message(encode_message(subject, event))
        return True

    def requeue_stale(self, grace: timedelta = timedelta(minutes=10)) -> int:
        """The timer's sweep: a delivery whose message was lost (its process died between
        writing the row and sending the message, or between an attempt and its retry's
        message) is sent again once it is ``grace`` overdue. A duplicate message costs at
        most a duplicate call, with the same webhook-id."""
        overdue = utcnow() - grace
        stale = [d for d in self.deliveries.unfinished() if (d.next_attempt_at or d.created_at) < overdue]
        for delivery in stale:
            self.storage.webhooks_queue.send_message(encode_message(delivery.subject, delivery.event))
        if stale:
            log.warning("re-sent %d webhook deliveries whose message was lost", len(stale))
        return len(stale)

    # -- delivering (one message: one attempt) ------------------------------------------

    def deliver(self, body: bytes | str) -> str:
        """One attempt for a webhook message; what became of it (``delivered``, ``retrying``,
        ``failed``, ``refused``, ``dropped``). Raises only when storage fails (the message
        then comes back)."""
        try:
            subject, event = decode_message(body)
        except ValueError:
            log.error("dropping a malformed webhook message")
            return "dropped"
        delivery = self.deliveries.get(subject, event)
        if delivery is None or delivery.status in FINAL:
            return "dropped"  # its job is gone, or a duplicate message
        payload = delivery.body or self.render(delivery.kind, subject)
        if payload is None:
            return "dropped"
        delivery.attempts += 1
        delivery.last_attempt_at, delivery.next_attempt_at = utcnow(), None
        delivery.last_status, delivery.last_error = None, ""
        secret = self.secret_for(delivery.owner)
        try:
            if secret is None:
                raise TargetRefused("there is no secret to sign it with (WEBHOOK_SECRET is not set)")
            target = check_target(delivery.url, self.settings.webhook_allow_private)
        except TargetRefused as refused:
            delivery.status, delivery.last_error = REFUSED, str(refused)
            self.deliveries.save(delivery)
            log.warning("webhook %s %s refused: %s", subject, event, refused)
            return REFUSED
        headers = signed_headers(secret, delivery.webhook_id, int(time.time()), payload)
        try:
            delivery.last_status = post(target, payload, headers, self.settings.webhook_timeout_seconds, self.context)
            if not 200 <= delivery.last_status < 300:
                delivery.last_error = f"the receiver answered {delivery.last_status}"
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, TLS
            delivery.last_error = f"{error.__class__.__name__}: {error}"[:300]
        if not delivery.last_error:
            delivery.status = DELIVERED
        else:
            delays = self.settings.webhook_retry_delays
            if delivery.attempts <= len(delays):
                delay = delays[delivery.attempts - 1]
                delivery.status, delivery.next_attempt_at = RETRYING, utcnow() + timedelta(seconds=delay)
                self.deliveries.save(delivery)
                self.storage.webhooks_queue.send_message(encode_message(subject, event), visibility_timeout=delay)
                log.info("webhook %s %s: attempt %d failed (%s); again in %d s", subject, event,
                         delivery.attempts, delivery.last_error, delay)
                return RETRYING
            delivery.status = FAILED
        self.deliveries.save(delivery)
        log.info("webhook %s %s: %s after %d attempts", subject, event, delivery.status, delivery.attempts)
        return delivery.status
