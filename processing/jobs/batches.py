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

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from .records import QUEUED, RUNNING, SUCCEEDED, TERMINAL, Job, JobRepository, is_job_id, utcnow

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
    webhook: str = ""  # processing/jobs/webhooks.py
    webhook_events: list[str] = field(default_factory=list)  # start, completed, job_start, job_completed


_JSON = {"job_ids", "rejected", "options", "webhook_events"}


class BatchRepository:
    def __init__(self, table: TableClient):
        self.table = table

    def create(self, batch: Batch) -> None:
        entity: dict[str, Any] = {"PartitionKey": batch.id, "RowKey": ROW_KEY}
        for name, value in asdict(batch).items():
            if name != "id" and value is not None:
                entity[name] = json.dumps(value) if name in _JSON else value
        self.table.create_entity(entity)

    def get(self, batch_id: str) -> Batch:
        if not is_job_id(batch_id):
            raise BatchNotFound(batch_id)
        try:
            entity = self.table.get_entity(batch_id, ROW_KEY)
        except ResourceNotFoundError:
            raise BatchNotFound(batch_id) from None
        values = {name: json.loads(entity[name]) if name in _JSON else entity.get(name) for name in
                  ("created_at", "expires_at", "job_ids", "rejected", "options", "owner", "webhook",
                   "webhook_events") if name in entity}
        for name in ("created_at", "expires_at"):
            if isinstance(values.get(name), datetime) and values[name].tzinfo is None:
                values[name] = values[name].replace(tzinfo=timezone.utc)
        return Batch(id=batch_id, **values)

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
