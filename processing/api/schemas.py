"""What the API accepts and answers: one pydantic model per request form and response (they
are the reference at /docs), and the mappers from job and batch records to responses."""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import datetime
from typing import Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..jobs.batches import Batch, BatchNotFound, summary
from ..jobs.options import JobOptions
from ..jobs.records import Job, JobNotFound
from ..jobs.service import JobService
from ..jobs.webhooks import BATCH_EVENTS, JOB_EVENTS, Delivery


def _form_fields(schema: dict[str, Any]) -> None:
    """A form field is absent or has a value, never null: ``crop: str | None`` is a string
    here, not pydantic's ``anyOf [string, null]`` (a form cannot carry a null)."""
    for prop in schema["properties"].values():
        if "anyOf" in prop:
            (value,) = [choice for choice in prop.pop("anyOf") if choice.get("type") != "null"]
            prop.update(value)


_WEBHOOK = {"webhook", "webhook_events"}


def events_pattern(events: tuple[str, ...]) -> str:
    name = f" *(?:{'|'.join(events)}) *"
    return f"^{name}(?:,{name})*$"


class WebhookFields(BaseModel):
    """A webhook on a submission (Replicate's ``webhook`` and ``webhook_events_filter``)."""

    webhook: str | None = Field(None, max_length=2048, description=(
        "An https URL to POST the job to when the events below happen, signed per Standard Webhooks (headers "
        "webhook-id, webhook-timestamp, webhook-signature; the secret from GET /api/webhooks/secret). It must resolve "
        "to a public address (never loopback, private, link-local or metadata); redirects are not followed"),
        json_schema_extra={"format": "uri"})
    webhook_events: str | None = Field(None, description=(
        "Comma-separated: start, completed (the default: completed)"), json_schema_extra={
        "pattern": events_pattern(JOB_EVENTS)})

    @field_validator("webhook_events")
    @classmethod
    def _events(cls, value: str | None) -> str | None:
        allowed = BATCH_EVENTS if "files" in cls.model_fields else JOB_EVENTS
        if value and not re.fullmatch(events_pattern(allowed)[1:-1], value):
            raise ValueError(f"webhook_events must be some of {', '.join(allowed)}, separated by commas")
        return value or None


class JobSubmission(WebhookFields, JobOptions):
    """multipart/form-data: the image plus any options (all optional)."""

    model_config = ConfigDict(json_schema_extra=_form_fields)

    file: UploadFile = Field(description="The photo: JPEG, PNG or WebP")

    def options(self) -> JobOptions:
        return JobOptions(**self.model_dump(exclude={"file", *_WEBHOOK}))


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[dict[str, Any]] | None = None
    status: str | None = Field(None, description="The job's status, on 409")


class ErrorResponse(BaseModel):
    error: ErrorBody


class JobLinks(BaseModel):
    self: str
    input: str
    before: str = Field(description="The pixels that were restored: the input after preprocessing")
    result: str | None = None
    batch: str | None = None
    restore: str | None = Field(None, description="A finished detection (detect_only): POST here to restore chosen faces")


class FaceView(BaseModel):
    index: int
    box: list[float] = Field(description="x0, y0, x1, y1 in pixels of the photo as uploaded (upright)")
    restored_box: list[float] | None = Field(None, description="x0, y0, x1, y1 in pixels of the image that was "
                                             "restored (the before image; the same unless a crop, turn or shrink)")
    score: float
    before: str | None = None
    after: str | None = None


class ImageInfo(BaseModel):
    width: int
    height: int
    format: str


class DeliveryView(BaseModel):
    event: str
    id: str = Field(description="The webhook-id header: the same on every attempt (receivers dedupe on it)")
    status: Literal["pending", "retrying", "delivered", "failed", "refused"] = Field(description=(
        "refused: the target was not allowed when the call was due (it resolved to a private address), or there "
        "was no secret to sign with; failed: every attempt failed"))
    attempts: int
    last_status: int | None = Field(None, description="The receiver's last HTTP status")
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None


class WebhookView(BaseModel):
    url: str
    events: list[str]
    deliveries: list[DeliveryView] = Field([], description="Each event's calls so far")


def webhook_view(url: str, events: list[str], deliveries: list[Delivery]) -> WebhookView | None:
    if not url:
        return None
    return WebhookView(url=url, events=events, deliveries=[
        DeliveryView(event=d.event, id=d.webhook_id, status=d.status, attempts=d.attempts, last_status=d.last_status,
                     last_error=d.last_error or None, last_attempt_at=d.last_attempt_at,
                     next_attempt_at=d.next_attempt_at) for d in deliveries])


class JobView(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str
    progress: float = Field(ge=0, le=1)
    queue_position: int | None = Field(None, description="1 = next to run; only while queued")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    filename: str
    options: dict[str, Any]
    input: ImageInfo
    color_profile: str | None = Field(None, description=(
        "The colour profile the upload carried (its own name, e.g. Display P3), from which its colours were "
        "converted to sRGB for restoring; null: none, its pixels were taken as sRGB. Everything served (input, "
        "result, faces) is sRGB, with the sRGB profile embedded"))
    result: ImageInfo | None = None
    face_count: int | None = None
    faces: list[FaceView] = []
    attempts: int = 0
    error: ErrorBody | None = None
    timings: dict[str, float] = {}
    preprocessing: list[str] = Field([], description="Preprocessing steps applied, in order")
    tone: str = Field("", description="What the photo is: monochrome, toned (sepia, cyanotype...) or colour; "
                      "with color=auto the first two keep their tone")
    precision: str = Field("", description="What the networks computed in for this job (f32 or bf16), "
                           "as the runtime reported it; empty until the job has run, or when no network ran")
    batch_id: str | None = None
    standin_weights: bool = False
    webhook: WebhookView | None = None
    links: JobLinks


FACES_PATTERN = "^ *[0-9]+ *(, *[0-9]+ *)*$"


class FaceChoice(WebhookFields, JobOptions):
    """A form: which of a detection's faces to restore, and the options for the restoration
    (the photo's framing and small_faces are the detection's)."""

    model_config = ConfigDict(json_schema_extra=_form_fields)

    faces: str | None = Field(None, description="Indices of the detection's faces to restore, e.g. 0,2 (all if absent)",
                              json_schema_extra={"pattern": FACES_PATTERN})

    @field_validator("faces")
    @classmethod
    def _indices(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(FACES_PATTERN[1:-1], value):
            raise ValueError("faces must be face indices separated by commas, e.g. 0,2")
        indices = [int(part) for part in value.split(",")]
        if len(set(indices)) != len(indices):
            raise ValueError("faces lists a face twice")
        return ",".join(map(str, indices))

    def indices(self) -> list[int] | None:
        return [int(part) for part in self.faces.split(",")] if self.faces else None

    def options(self) -> JobOptions:
        return JobOptions(**self.model_dump(exclude={"faces", *_WEBHOOK}))


class BatchSubmission(WebhookFields, JobOptions):
    """multipart/form-data: several images (or one zip of them) plus options for all."""

    model_config = ConfigDict(json_schema_extra=_form_fields)

    files: list[UploadFile] = Field(min_length=1, description="JPEG, PNG or WebP images, or a zip of them")
    webhook_events: str | None = Field(None, description=(
        "Comma-separated: start (the batch's first job starts), completed (its last job ended; the default), "
        "job_start and job_completed (each job, whose view is then the body)"),
        json_schema_extra={"pattern": events_pattern(BATCH_EVENTS)})

    def options(self) -> JobOptions:
        return JobOptions(**self.model_dump(exclude={"files", *_WEBHOOK}))


class BatchJob(BaseModel):
    id: str
    filename: str
    status: str
    stage: str
    progress: float
    error: ErrorBody | None = None
    links: JobLinks


class BatchView(BaseModel):
    id: str
    total: int
    counts: dict[str, int]
    progress: float
    done: bool
    created_at: datetime
    expires_at: datetime | None = None
    jobs: list[BatchJob]
    rejected: list[dict[str, str]] = Field([], description="Files that were not accepted, with the reason")
    webhook: WebhookView | None = None
    links: dict[str, str]


class HealthView(BaseModel):
    status: Literal["ok", "degraded"]
    storage: bool
    weights: bool
    standin_weights: bool
    queue_depth: int | None = None
    problems: list[str] = []


class DetectionInfo(BaseModel):
    """How faces are found (DETECT_MAX_SIDE, DETECT_SECOND_PASS_MAX_SIDE, MAX_FACES)."""

    max_side: int = Field(description="Faces are found on a copy whose longer side is at most this many pixels")
    second_pass_max_side: int = Field(description="small_faces=auto looks again on tiles of a copy at most this "
                                      "large (0: never)")
    max_faces: int = Field(description="Faces restored per photo, highest detection score first")


class PrecisionInfo(BaseModel):
    engine: str = Field(description="What jobs with precision=auto compute in on this instance: f32 or bf16")
    setting: str = Field(description="ENGINE_PRECISION: auto, f32 or bf16")
    native_bf16: bool = Field(description="The runtime reports native bf16 on this CPU")
    bf16_kernel: str = Field(description="The convolution kernel the runtime would use for bf16 here "
                             "(an AMX one is what makes bf16 faster than f32)")


class InfoView(BaseModel):
    standin_weights: bool
    models: list[str]
    max_upload_bytes: int
    max_pixels: int
    max_batch_files: int
    max_batch_bytes: int
    retention_hours: float
    detection: DetectionInfo
    precision: PrecisionInfo
    options: dict[str, Any]


# JobView fields a job record holds under the same name and meaning, copied as they are.
_SAME_AS_RECORD = [name for name in JobView.model_fields
                   if name in {f.name for f in fields(Job)} and name not in ("faces", "error", "batch_id", "webhook")]


def job_view(job: Job, position: int | None, standin: bool, deliveries: list[Delivery] = ()) -> JobView:
    base = f"/api/jobs/{job.id}"
    done = restored(job)
    faces = [
        FaceView(
            index=i,
            box=face["box"],
            restored_box=face.get("restored_box"),
            score=face["score"],
            before=f"{base}/faces/{i}/before" if done else None,
            after=f"{base}/faces/{i}/after" if done else None,
        )
        for i, face in enumerate(job.faces)
    ]
    fmt = job.options.get("output_format", "png")
    return JobView(
        **{name: getattr(job, name) for name in _SAME_AS_RECORD},
        queue_position=position,
        input=ImageInfo(width=job.input_width, height=job.input_height, format=job.input_format),
        color_profile=job.input_profile or None,
        result=ImageInfo(width=job.result_width, height=job.result_height, format=fmt) if done else None,
        faces=faces,
        error=job_error(job),
        batch_id=job.batch_id or None,
        standin_weights=standin,
        webhook=webhook_view(job.webhook, job.webhook_events, list(deliveries)),
        links=job_links(job),
    )
def restored(job: Job) -> bool:
    """A finished restoration (a finished detection has faces but no images)."""
    return job.status == "succeeded" and bool(job.result_blob)


def job_links(job: Job) -> JobLinks:
    base = f"/api/jobs/{job.id}"
    return JobLinks(
        self=base,
        input=f"{base}/input",
        before=f"{base}/before",
        result=f"{base}/result" if restored(job) else None,
        batch=f"/api/batches/{job.batch_id}" if job.batch_id else None,
        restore=f"{base}/restore" if job.status == "succeeded" and not restored(job) else None,
    )


def job_error(job: Job) -> ErrorBody | None:
    return ErrorBody(code=job.error_code or "failed", message=job.error) if job.status == "failed" else None


def batch_view(batch: Batch, members: list[Job], deliveries: list[Delivery] = ()) -> BatchView:
    base = f"/api/batches/{batch.id}"
    jobs = [
        BatchJob(id=j.id, filename=j.filename, status=j.status, stage=j.stage, progress=j.progress,
                 error=job_error(j), links=job_links(j))
        for j in members
    ]
    return BatchView(id=batch.id, created_at=batch.created_at, expires_at=batch.expires_at, jobs=jobs,
                     rejected=batch.rejected, links={"self": base, "zip": f"{base}/results.zip"},
                     webhook=webhook_view(batch.webhook, batch.webhook_events, list(deliveries)),
                     **summary(batch, members))


def job_view_of(service: JobService, job: Job) -> JobView:
    """The job as GET /api/jobs/{id} answers it."""
    deliveries = service.deliveries.of(job.id) if job.webhook else []
    return job_view(job, service.queue_position(job), service.models.standin, deliveries)


def batch_view_of(service: JobService, batch_id: str) -> BatchView:
    batch, members = service.batch(batch_id)
    return batch_view(batch, members, service.deliveries.of(batch.id) if batch.webhook else [])


def webhook_body(service: JobService, kind: str, subject: str) -> bytes | None:
    """A webhook's body: the job or batch as GET answers it now, which is when its event is
    scheduled (the delivery keeps it, and every attempt sends it); None when it is gone."""
    try:
        view = job_view_of(service, service.get(subject)) if kind == "job" else batch_view_of(service, subject)
    except (JobNotFound, BatchNotFound):
        return None
    return view.model_dump_json().encode()


