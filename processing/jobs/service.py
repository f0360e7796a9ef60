"""Job operations shared by the HTTP API, the timer and the tests: submit, read, delete,
purge. Knows storage and jobs; knows nothing of HTTP."""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass
from datetime import timedelta

from azure.core.exceptions import ResourceNotFoundError

from ..config import Settings
from ..engine.store import BACKGROUND, ModelStore
from ..images import codec
from ..images.preprocess import check_crop
from ..storage import Storage
from .batches import ZIP_MAGIC, Batch, BatchRepository, feed, results_zip, unpack_zip
from .blobs import before_blob_name, face_blob_name, input_blob_name, job_prefix
from .options import FRAMING_OPTIONS, InvalidOption, JobOptions, check_face_boxes
from .records import Job, JobNotFound, JobRepository, SUCCEEDED, new_job_id, utcnow

log = logging.getLogger(__name__)


class ServiceBusy(RuntimeError):
    """Back-pressure: try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 30):
        super().__init__(message)
        self.retry_after = retry_after


class BatchNotReady(RuntimeError):
    pass


class NotReady(RuntimeError):
    def __init__(self, job: Job):
        if job.status == SUCCEEDED:  # a detection: it found faces and made no image
            message = "this job only found faces (detect_only); restore them with POST /api/jobs/{id}/restore"
        else:
            message = f"the job is {job.status}; the result exists once it has succeeded"
        super().__init__(message.replace("{id}", job.id))
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


class JobService:
    def __init__(self, settings: Settings, storage: Storage):
        self.settings = settings
        self.storage = storage
        table = storage.tables.get_table_client(settings.jobs_table)
        self.jobs = JobRepository(table)
        self.batches = BatchRepository(table)
        self.models = ModelStore(settings.models_dir)

    # -- submit -------------------------------------------------------------------

    def check_capacity(self) -> None:
        depth = self.queue_depth()
        if depth >= self.settings.max_queue_depth:
            raise ServiceBusy(f"{depth} jobs are waiting; the service accepts new ones below {self.settings.max_queue_depth}")

    def submit(
        self, data: bytes, filename: str, options: JobOptions, *, owner: str = "", batch_id: str = "",
        batch_index: int = 0, enqueue: bool = True,
    ) -> Job:
        """Validate, store and (unless ``enqueue`` is False: a batch's waiting job) enqueue
        one image. Raises codec.ImageRejected, ServiceBusy."""
        if len(data) > self.settings.max_upload_bytes:
            raise codec.ImageRejected(
                "file_too_large",
                f"the file is {len(data) / 1e6:.1f} MB; the limit is {self.settings.max_upload_bytes / 1e6:.0f} MB",
                status=413,
            )
        if options.background == "realesrgan" and not self.models.has(BACKGROUND):
            raise codec.ImageRejected(
                "option_unavailable", "background=realesrgan needs the Real-ESRGAN weights, which are not installed"
            )
        if enqueue:
            self.check_capacity()
        decoded = codec.decode(data, self.settings.max_pixels, auto_orient=options.auto_orient)
        check_crop(options.crop_box(), decoded.width, decoded.height)
        check_face_boxes(options, decoded.width, decoded.height)
        job = Job(
            id=new_job_id(),
            options=options.model_dump(),
            filename=safe_stem(filename),
            input_width=decoded.width,
            input_height=decoded.height,
            input_format=decoded.source_format,
            input_profile=decoded.profile or "",
            owner=owner,
            batch_id=batch_id,
            batch_index=batch_index,
            enqueued=enqueue,
        )
        # Stored re-encoded: orientation applied, converted to sRGB and tagged so, metadata
        # (EXIF, GPS, XMP) gone, format known.
        return self._store(job, codec.encode(decoded.pixels), enqueue)

    def _store(self, job: Job, input_png: bytes, enqueue: bool = True) -> Job:
        job.input_blob = input_blob_name(job.id)
        job.expires_at = job.created_at + timedelta(hours=self.settings.retention_hours)
        self.storage.put_blob(self.settings.uploads_container, job.input_blob, input_png, "image/png")
        self.jobs.create(job)
        if enqueue:
            try:
                self.storage.enqueue_job(job.id)
            except Exception:
                self.jobs.fail(job.id, "enqueue_failed", "the job could not be queued; please submit it again")
                raise
        return job

    def restore_chosen(self, source_id: str, faces: list[int] | None, options: JobOptions, *, owner: str = "") -> Job:
        """A new job restoring the faces ``faces`` (indices into what job ``source_id`` found;
        all of them when None) of that job's photo, with ``options``. The photo is not sent
        again, and the new job frames it as the source did (its crop, rotation, shrink), so
        the boxes mean the same pixels. Raises InvalidOption, NotReady, ServiceBusy."""
        source = self.jobs.get(source_id)
        if source.status != SUCCEEDED or source.face_count is None:
            raise NotReady(source) if source.status != SUCCEEDED else InvalidOption("faces", "the job found no faces")
        for index in faces or []:
            if not 0 <= index < source.face_count:
                raise InvalidOption("faces", f"face {index} does not exist: the photo has {source.face_count} "
                                             f"(0 to {source.face_count - 1})")
        framing = {name: source.options.get(name) for name in FRAMING_OPTIONS if name in source.options}
        chosen = source.faces if faces is None else [source.faces[i] for i in faces]
        boxes = ";".join(",".join(str(round(v)) for v in (x0, y0, max(1.0, x1 - x0), max(1.0, y1 - y0)))
                         for x0, y0, x1, y1 in (face["box"] for face in chosen))
        restore = options.model_copy(update={**framing, "detect_only": False, "face_boxes": boxes or None})
        self.check_capacity()
        job = Job(id=new_job_id(), options=restore.model_dump(), filename=source.filename, owner=owner,
                  input_width=source.input_width, input_height=source.input_height, input_format=source.input_format,
                  input_profile=source.input_profile)
        return self._store(job, self._blob(self.settings.uploads_container, source.input_blob, source_id))

    # -- batches ------------------------------------------------------------------

    def submit_batch(self, files: list[tuple[str, bytes]], options: JobOptions, *, owner: str = "") -> Batch:
        """One job per image; images that fail validation are listed, not fatal. Zips are
        unpacked. Only the first ``batch_window`` jobs go on the queue now."""
        self.check_capacity()
        limit = self.settings.max_batch_files
        expanded: list[tuple[str, bytes]] = []
        rejected: list[dict[str, str]] = []
        # One budget for the whole batch: what its files and its zips' members add up to once
        # inflated. Per zip, fifty zips of 200 MB each fitted in one request.
        budget = self.settings.max_batch_bytes
        for name, data in files:
            if data.startswith(ZIP_MAGIC):
                try:
                    members = list(unpack_zip(data, limit, max(0, budget)))  # the whole zip, or none of it
                except (ValueError, zipfile.BadZipFile) as error:
                    rejected.append({"filename": safe_stem(name), "code": "bad_zip", "message": str(error)})
                    continue
            else:
                members = [(name, data)]
            expanded.extend(members)
            budget -= sum(len(content) for _, content in members)
            if len(expanded) > limit:  # said at once: nothing more is unpacked
                raise codec.ImageRejected("too_many_files", f"more than {limit} images; at most {limit} per batch", 413)
        batch = Batch(id=new_job_id(), options=options.model_dump(), owner=owner)
        batch.expires_at = batch.created_at + timedelta(hours=self.settings.retention_hours)
        for name, data in expanded:
            try:
                job = self.submit(data, name, options, owner=owner, batch_id=batch.id,
                                  batch_index=len(batch.job_ids), enqueue=False)
            except codec.ImageRejected as error:
                rejected.append({"filename": safe_stem(name), "code": error.code, "message": str(error)})
                continue
            batch.job_ids.append(job.id)
        batch.rejected = rejected
        if not batch.job_ids:
            raise codec.ImageRejected("no_images", "none of the files is an image we accept: "
                                       + "; ".join(f"{r['filename']}: {r['message']}" for r in rejected))
        self.batches.create(batch)
        feed(self.jobs, self.storage.enqueue_job, batch.id, self.settings.batch_window)
        return batch

    def batch(self, batch_id: str) -> tuple[Batch, list[Job]]:
        batch = self.batches.get(batch_id)
        return batch, self.jobs.in_batch(batch_id)

    def batch_zip(self, batch_id: str):
        """A zip of every succeeded result, numbered in submission order."""
        batch, members = self.batch(batch_id)
        if not all(job.terminal for job in members):
            raise BatchNotReady(batch_id)
        done = [job for job in members if job.status == SUCCEEDED and job.result_blob]  # detections have no image

        def entries():
            for job in done:
                ext = job.result_blob.rsplit(".", 1)[-1]
                data = self._blob(self.settings.results_container, job.result_blob, job.id)
                yield f"{job.batch_index + 1:03d}-{job.filename}-restored.{ext}", data

        return results_zip(entries())

    def delete_batch(self, batch_id: str) -> None:
        batch = self.batches.get(batch_id)
        for job_id in batch.job_ids:
            self._remove(job_id)
        self.batches.delete(batch_id)

    # -- read -----------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self.jobs.get(job_id)

    def queue_position(self, job: Job) -> int | None:
        return self.jobs.queue_position(job) if job.status == "queued" else None

    def result(self, job_id: str) -> Download:
        job = self.jobs.get(job_id)
        if job.status != SUCCEEDED or not job.result_blob:
            raise NotReady(job)
        data = self._blob(self.settings.results_container, job.result_blob, job_id)
        ext = job.result_blob.rsplit(".", 1)[-1]
        return Download(data, job.result_content_type, f"{job.filename}-restored.{ext}")

    def original(self, job_id: str) -> Download:
        job = self.jobs.get(job_id)
        data = self._blob(self.settings.uploads_container, job.input_blob, job_id)
        return Download(data, "image/png", f"{job.filename}.png")

    def before(self, job_id: str) -> Download:
        """The pixels the engine restored: the input after preprocessing (crop, rotation...),
        or the stored input when there was none."""
        job = self.jobs.get(job_id)
        if not job.preprocessing:
            return self.original(job_id)
        data = self._blob(self.settings.results_container, before_blob_name(job_id), job_id)
        return Download(data, "image/png", f"{job.filename}-before.png")

    def face(self, job_id: str, index: int, which: str) -> Download:
        job = self.jobs.get(job_id)
        if job.status != SUCCEEDED or not job.result_blob:
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
        job = self.jobs.get(job_id)  # 404 for unknown ids
        self._remove(job_id)
        if job.batch_id and not job.terminal:
            # It held one of its batch's places on the queue (or was about to): the batch's
            # next image takes it now. The worker that ran it stops without a word, so nobody
            # else would hand it on before the housekeeping timer.
            feed(self.jobs, self.storage.enqueue_job, job.batch_id, self.settings.batch_window)

    def _remove(self, job_id: str) -> None:
        self.jobs.delete(job_id)
        self.storage.delete_prefix(self.settings.uploads_container, job_prefix(job_id))
        self.storage.delete_prefix(self.settings.results_container, job_prefix(job_id))

    def purge_expired(self) -> int:
        """Delete every job past its retention time, with its blobs. The timer runs this;
        blob lifecycle rules in Azure are the backstop for anything it misses."""
        now = utcnow()
        expired = [job.id for job in self.jobs.expired(now)]
        for job_id in expired:
            self._remove(job_id)
        for batch_id in self.batches.expired(now):
            self.batches.delete(batch_id)
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
        # Batches whose feeding stopped (a worker died between finishing a job and
        # enqueueing the next) are topped up again.
        for batch_id in {job.batch_id for job in self.jobs.waiting_in_batches(now - lease_grace)}:
            feed(self.jobs, self.storage.enqueue_job, batch_id, self.settings.batch_window)
        if stale:
            log.warning("re-enqueued %d stale jobs", len(stale))
        return len(stale)
