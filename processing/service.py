"""Job operations shared by the HTTP API, the timer and the tests: submit, read, delete,
purge. Knows storage and jobs; knows nothing of HTTP."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta

from azure.core.exceptions import ResourceNotFoundError

from . import images
from .config import Settings
from .jobs import Job, JobNotFound, JobRepository, SUCCEEDED, new_job_id, utcnow
from .options import JobOptions
from .storage import Storage

log = logging.getLogger(__name__)


class ServiceBusy(RuntimeError):
    """Back-pressure: try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 30):
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(RuntimeError):
    def __init__(self, job: Job):
        super().__init__(f"the job is {job.status}; the result exists once it has succeeded")
        self.job = job


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str
    filename: str


def safe_stem(filename: str) -> str:
    """A display/download name from an uploaded file name; never used as a path."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-_")[:60]
    return stem or "photo"


def input_blob_name(job_id: str) -> str:
    return f"{job_id}/input.png"


def result_blob_name(job_id: str, fmt: str) -> str:
    return f"{job_id}/restored.{images.extension(fmt)}"


def face_blob_name(job_id: str, index: int, which: str) -> str:
    return f"{job_id}/faces/{index}-{which}.png"


class JobService:
    def __init__(self, settings: Settings, storage: Storage):
        self.settings = settings
        self.storage = storage
        self.jobs = JobRepository(storage.tables.get_table_client(settings.jobs_table))

    # -- submit -------------------------------------------------------------------

    def check_capacity(self) -> None:
        depth = self.queue_depth()
        if depth >= self.settings.max_queue_depth:
            raise ServiceBusy(f"{depth} jobs are waiting; the service accepts new ones below {self.settings.max_queue_depth}")

    def submit(self, data: bytes, filename: str, options: JobOptions, *, owner: str = "", batch_id: str = "") -> Job:
        """Validate, store and enqueue one image. Raises images.ImageRejected, ServiceBusy."""
        if len(data) > self.settings.max_upload_bytes:
            raise images.ImageRejected(
                "file_too_large",
                f"the file is {len(data) / 1e6:.1f} MB; the limit is {self.settings.max_upload_bytes / 1e6:.0f} MB",
                status=413,
            )
        self.check_capacity()
        decoded = images.decode(data, self.settings.max_pixels)
        job = Job(
            id=new_job_id(),
            options=options.model_dump(),
            filename=safe_stem(filename),
            input_blob=input_blob_name(""),
            input_width=decoded.width,
            input_height=decoded.height,
            input_format=decoded.source_format,
            owner=owner,
            batch_id=batch_id,
        )
        job.input_blob = input_blob_name(job.id)
        job.expires_at = job.created_at + timedelta(hours=self.settings.retention_hours)
        # Stored re-encoded: orientation applied, metadata (EXIF, GPS) gone, format known.
        self.storage.put_blob(self.settings.uploads_container, job.input_blob, images.encode(decoded.pixels), "image/png")
        self.jobs.create(job)
        try:
            self.storage.enqueue_job(job.id)
        except Exception:
            self.jobs.fail(job.id, "enqueue_failed", "the job could not be queued; please submit it again")
            raise
        return job

    # -- read -----------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self.jobs.get(job_id)

    def queue_position(self, job: Job) -> int | None:
        return self.jobs.queue_position(job) if job.status == "queued" else None

    def result(self, job_id: str) -> Download:
        job = self.jobs.get(job_id)
        if job.status != SUCCEEDED:
            raise NotReady(job)
        data = self._blob(self.settings.results_container, job.result_blob, job_id)
        ext = job.result_blob.rsplit(".", 1)[-1]
        return Download(data, job.result_content_type, f"{job.filename}-restored.{ext}")

    def original(self, job_id: str) -> Download:
        job = self.jobs.get(job_id)
        data = self._blob(self.settings.uploads_container, job.input_blob, job_id)
        return Download(data, "image/png", f"{job.filename}.png")

    def face(self, job_id: str, index: int, which: str) -> Download:
        job = self.jobs.get(job_id)
        if job.status != SUCCEEDED:
            raise NotReady(job)
        if which not in ("before", "after") or not 0 <= index < (job.face_count or 0):
            raise JobNotFound(job_id)
        data = self._blob(self.settings.results_container, face_blob_name(job_id, index, which), job_id)
        return Download(data, "image/png", f"{job.filename}-face{index + 1}-{which}.png")

    def _blob(self, container: str, name: str, job_id: str) -> bytes:
        try:
            return self.storage.get_blob(container, name)
        except ResourceNotFoundError:
            raise JobNotFound(job_id) from None

    def queue_depth(self) -> int:
        return self.storage.jobs_queue.get_queue_properties().approximate_message_count or 0

    # -- delete and clean up --------------------------------------------------------

    def delete(self, job_id: str) -> None:
        """Remove the job's blobs and row now. A worker still running it loses its lease at
        its next progress report and stops."""
        self.jobs.get(job_id)  # 404 for unknown ids
        self._remove(job_id)

    def _remove(self, job_id: str) -> None:
        self.jobs.delete(job_id)
        self.storage.delete_prefix(self.settings.uploads_container, f"{job_id}/")
        self.storage.delete_prefix(self.settings.results_container, f"{job_id}/")

    def purge_expired(self) -> int:
        """Delete every job past its retention time, with its blobs. The timer runs this;
        blob lifecycle rules in Azure are the backstop for anything it misses."""
        expired = [job.id for job in self.jobs.expired(utcnow())]
        for job_id in expired:
            self._remove(job_id)
        if expired:
            log.info("purged %d expired jobs", len(expired))
        return len(expired)

    def requeue_stale(
        self, queued_grace: timedelta = timedelta(hours=1), lease_grace: timedelta = timedelta(minutes=10)
    ) -> int:
        """Re-enqueue jobs whose message may be lost: still queued after ``queued_grace``
        (the row was written but the enqueue never happened), or running with a lease that
        ran out ``lease_grace`` ago (a worker died and its message went with it). Duplicate
        messages are harmless: the worker's claim is idempotent."""
        now = utcnow()
        stale = [job.id for job in self.jobs.stale(queued_before=now - queued_grace, lease_before=now - lease_grace)]
        for job_id in stale:
            self.storage.enqueue_job(job_id)
        if stale:
            log.warning("re-enqueued %d stale jobs", len(stale))
        return len(stale)
