"""Jobs: the record, its state machine, and the repository over Table Storage.

Every transition is a conditional update on the row's ETag, so two workers, a retried
message or a crashed worker can never produce two results or lose one: whoever loses
the race re-reads the row and sees what happened.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EntityProperty, TableClient, UpdateMode

from .. import telemetry

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
# Which transitions exist; anything else is a bug or a lost race.
TRANSITIONS = {
    QUEUED: {RUNNING, FAILED, CANCELLED},
    RUNNING: {RUNNING, SUCCEEDED, FAILED, CANCELLED},  # running -> running: a takeover
    SUCCEEDED: set(),
    FAILED: set(),
    CANCELLED: set(),
}
ROW_KEY = "job"
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
CORRUPT_JOB = "corrupt_job"
# What a repaired record names as owner when its owner could not be read: no caller is this
# (owners are "key:..." or "user:..."), so the job is found by nobody rather than by everybody.
UNREADABLE_OWNER = "unreadable:"
log = logging.getLogger(__name__)


class JobNotFound(LookupError):
    pass


class LeaseLost(RuntimeError):
    """Another worker took the job over (or it was deleted) while this one ran it."""


class InvalidTransition(RuntimeError):
    pass


def new_job_id() -> str:
    return secrets.token_hex(16)  # 128 random bits: the id is the capability to read the job


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.match(value))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Job:
    id: str
    status: str = QUEUED
    stage: str = "queued"
    progress: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    filename: str = ""  # for display and download names only, never a path
    input_blob: str = ""
    input_width: int = 0
    input_height: int = 0
    input_format: str = ""
    input_profile: str = ""  # the name of the colour profile the upload carried, converted to sRGB; "" for none
    result_blob: str = ""
    result_content_type: str = ""
    result_width: int = 0
    result_height: int = 0
    face_count: int | None = None
    faces: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""
    error_code: str = ""
    attempts: int = 0
    lease_owner: str = ""
    lease_until: datetime | None = None
    owner: str = ""  # who submitted it (API key id or principal), "" when anonymous
    batch_id: str = ""
    batch_index: int = 0
    # False while a batch job waits for its turn: batches feed the queue a few at a time.
    enqueued: bool = True
    preprocessing: list[str] = field(default_factory=list)
    tone: str = ""  # what the engine read from the photo: monochrome | toned | colour
    webhook: str = ""  # the URL to call (processing/jobs/webhooks.py), "" for none
    webhook_events: list[str] = field(default_factory=list)  # start, completed
    precision: str = ""  # what the networks computed in (f32 | bf16), as the runtime reported; "" if none ran
    etag: str | None = field(default=None, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def lease_expired(self, now: datetime) -> bool:
        return self.lease_until is None or self.lease_until <= now


_JSON_FIELDS = {"options", "faces", "timings", "preprocessing", "webhook_events"}
_NOT_STORED = {"id", "etag"}
_STORED = [f.name for f in fields(Job) if f.name not in _NOT_STORED]


def _types(hint) -> tuple[type, ...]:
    """The classes a field's annotation allows: ``datetime | None`` -> (datetime, NoneType)."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(typing.get_origin(member) or member for member in members)


_EXPECTED = {name: _types(hint) for name, hint in typing.get_type_hints(Job).items() if name in _STORED}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What a field must hold beyond its type, for the job to be shown and moved on.
_CHECKS = {
    "status": lambda value: value in TRANSITIONS,
    "progress": lambda value: 0.0 <= value <= 1.0,
    "faces": lambda value: all(isinstance(face, dict) and _number(face.get("score")) and isinstance(face.get("box"), list)
                               and len(face["box"]) == 4 and all(map(_number, face["box"])) for face in value),
    "timings": lambda value: all(isinstance(key, str) and _number(seconds) for key, seconds in value.items()),
    "preprocessing": lambda value: all(isinstance(step, str) for step in value),
    "webhook_events": lambda value: all(isinstance(event, str) for event in value),
}


def to_entity(job: Job) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": job.id, "RowKey": ROW_KEY}
    for name, value in asdict(job).items():
        if name in _NOT_STORED or value is None:
            continue
        entity[name] = json.dumps(value) if name in _JSON_FIELDS else value
    return entity


def _read_field(name: str, raw: Any) -> Any:
    """One stored property as the job holds it; ValueError if it is not what the field holds."""
    value = raw.value if isinstance(raw, EntityProperty) else raw  # Int64 comes back wrapped
    expected = _EXPECTED[name]
    if name in _JSON_FIELDS:
        value = json.loads(value) if value else expected[0]()
    elif isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    elif float in expected and _number(value):
        value = float(value)
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise ValueError(f"{name} holds a {type(value).__name__}")
    if not _CHECKS.get(name, lambda value: True)(value):
        raise ValueError(f"{name} holds {str(value)[:40]!r}")
    return value


def _etag(entity: Any) -> str | None:
    return (getattr(entity, "metadata", {}) or {}).get("etag")


def from_entity(entity: dict[str, Any]) -> Job:
    """The job a row holds. ValueError or TypeError when any property is damaged (written by
    hand, by another version, or by a bug): not the type its field holds, JSON that does not
    parse, a status that does not exist."""
    values = {name: _read_field(name, entity[name]) for name in _STORED if name in entity}
    return Job(id=entity["PartitionKey"], etag=_etag(entity), **values)


def salvage(entity: dict[str, Any], reason: str) -> Job:
    """A damaged row as a failed job: every property that still reads is kept, the rest take
    their defaults; an unreadable owner makes the job nobody's (never everybody's)."""
    values: dict[str, Any] = {}
    for name in _STORED:
        if name in entity:
            try:
                values[name] = _read_field(name, entity[name])
            except (ValueError, TypeError):
                if name == "owner":
                    values[name] = UNREADABLE_OWNER
    job = Job(id=entity["PartitionKey"], etag=_etag(entity), **values)
    now = utcnow()
    job.status, job.stage, job.error_code, job.error = FAILED, "failed", CORRUPT_JOB, reason
    job.lease_owner, job.lease_until = "", None
    job.finished_at = job.updated_at = now
    job.expires_at = job.expires_at or now  # no retention to go by: the next purge takes it
    return job


def _ended(job: Job) -> None:
    """Every job's end passes here (finish, fail): counted by outcome and error code."""
    seconds = (job.finished_at - job.created_at).total_seconds() if job.finished_at else None
    telemetry.job_ended(job.status, job.error_code, seconds)


class JobRepository:
    def __init__(self, table: TableClient):
        self.table = table

    # -- reads --------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        while True:
            try:
                entity = self.table.get_entity(job_id, ROW_KEY)
            except ResourceNotFoundError:
                raise JobNotFound(job_id) from None
            job = self._read(entity)
            if job is not None:
                return job

    def query(self, filter_: str, parameters: dict[str, Any] | None = None) -> Iterator[Job]:
        for entity in self.table.query_entities(filter_, parameters=parameters or {}):
            job = self._read(entity)
            if job is None:  # repaired by someone else meanwhile, or deleted
                try:
                    job = self.get(entity["PartitionKey"])
                except JobNotFound:
                    continue
            yield job

    def _read(self, entity) -> Job | None:
        """The row as a job. A damaged row is repaired on the spot: it becomes a failed job
        (``corrupt_job``) keeping whatever still reads, so every reader (the API, the owner
        check, the worker, the timer) sees a job that ended with a reason instead of an
        error, and the timer's sweeps do not stop at it. None when the row changed or went
        away while it was repaired (read it again)."""
        try:
            return from_entity(entity)
        except (ValueError, TypeError) as damage:
            job_id = entity["PartitionKey"]
            log.error("job %s: its record is damaged (%s); marking it failed", job_id, damage)
        job = salvage(entity, "the job's record was damaged; please submit the photo again")
        try:
            metadata = self.table.update_entity(to_entity(job), mode=UpdateMode.REPLACE, etag=job.etag,
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        job.etag = metadata.get("etag")
        _ended(job)
        return job

    def queue_position(self, job: Job, limit: int = 1000) -> int:
        """1 for the next job to run. Counts queued jobs created earlier (a bounded scan;
        Table Storage has no secondary indexes, and the queue holds only ids)."""
        ahead = self.table.query_entities(
            "RowKey eq 'job' and status eq @queued and enqueued eq true and created_at lt @created",
            parameters={"queued": QUEUED, "created": job.created_at},
            select=["PartitionKey"],
            results_per_page=limit,
        )
        count = 0
        for _ in ahead:
            count += 1
            if count >= limit:
                break
        return count + 1

    def expired(self, now: datetime) -> Iterator[Job]:
        return self.query("RowKey eq 'job' and expires_at lt @now", {"now": now})

    def stale(self, queued_before: datetime, lease_before: datetime) -> Iterator[Job]:
        """Queued jobs nobody picked up, and running jobs whose lease ran out long ago:
        their message may be gone, so the sweeper re-enqueues them."""
        # The SDK substitutes @names split on whitespace: "@name)" would not be found, so
        # every parameter is followed by a space.
        return self.query(
            "RowKey eq 'job' and ((status eq @queued and enqueued eq true and created_at lt @queued_before )"
            " or (status eq @running and lease_until lt @lease_before ))",
            {"queued": QUEUED, "running": RUNNING, "queued_before": queued_before, "lease_before": lease_before},
        )

    # -- writes -------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        job.status, job.stage = QUEUED, "queued"
        metadata = self.table.create_entity(to_entity(job))
        job.etag = metadata.get("etag")
        return job

    def save(self, job: Job, new_status: str | None = None) -> Job:
        """Write ``job`` if nobody changed the row since it was read (ETag), moving it to
        ``new_status`` if given. Raises ResourceModifiedError when the race is lost and
        JobNotFound when the row is gone."""
        if new_status is not None:
            if new_status not in TRANSITIONS[job.status]:
                raise InvalidTransition(f"{job.status} -> {new_status}")
            job.status = new_status
        job.updated_at = utcnow()
        try:
            metadata = self.table.update_entity(
                to_entity(job), mode=UpdateMode.REPLACE, etag=job.etag, match_condition=MatchConditions.IfNotModified
            )
        except ResourceNotFoundError:
            raise JobNotFound(job.id) from None
        job.etag = metadata.get("etag")
        return job

    def claim(self, job_id: str, worker: str, lease: timedelta) -> Job | None:
        """Take the job for ``worker``: queued -> running, or a takeover of a running job
        whose lease ran out. None when there is nothing to do (terminal, or another worker
        holds a live lease)."""
        while True:
            job = self.get(job_id)
            now = utcnow()
            if job.terminal:
                return None
            if job.status == RUNNING and not job.lease_expired(now) and job.lease_owner != worker:
                return None
            job.attempts += 1
            job.lease_owner, job.lease_until = worker, now + lease
            job.started_at = job.started_at or now
            job.stage, job.progress = "starting", 0.0
            job.error = job.error_code = ""
            try:
                return self.save(job, RUNNING)
            except ResourceModifiedError:
                continue  # someone else moved it; look again

    def heartbeat(self, job: Job, worker: str, lease: timedelta, stage: str | None = None, progress: float | None = None) -> Job:
        """Record progress and extend the lease; LeaseLost if the job is no longer ours."""
        if job.lease_owner != worker or job.status != RUNNING:
            raise LeaseLost(job.id)
        if stage is not None:
            job.stage = stage
        if progress is not None:
            job.progress = round(float(progress), 4)
        job.lease_until = utcnow() + lease
        try:
            return self.save(job)
        except (ResourceModifiedError, JobNotFound):
            raise LeaseLost(job.id) from None

    def finish(self, job: Job, status: str, **changes: Any) -> Job:
        """The worker's last word on a job it holds. LeaseLost if it is no longer ours."""
        for name, value in changes.items():
            setattr(job, name, value)
        job.finished_at = utcnow()
        job.stage = {SUCCEEDED: "done", FAILED: "failed", CANCELLED: "cancelled"}[status]
        job.progress = 1.0 if status == SUCCEEDED else job.progress
        job.lease_owner, job.lease_until = "", None
        try:
            saved = self.save(job, status)
        except (ResourceModifiedError, JobNotFound):
            raise LeaseLost(job.id) from None
        _ended(saved)
        return saved

    def fail(self, job_id: str, code: str, reason: str) -> Job | None:
        """Mark a job failed from whatever non-terminal state it is in (poison messages,
        undecodable input). None if it is already terminal or gone."""
        while True:
            try:
                job = self.get(job_id)
            except JobNotFound:
                return None
            if job.terminal:
                return None
            job.error_code, job.error = code, reason
            job.finished_at = utcnow()
            job.stage = "failed"
            job.lease_owner, job.lease_until = "", None
            try:
                saved = self.save(job, FAILED)
            except ResourceModifiedError:
                continue
            except JobNotFound:
                return None
            _ended(saved)
            return saved

    def waiting_in_batches(self, created_before: datetime) -> Iterator[Job]:
        return self.query(
            "RowKey eq 'job' and status eq @queued and enqueued eq false and created_at lt @before",
            {"queued": QUEUED, "before": created_before},
        )

    def in_batch(self, batch_id: str) -> list[Job]:
        jobs = list(self.query("RowKey eq 'job' and batch_id eq @batch", {"batch": batch_id}))
        return sorted(jobs, key=lambda job: job.batch_index)

    def mark_enqueued(self, job: Job) -> bool:
        """Flip a waiting batch job to enqueued; False if someone else did it first."""
        job.enqueued = True
        try:
            self.save(job)
            return True
        except (ResourceModifiedError, JobNotFound):
            return False

    def delete(self, job_id: str) -> None:
        try:
            self.table.delete_entity(job_id, ROW_KEY)
        except ResourceNotFoundError:
            pass
