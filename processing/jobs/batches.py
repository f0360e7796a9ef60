"""Batches: many images submitted together, one job each, fed to the queue a few at a time.

A batch never puts more than ``window`` messages on the queue at once; each time one of
its jobs ends, the next waiting job is enqueued at the back. So a 50-image batch and
someone's single photo interleave: the single photo waits behind at most ``window``
batch jobs, not fifty.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EntityProperty, TableClient, UpdateMode

from .records import (QUEUED, RUNNING, SUCCEEDED, TERMINAL, UNREADABLE_OWNER, Job, JobRepository, is_job_id,
                      utcnow)

log = logging.getLogger(__name__)
ROW_KEY = "batch"
ZIP_MAGIC = b"PK\x03\x04"


class BatchNotFound(LookupError):
    pass


@dataclass
class Batch:
    id: str
    created_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    job_ids: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)  # {filename, code, message}
    options: dict[str, Any] = field(default_factory=dict)
    owner: str = ""


_JSON = {"job_ids", "rejected", "options"}


def _strings(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


# What each stored property must hold for the batch to be shown, fed and deleted.
_CHECKS = {
    "created_at": lambda value: isinstance(value, datetime),
    "expires_at": lambda value: isinstance(value, datetime),
    "job_ids": lambda value: isinstance(value, list) and all(isinstance(i, str) and is_job_id(i) for i in value),
    "rejected": lambda value: isinstance(value, list) and all(map(_strings, value)),
    "options": lambda value: isinstance(value, dict),
    "owner": lambda value: isinstance(value, str),
}


def _read_field(name: str, raw: Any) -> Any:
    """One stored property as the batch holds it; ValueError or TypeError if it is damaged."""
    value = raw.value if isinstance(raw, EntityProperty) else raw
    if name in _JSON:
        value = json.loads(value)
    elif isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    if not _CHECKS[name](value):
        raise ValueError(f"{name} holds {str(value)[:40]!r}")
    return value


class BatchRepository:
    def __init__(self, table: TableClient):
        self.table = table

    def create(self, batch: Batch) -> None:
        self.table.create_entity(self._entity(batch))

    @staticmethod
    def _entity(batch: Batch) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": batch.id, "RowKey": ROW_KEY}
        for name, value in asdict(batch).items():
            if name != "id" and value is not None:
                entity[name] = json.dumps(value) if name in _JSON else value
        return entity

    def get(self, batch_id: str) -> Batch:
        if not is_job_id(batch_id):
            raise BatchNotFound(batch_id)
        while True:
            try:
                entity = self.table.get_entity(batch_id, ROW_KEY)
            except ResourceNotFoundError:
                raise BatchNotFound(batch_id) from None
            values: dict[str, Any] = {}
            damaged: dict[str, str] = {}
            for name in _CHECKS:
                if name in entity:
                    try:
                        values[name] = _read_field(name, entity[name])
                    except (ValueError, TypeError) as damage:
                        damaged[name] = str(damage)
            if not damaged:
                return Batch(id=batch_id, **values)
            batch = self._repair(entity, values, damaged)
            if batch is not None:
                return batch

    def _repair(self, entity, values: dict[str, Any], damaged: dict[str, str]) -> Batch | None:
        """A damaged row repaired on the spot, as damaged jobs are (records.py): what still
        reads is kept; the jobs are found again by their batch_id (each job row names its
        batch), so the view, the zip and DELETE still reach them; an unreadable owner makes
        the batch nobody's, never everybody's; damaged dates let the next purge take the row.
        None when the row changed or went away meanwhile (read it again)."""
        batch_id = entity["PartitionKey"]
        log.error("batch %s: its record is damaged (%s); repairing it", batch_id,
                  "; ".join(f"{name}: {reason}" for name, reason in damaged.items()))
        now = utcnow()
        repaired = {**values, **({"owner": UNREADABLE_OWNER} if "owner" in damaged else {}),
                    **{name: now for name in ("created_at", "expires_at") if name in damaged}}
        if "job_ids" in damaged:
            repaired["job_ids"] = self._members(batch_id)
        batch = Batch(id=batch_id, **repaired)
        try:
            self.table.update_entity(self._entity(batch), mode=UpdateMode.REPLACE, etag=entity.metadata.get("etag"),
                                     match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return batch

    def _members(self, batch_id: str) -> list[str]:
        rows = self.table.query_entities("RowKey eq 'job' and batch_id eq @batch", parameters={"batch": batch_id},
                                         select=["PartitionKey", "batch_index"])
        index = lambda row: row.get("batch_index") if isinstance(row.get("batch_index"), int) else 1 << 30
        return [row["PartitionKey"] for row in sorted(rows, key=index)]

    def expired(self, now: datetime) -> list[str]:
        rows = self.table.query_entities(
            "RowKey eq @row and expires_at lt @now", parameters={"row": ROW_KEY, "now": now}, select=["PartitionKey"]
        )
        return [row["PartitionKey"] for row in rows]

    def delete(self, batch_id: str) -> None:
        try:
            self.table.delete_entity(batch_id, ROW_KEY)
        except ResourceNotFoundError:
            pass


def feed(jobs: JobRepository, enqueue, batch_id: str, window: int) -> int:
    """Top the batch up to ``window`` jobs in flight (queued on the queue, or running).
    Safe to call from any number of workers: each waiting job is claimed for enqueueing
    with an ETag-guarded write, so it is enqueued once."""
    members = jobs.in_batch(batch_id)
    in_flight = sum(1 for j in members if (j.status == QUEUED and j.enqueued) or j.status == RUNNING)
    waiting = [j for j in members if j.status == QUEUED and not j.enqueued]
    sent = 0
    for job in waiting:
        if in_flight + sent >= window:
            break
        if jobs.mark_enqueued(job):
            enqueue(job.id)
            sent += 1
    return sent


def summary(batch: Batch, members: list[Job]) -> dict[str, Any]:
    counts = {status: 0 for status in ("queued", "running", "succeeded", "failed", "cancelled")}
    for job in members:
        counts[job.status] += 1
    total = len(members)
    progress = sum(1.0 if job.terminal else job.progress for job in members) / total if total else 1.0
    return {"counts": counts, "total": total, "progress": round(progress, 4),
            "done": all(job.status in TERMINAL for job in members)}


def unpack_zip(data: bytes, max_files: int, max_total_bytes: int) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each file in an uploaded zip, refusing zip bombs by the sizes the
    archive declares and by what it actually inflates to. Names are for display only."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = [info for info in archive.infolist() if not info.is_dir() and not info.filename.startswith("__MACOSX/")]
        if len(entries) > max_files:
            raise ValueError(f"the zip holds {len(entries)} files; at most {max_files} per batch")
        declared = sum(info.file_size for info in entries)
        if declared > max_total_bytes:
            raise ValueError(f"the zip inflates to {declared / 1e6:.0f} MB; at most {max_total_bytes / 1e6:.0f} MB")
        budget = max_total_bytes
        for info in entries:
            # Never more than the member declares is inflated (zipfile stops there, and so does
            # this read); data beyond it no longer matches the checksum, and the zip is refused.
            try:
                with archive.open(info) as member:
                    content = member.read(min(info.file_size, budget) + 1)
            except zipfile.BadZipFile:
                raise ValueError(f"{info.filename}: its data does not match its declared size and checksum") from None
            if len(content) > info.file_size or len(content) > budget:
                raise ValueError(f"{info.filename}: inflates past its declared size")
            budget -= len(content)
            yield info.filename.rsplit("/", 1)[-1], content


def results_zip(entries: Iterator[tuple[str, bytes]]) -> tempfile.SpooledTemporaryFile:
    """A zip of (name, bytes), spooled to disk past 64 MB; images are stored, not deflated
    (PNG/JPEG/WebP are compressed already)."""
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    spool.seek(0)
    return spool


def succeeded(members: list[Job]) -> list[Job]:
    return [job for job in members if job.status == SUCCEEDED]
