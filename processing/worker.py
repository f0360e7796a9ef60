"""The worker: handle one job message, and a polling loop that runs the same handler
without the Functions host.

A job is claimed with an ETag-guarded transition and a lease; progress reports renew the
lease. A worker that dies leaves its message to reappear; the next delivery finds the
lease expired and takes the job over. Results are written under fixed names before the
final transition, so a takeover overwrites rather than duplicates them.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from azure.core.exceptions import AzureError, ResourceNotFoundError

from . import telemetry
from .config import Settings
from .engine.stages import Stages
from .images import codec
from .images.preprocess import map_box, preprocess
from .jobs.batches import feed
from .jobs.blobs import before_blob_name, face_blob_name, job_prefix, result_blob_name
from .jobs.options import JobOptions
from .jobs.records import SUCCEEDED, Job, JobNotFound, JobRepository, LeaseLost, utcnow
from .jobs.webhooks import Webhooks
from .storage import Storage, decode_job_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What happened to a message. ``retry_after`` set: leave the message for later."""

    status: str  # succeeded | failed | skipped | missing | lost | busy
    detail: str = ""
    retry_after: float | None = None


class PermanentFailure(Exception):
    """The job cannot succeed however often it is retried; ``code`` and str() go to the user."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class JobHandler:
    """Runs one job end to end. The engine is created once and kept for the life of the
    process: as the process starts (``load_engine``), or else by the first job."""

    def __init__(self, settings: Settings, storage: Storage, engine_factory: Callable[[], object], worker_id: str | None = None,
                 webhooks: Webhooks | None = None):
        self.settings = settings
        self.webhooks = webhooks  # the calls a job asked for when it starts and ends
        self.storage = storage
        self.jobs = JobRepository(storage.tables.get_table_client(settings.jobs_table))
        self._engine_factory = engine_factory
        self._engine = None
        self._engine_lock = threading.Lock()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = timedelta(seconds=settings.lease_seconds)

    @property
    def engine(self):
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._engine_factory()
                log.info("engine ready: %s", self._engine)  # its runtime, precision and why
            return self._engine

    def load_engine(self) -> float:
        """Create the engine now (the models loaded and compiled); the seconds it took, 0 when
        it already existed. A job arriving meanwhile waits for this load, not a second one."""
        started = time.perf_counter()
        with self._engine_lock:
            if self._engine is not None:
                return 0.0
            self._engine = self._engine_factory()
        seconds = time.perf_counter() - started
        log.info("models loaded in %.1fs from %s", seconds, self.settings.models_dir)
        log.info("engine ready: %s", self._engine)  # its runtime, precision and why
        return seconds

    def handle_delivery(self, body: bytes | str, dequeue_count: int, put_back: Callable[[int], None]) -> Outcome:
        """One delivery of a message. When another worker holds a live lease on the job,
        ``put_back(seconds)`` leaves the message (or a copy of it) to be delivered again
        once that lease has run out: if its holder died, that delivery takes the job over."""
        outcome = self.handle_message(body, dequeue_count)
        if outcome.retry_after is not None:
            put_back(int(outcome.retry_after))
        return outcome

    def handle_trigger_message(self, body: bytes | str, dequeue_count: int) -> Outcome:
        """A delivery from the Functions queue trigger. The host deletes the message when the
        function returns, so the message to come back later is a copy, sent invisible."""
        return self.handle_delivery(
            body, dequeue_count, lambda seconds: self.storage.jobs_queue.send_message(body, visibility_timeout=seconds)
        )

    def handle_message(self, body: bytes | str, dequeue_count: int = 1) -> Outcome:
        try:
            message = decode_job_message(body)
        except ValueError as error:
            log.error("dropping malformed queue message: %s", error)
            return Outcome("missing", str(error))
        with telemetry.consuming(self.settings.jobs_queue, message.job_id, message.context,
                                 **{"restore.delivery": dequeue_count, "restore.worker": self.worker_id}):
            outcome = self.handle(message.job_id, dequeue_count, message.enqueued_at)
            telemetry.annotate(**{"restore.outcome": outcome.status})
            if outcome.status == "failed":
                telemetry.failed(outcome.detail)
            return outcome

    def handle(self, job_id: str, dequeue_count: int = 1, enqueued_at: datetime | None = None) -> Outcome:
        try:
            job = self.jobs.claim(job_id, self.worker_id, self.lease)
        except JobNotFound:
            log.warning("message for unknown job %s dropped", job_id)
            return Outcome("missing", "no such job")
        if job is None:
            current = self._peek(job_id)
            if current is not None and not current.terminal and current.lease_until is not None:
                wait = (current.lease_until - utcnow()).total_seconds()
                return Outcome("busy", "another worker holds the job", retry_after=max(1.0, wait + 1))
            if current is not None and self.webhooks:
                # A worker that died between ending the job and scheduling its webhook left the
                # message to come back: scheduling is once per event, so this is safe to repeat.
                self.webhooks.job_ended(job_id)
            return Outcome("skipped", "already finished")

        log.info("job %s: attempt %d on %s", job_id, job.attempts, self.worker_id)
        if job.attempts == 1:  # a retry's wait is the lease running out, not the queue
            telemetry.QUEUE_WAIT.record(max(0.0, (utcnow() - (enqueued_at or job.created_at)).total_seconds()))
        if self.webhooks:  # on every claim: a takeover sends the start its predecessor may not have
            self.webhooks.job_started(job)
        outcome = self._attempt(job, dequeue_count)
        if outcome.status in ("succeeded", "failed"):
            if job.batch_id:
                # This job's slot in the queue is free: the batch's next image takes it.
                feed(self.jobs, self.storage.enqueue_job, job.batch_id, self.settings.batch_window)
            if self.webhooks:
                self.webhooks.job_ended(job_id)
        return outcome

    def _attempt(self, job: Job, dequeue_count: int) -> Outcome:
        try:
            return self._run(job)
        except LeaseLost:
            if self._peek(job.id) is None:
                return self._deleted(job)
            log.warning("job %s: lease lost (taken over); stopping", job.id)
            return Outcome("lost", "lease lost")
        except PermanentFailure as failure:
            self.jobs.fail(job.id, failure.code, str(failure))
            return Outcome("failed", str(failure))
        except Exception as error:  # noqa: BLE001  (any other error may be transient)
            log.exception("job %s: attempt %d failed", job.id, job.attempts)
            if dequeue_count >= self.settings.max_dequeue_count:
                reason = f"processing failed {dequeue_count} times ({error.__class__.__name__}); giving up"
                if self.jobs.fail(job.id, "processing_failed", reason) is None and self._peek(job.id) is None:
                    return self._deleted(job)
                return Outcome("failed", reason)
            if not self._release(job, error):
                return self._deleted(job)
            raise

    def _deleted(self, job: Job) -> Outcome:
        """The job was deleted (DELETE, or purged) while this worker ran it. Whatever the
        worker wrote after the delete had listed the job's blobs would outlive it, and no
        row is left to find it by: remove the job's prefix again, now that this worker
        writes nothing more."""
        for container in (self.settings.uploads_container, self.settings.results_container):
            self.storage.delete_prefix(container, job_prefix(job.id))
        log.warning("job %s: deleted while running; stopped and removed what it wrote", job.id)
        return Outcome("lost", "deleted while running")

    def _peek(self, job_id: str) -> Job | None:
        try:
            return self.jobs.get(job_id)
        except JobNotFound:
            return None

    def _run(self, job: Job) -> Outcome:
        started = time.perf_counter()
        try:
            options = JobOptions(**job.options)
        except ValueError as error:  # pydantic's ValidationError: a damaged or foreign record
            raise PermanentFailure("invalid_options", f"the job's options are not valid: {error.__class__.__name__}") from None

        with _HeldJob(self.jobs, job, self.worker_id, self.lease) as held:
            return self._restore(held, options, started)

    def _restore(self, held: "_HeldJob", options: JobOptions, started: float) -> Outcome:
        job, report = held.job, held.report
        stage = Stages(telemetry.stage)
        telemetry.annotate(**{
            "restore.batch_id": job.batch_id or None, "restore.model": options.model,
            **{f"restore.options.{name}": value for name, value in options.model_dump(exclude_none=True).items()},
        })
        report("loading", 0.01)
        try:
            with stage("download"):
                data = self.storage.get_blob(self.settings.uploads_container, job.input_blob)
        except ResourceNotFoundError:
            raise PermanentFailure("input_missing", "the uploaded image is gone (deleted or expired)") from None
        try:
            # Orientation was applied when the upload was stored; auto_orient is spent.
            with stage("decode"):
                decoded = codec.decode(data, self.settings.max_pixels, auto_orient=False)
            with stage("preprocess"):
                pixels, steps = preprocess(decoded.pixels, options)
        except codec.ImageRejected as rejected:
            raise PermanentFailure(rejected.code, str(rejected)) from None
        telemetry.annotate(**{"restore.megapixels": round(pixels.shape[0] * pixels.shape[1] / 1e6, 3)})
        results = self.settings.results_container
        if steps:
            report("preprocessing", 0.03)
            # The exact pixels the engine sees: what the page compares the result with.
            with stage("upload", "upload before"):
                self.storage.put_blob(results, before_blob_name(job.id), codec.encode(pixels), "image/png")

        restore_options, unframed = options.restore_options(self.settings.max_faces, decoded.width, decoded.height)
        engine = self.engine
        if options.detect_only:
            return self._detect_only(held, engine, pixels, restore_options, stage, unframed, steps, started)
        result = engine.restore(pixels, restore_options, report, observe=telemetry.stage)

        report("saving", 0.92)
        with stage("encode"):
            encoded = codec.encode(result.image, options.output_format, options.quality)
            crops = [(codec.encode(item.before), codec.encode(item.after)) for item in result.faces]
        result_blob = result_blob_name(job.id, options.output_format)
        with stage("upload"):
            self.storage.put_blob(results, result_blob, encoded, codec.content_type(options.output_format))
            for index, (before, after) in enumerate(crops):
                self.storage.put_blob(results, face_blob_name(job.id, index, "before"), before, "image/png")
                self.storage.put_blob(results, face_blob_name(job.id, index, "after"), after, "image/png")
        faces = [face_record(item.face, unframed) for item in result.faces]

        outcome = self._succeed(held, {**result.timings, **stage.timings}, started, faces, "succeeded with",
                                result_blob=result_blob, result_content_type=codec.content_type(options.output_format),
                                result_width=int(result.image.shape[1]), result_height=int(result.image.shape[0]),
                                preprocessing=steps, tone=result.tone, precision=result.precision)
        telemetry.FACES.record(len(faces))  # restored faces per job (a detection restores none)
        return outcome

    def _detect_only(self, held: "_HeldJob", engine, pixels, restore_options, stage: Stages, unframed, steps,
                     started: float) -> Outcome:
        """A detection job: the faces found, with boxes in the photo's pixels and scores; no image."""
        held.report("detecting", 0.1)
        with stage("detect"):
            found = engine.detect(pixels, restore_options, stage)
        faces = [face_record(face, unframed) for face in found]
        return self._succeed(held, stage.timings, started, faces, "found", preprocessing=steps,
                             precision=engine.precision_for(restore_options.precision))

    @staticmethod
    def _succeed(held: "_HeldJob", timings: dict[str, float], started: float, faces: list[dict], verb: str,
                 **record) -> Outcome:
        """A job's last word: its faces and stage timings recorded, measured and logged."""
        rounded = {name: round(seconds, 3) for name, seconds in timings.items()}
        rounded["total"] = round(time.perf_counter() - started, 3)
        held.finish(SUCCEEDED, face_count=len(faces), faces=faces, timings=rounded, **record)
        telemetry.stages_took(timings)
        telemetry.annotate(**{"restore.face_count": len(faces)})
        log.info("job %s: %s %d faces in %.1fs", held.job.id, verb, len(faces), rounded["total"])
        return Outcome("succeeded")

    def _release(self, job: Job, error: Exception) -> bool:
        """Give the lease back so the retry of this message can take the job at once. False
        when the job is gone (deleted while it ran)."""
        try:
            current = self.jobs.get(job.id)
            if current.lease_owner == self.worker_id:
                current.lease_until = utcnow()
                current.stage = f"retrying after {error.__class__.__name__}"
                self.jobs.save(current)
        except JobNotFound:
            return False
        except AzureError:
            pass  # the lease will simply run out
        return True


def face_record(face, unframed) -> dict:
    """How a job records a face: its box (x0, y0, x1, y1) in the photo's pixels and in the pixels
    that were restored (they differ when a crop, turn or shrink framed the photo), and its score."""
    return {"box": [round(v, 1) for v in map_box(face.box, unframed)],
            "restored_box": [round(v, 1) for v in face.box], "score": round(face.score, 4)}


class _HeldJob:
    """The job this worker holds. Progress reports and a background renewal (every third
    of the lease, so a long stage cannot let the lease lapse) share one lock: their
    ETag-guarded writes never race each other."""

    def __init__(self, jobs: JobRepository, job: Job, worker_id: str, lease: timedelta):
        self.jobs, self.job, self.worker_id, self.lease = jobs, job, worker_id, lease
        self._lock = threading.Lock()
        self._lost: LeaseLost | None = None
        self._stop = threading.Event()
        # In the job's context: its log lines carry the job id, its spans join the job's trace.
        self._renewer = threading.Thread(target=contextvars.copy_context().run, args=(self._renew,), daemon=True)

    def __enter__(self) -> "_HeldJob":
        self._renewer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._renewer.join()

    def report(self, stage: str | None = None, fraction: float | None = None) -> None:
        with self._lock:
            if self._lost is not None:
                raise self._lost
            self.job = self.jobs.heartbeat(self.job, self.worker_id, self.lease, stage, fraction)

    def finish(self, status: str, **changes) -> None:
        with self._lock:
            if self._lost is not None:
                raise self._lost
            self.job = self.jobs.finish(self.job, status, **changes)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease.total_seconds() / 3):
            try:
                self.report()
            except LeaseLost as lost:
                self._lost = lost
                return
            except AzureError as error:
                log.warning("job %s: lease renewal failed (%s); retrying", self.job.id, error.__class__.__name__)


def mark_poisoned(settings: Settings, storage: Storage, body: bytes | str, webhooks: Webhooks | None = None) -> str | None:
    """A message the queue gave up on: its job (if any) ends failed, never stuck, and a batch
    job's place in the queue goes to the batch's next image."""
    try:
        job_id = decode_job_message(body).job_id
    except ValueError:
        return None
    telemetry.POISONED.add(1)
    with telemetry.job_logging(job_id):
        log.warning("job %s: its message was poisoned; marking it failed", job_id)
        repo = JobRepository(storage.tables.get_table_client(settings.jobs_table))
        job = repo.fail(job_id, "processing_failed", "the job could not be processed after several attempts")
        if job is not None and job.batch_id:
            feed(repo, storage.enqueue_job, job.batch_id, settings.batch_window)
        if job is not None and webhooks:
            webhooks.job_ended(job_id)
    return job_id


class PollingWorker:
    """`python -m processing worker`: the queue trigger's job without the Functions host.
    One message at a time; its visibility is renewed while the job runs."""

    def __init__(self, settings: Settings, storage: Storage, handler: JobHandler):
        self.settings = settings
        self.storage = storage
        self.handler = handler
        self.queue = storage.jobs_queue
        self.visibility = max(5, settings.lease_seconds)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_messages: int | None = None) -> int:
        handled = 0
        while not self._stop.is_set() and (max_messages is None or handled < max_messages):
            try:
                message = next(iter(self.queue.receive_messages(max_messages=1, visibility_timeout=self.visibility)), None)
            except AzureError as error:
                log.warning("queue unavailable (%s); retrying", error.__class__.__name__)
                self._stop.wait(min(10.0, self.settings.worker_poll_seconds * 5))
                continue
            if message is None:
                self._stop.wait(self.settings.worker_poll_seconds)
                continue
            handled += 1
            try:
                self.process(message)
            except Exception as error:  # noqa: BLE001
                # Storage went away mid-message (or a bug): the message reappears after its
                # visibility timeout and is retried; the worker itself must not die.
                log.error("message %s not finished (%s); it will be redelivered", message.id, error.__class__.__name__)
                self._stop.wait(min(5.0, self.settings.worker_poll_seconds * 5))
        return handled

    def process(self, message) -> Outcome | None:
        if message.dequeue_count > self.settings.max_dequeue_count:
            mark_poisoned(self.settings, self.storage, message.content, self.handler.webhooks)
            self.storage.poison_queue.send_message(message.content)
            self._delete(message)
            return None
        keeper = _VisibilityKeeper(self.queue, message, self.visibility, _job_id_of(message.content))
        keeper.start()

        def put_back(seconds: int) -> None:
            keeper.stop()
            self._set_visibility(keeper.message, seconds)

        try:
            outcome = self.handler.handle_delivery(message.content, message.dequeue_count, put_back)
        except Exception:  # noqa: BLE001  (already logged; the message reappears for a retry)
            keeper.stop()
            self._set_visibility(keeper.message, 0)
            return None
        keeper.stop()
        if outcome.retry_after is None:
            self._delete(keeper.message)
        return outcome

    def _delete(self, message) -> None:
        try:
            self.queue.delete_message(message.id, message.pop_receipt)
        except ResourceNotFoundError:
            pass  # the receipt went stale: the message reappears and the claim skips it

    def _set_visibility(self, message, seconds: int) -> None:
        try:
            self.queue.update_message(message.id, message.pop_receipt, visibility_timeout=seconds)
        except ResourceNotFoundError:
            pass


def _job_id_of(body) -> str:
    try:
        return decode_job_message(body).job_id
    except ValueError:
        return ""  # not our message: the handler drops it


class WebhookPoller(threading.Thread):
    """Delivers webhooks beside the polling worker, from their own queue, so a slow receiver
    never holds a job up. One attempt per message; Webhooks.deliver sends the retry."""

    def __init__(self, settings: Settings, storage: Storage, webhooks: Webhooks):
        super().__init__(daemon=True, name="webhooks")
        self.settings = settings
        self.queue = storage.webhooks_queue
        self.webhooks = webhooks
        # Long enough for one attempt (connect and read timeouts) and its bookkeeping.
        self.visibility = int(2 * settings.webhook_timeout_seconds) + 30
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                message = next(iter(self.queue.receive_messages(max_messages=1, visibility_timeout=self.visibility)), None)
                if message is None:
                    self._stop.wait(self.settings.worker_poll_seconds)
                    continue
                if message.dequeue_count <= MAX_WEBHOOK_DEQUEUES:
                    self.webhooks.deliver(message.content)
                else:
                    log.error("webhook message %s failed %d times; dropped", message.id, message.dequeue_count - 1)
                self.queue.delete_message(message.id, message.pop_receipt)
            except Exception as error:  # noqa: BLE001  (storage trouble: the message comes back)
                log.warning("webhook delivery interrupted (%s); retrying", error.__class__.__name__)
                self._stop.wait(min(5.0, self.settings.worker_poll_seconds * 5))


# A webhook message whose delivery itself kept failing (storage, a bug) this often is dropped
# (the Functions host's maxDequeueCount does the same under the queue trigger).
MAX_WEBHOOK_DEQUEUES = 5


class _VisibilityKeeper(threading.Thread):
    """Keeps a message invisible while its job runs (each renewal returns a new receipt)."""

    def __init__(self, queue, message, visibility: int, job_id: str = ""):
        super().__init__(daemon=True)
        self.queue = queue
        self.message = message
        self.visibility = visibility
        self.job_id = job_id
        self._done = threading.Event()

    def run(self) -> None:
        # Its own thread: without the job's logging context its lines would carry no job id,
        # and they fall between the job's claim and finish.
        with telemetry.job_logging(self.job_id):
            while not self._done.wait(self.visibility / 3):
                try:
                    updated = self.queue.update_message(self.message.id, self.message.pop_receipt,
                                                        visibility_timeout=self.visibility)
                    self.message.pop_receipt = updated.pop_receipt
                except AzureError as error:
                    log.warning("could not renew message visibility: %s", error.__class__.__name__)

    def stop(self) -> None:
        self._done.set()
        self.join()
