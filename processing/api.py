"""The HTTP API: a FastAPI app served by uvicorn locally and by AsgiFunctionApp in Azure.

Every response that is not an image is JSON; every error is
``{"error": {"code": ..., "message": ...}}`` with a 4xx/503 status, never a trace.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from azure.core.exceptions import AzureError, HttpResponseError
from fastapi import Depends, FastAPI, Form, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import weights
from .batches import BatchNotFound, summary
from .config import Settings
from .gate import AccessGate, charge_extra, current_caller, owner_check
from .images import ImageRejected
from .jobs import TERMINAL, Job, JobNotFound
from .options import JobOptions
from .service import BatchNotReady, Download, JobService, NotReady, ServiceBusy
from .storage import Storage

log = logging.getLogger(__name__)
POLL_SECONDS = 1


# -- response models (they are the API reference at /docs) ------------------------------


class JobSubmission(JobOptions):
    """multipart/form-data: the image plus any options (all optional)."""

    file: UploadFile = Field(description="The photo: JPEG, PNG or WebP")

    def options(self) -> JobOptions:
        return JobOptions(**self.model_dump(exclude={"file"}))


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


class FaceView(BaseModel):
    index: int
    box: list[float] = Field(description="x0, y0, x1, y1 in input pixels")
    score: float
    before: str | None = None
    after: str | None = None


class ImageInfo(BaseModel):
    width: int
    height: int
    format: str


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
    result: ImageInfo | None = None
    face_count: int | None = None
    faces: list[FaceView] = []
    attempts: int = 0
    error: ErrorBody | None = None
    timings: dict[str, float] = {}
    preprocessing: list[str] = Field([], description="Preprocessing steps applied, in order")
    batch_id: str | None = None
    standin_weights: bool = False
    links: JobLinks


class BatchSubmission(JobOptions):
    """multipart/form-data: several images (or one zip of them) plus options for all."""

    files: list[UploadFile] = Field(description="JPEG, PNG or WebP images, or a zip of them")

    def options(self) -> JobOptions:
        return JobOptions(**self.model_dump(exclude={"files"}))


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
    links: dict[str, str]


class HealthView(BaseModel):
    status: Literal["ok", "degraded"]
    storage: bool
    weights: bool
    standin_weights: bool
    queue_depth: int | None = None
    problems: list[str] = []


class InfoView(BaseModel):
    standin_weights: bool
    models: list[str]
    max_upload_bytes: int
    max_pixels: int
    max_batch_files: int
    max_batch_bytes: int
    retention_hours: float
    options: dict[str, Any]


def _error(http_status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    body = {"code": code, "message": message, **extra}
    return JSONResponse({"error": body}, status_code=http_status, headers=headers)


def _plain(error: dict[str, Any]) -> str:
    # A form part without a file name reaches the model as text; say what to send instead
    # of pydantic's "Expected UploadFile, received: <class 'str'>".
    if "Expected UploadFile" in error["msg"]:
        return "send the image as a file part (multipart/form-data with a filename), not as text"
    return error["msg"]


def job_view(job: Job, position: int | None, standin: bool) -> JobView:
    base = f"/api/jobs/{job.id}"
    done = job.status == "succeeded"
    faces = [
        FaceView(
            index=i,
            box=face["box"],
            score=face["score"],
            before=f"{base}/faces/{i}/before" if done else None,
            after=f"{base}/faces/{i}/after" if done else None,
        )
        for i, face in enumerate(job.faces)
    ]
    fmt = job.options.get("output_format", "png")
    return JobView(
        id=job.id,
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        queue_position=position,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
        filename=job.filename,
        options=job.options,
        input=ImageInfo(width=job.input_width, height=job.input_height, format=job.input_format),
        result=ImageInfo(width=job.result_width, height=job.result_height, format=fmt) if done else None,
        face_count=job.face_count,
        faces=faces,
        attempts=job.attempts,
        error=_job_error(job),
        timings=job.timings,
        preprocessing=job.preprocessing,
        batch_id=job.batch_id or None,
        standin_weights=standin,
        links=job_links(job),
    )


def job_links(job: Job) -> JobLinks:
    base = f"/api/jobs/{job.id}"
    return JobLinks(
        self=base,
        input=f"{base}/input",
        before=f"{base}/before",
        result=f"{base}/result" if job.status == "succeeded" else None,
        batch=f"/api/batches/{job.batch_id}" if job.batch_id else None,
    )


def _job_error(job: Job) -> ErrorBody | None:
    return ErrorBody(code=job.error_code or "failed", message=job.error) if job.status == "failed" else None


def batch_view(batch, members: list[Job]) -> BatchView:
    base = f"/api/batches/{batch.id}"
    jobs = [
        BatchJob(id=j.id, filename=j.filename, status=j.status, stage=j.stage, progress=j.progress,
                 error=_job_error(j), links=job_links(j))
        for j in members
    ]
    return BatchView(id=batch.id, created_at=batch.created_at, expires_at=batch.expires_at, jobs=jobs,
                     rejected=batch.rejected, links={"self": base, "zip": f"{base}/results.zip"},
                     **summary(batch, members))


def _file_response(download: Download, disposition: str = "inline") -> Response:
    return Response(
        download.data,
        media_type=download.content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{download.filename}"',
            "Cache-Control": "private, max-age=3600",
        },
    )


class SecurityHeaders:
    """Headers for every response; the page gets a strict CSP (it has no inline script)."""

    CSP = (
        "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' {api}; script-src 'self'; "
        "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )

    def __init__(self, app, api_origins: tuple[str, ...] = ()):
        self.app = app
        self.csp = self.CSP.format(api=" ".join(api_origins)).replace("  ", " ")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", self.csp.encode()),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuse bodies over the limit while they arrive, before anything is buffered in full.
    ``limits`` maps a path prefix to its limit; the first match wins."""

    def __init__(self, app, limits: list[tuple[str, int]]):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        max_bytes = next(limit for prefix, limit in self.limits if scope["path"].startswith(prefix))
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return await self._refuse(send, max_bytes)
        seen = 0
        exceeded = started = False

        async def counting_receive():
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                exceeded = True
                raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            # A chunked body (no Content-Length) goes over the limit while the form is
            # parsed; FastAPI turns the error into a 400 of its own. Drop that answer and
            # give the 413 that names the problem.
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send, max_bytes)

    @staticmethod
    async def _refuse(send, max_bytes: int):
        response = _error(413, "file_too_large", f"the upload is larger than {max_bytes / 1e6:.0f} MB")
        await response({"type": "http"}, None, send)


class _BodyTooLarge(Exception):
    pass


def create_app(settings: Settings, storage: Storage | None = None) -> FastAPI:
    storage = storage or Storage(settings)
    service = JobService(settings, storage)
    standin = weights.is_standin_dir(settings.weights_dir)

    app = FastAPI(
        title="Face restoration API",
        version="1.0.0",
        description="Upload a photo; GFPGAN restores the faces. Jobs are asynchronous: POST, then poll the Location.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        # Owned jobs and batches are found only by their owner (404 to anyone else).
        dependencies=[Depends(owner_check)],
    )
    app.state.service = service
    app.state.settings = settings

    # Multipart framing adds a little to the files themselves.
    framing = 64 * 1024
    app.add_middleware(BodyLimit, limits=[("/api/batches", settings.max_batch_bytes + framing),
                                          ("/", settings.max_upload_bytes + framing)])
    # Keys, principals, REQUIRE_AUTH and rate limits, before any body is read.
    app.add_middleware(AccessGate, settings=settings, storage=storage)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
            expose_headers=["Location", "Retry-After"],
        )
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path")), "message": _plain(e)}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return _error(422, "invalid_request", summary or "invalid request", fields=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(JobNotFound)
    async def not_found(request: Request, exc: JobNotFound):
        return _error(404, "job_not_found", "no such job (it may have expired or been deleted)")

    @app.exception_handler(BatchNotFound)
    async def batch_not_found(request: Request, exc: BatchNotFound):
        return _error(404, "batch_not_found", "no such batch (it may have expired or been deleted)")

    @app.exception_handler(BatchNotReady)
    async def batch_not_ready(request: Request, exc: BatchNotReady):
        return _error(409, "not_ready", "some of the batch's jobs are still running", headers={"Retry-After": "2"})

    @app.exception_handler(ImageRejected)
    async def rejected(request: Request, exc: ImageRejected):
        return _error(exc.status, exc.code, str(exc))

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady):
        headers = {"Retry-After": str(POLL_SECONDS)} if exc.job.status not in TERMINAL else None
        return _error(409, "not_ready", str(exc), headers=headers, status=exc.job.status)

    @app.exception_handler(ServiceBusy)
    async def busy(request: Request, exc: ServiceBusy):
        return _error(503, "busy", str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(AzureError)
    async def storage_unavailable(request: Request, exc: AzureError):
        # Transient storage trouble (the SDK already retried): tell the client to come back.
        status = getattr(exc, "status_code", None) if isinstance(exc, HttpResponseError) else None
        log.warning("storage error (%s): %s", status, exc.__class__.__name__)
        return _error(503, "storage_unavailable", "storage is temporarily unavailable; try again shortly",
                      headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # A bug, not the client's fault: JSON like every other answer, the trace only in the log.
        log.error("unhandled %s on %s %s", exc.__class__.__name__, request.method, request.url.path, exc_info=exc)
        # Starlette answers this one outside the middleware stack, so SecurityHeaders never sees it.
        return _error(500, "internal_error", "something went wrong on our side; it has been logged",
                      headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    def view(job: Job) -> JobView:
        return job_view(job, service.queue_position(job), standin)

    errors = {
        404: {"model": ErrorResponse, "description": "Unknown job"},
        409: {"model": ErrorResponse, "description": "Result not ready"},
    }
    submit_errors = {status: {"model": ErrorResponse} for status in (413, 415, 422, 503)}

    @app.post(
        "/api/jobs",
        status_code=202,
        response_model=JobView,
        responses=submit_errors,
        summary="Submit a photo for restoration",
    )
    def submit_job(request: Request, response: Response, form: Annotated[JobSubmission, Form()]) -> JobView:
        data = form.file.file.read(settings.max_upload_bytes + 1)
        job = service.submit(data, form.file.filename or "", form.options(), owner=current_caller(request).owner)
        response.headers["Location"] = f"/api/jobs/{job.id}"
        response.headers["Retry-After"] = str(POLL_SECONDS)
        return view(job)

    @app.get("/api/jobs/{job_id}", response_model=JobView, responses=errors, summary="Job status")
    def get_job(job_id: str, response: Response) -> JobView:
        job = service.get(job_id)
        if not job.terminal:
            response.headers["Retry-After"] = str(POLL_SECONDS)
        response.headers["Cache-Control"] = "no-store"
        return view(job)

    @app.get("/api/jobs/{job_id}/result", responses={200: {"content": {"image/png": {}}}, **errors},
             summary="The restored image")
    def get_result(job_id: str, download: bool = False) -> Response:
        return _file_response(service.result(job_id), "attachment" if download else "inline")

    @app.get("/api/jobs/{job_id}/input", responses={200: {"content": {"image/png": {}}}, **errors},
             summary="The uploaded image as stored (oriented, metadata removed)")
    def get_input(job_id: str) -> Response:
        return _file_response(service.original(job_id))

    @app.get("/api/jobs/{job_id}/before", responses={200: {"content": {"image/png": {}}}, **errors},
             summary="The image the engine restored (the input after preprocessing)")
    def get_before(job_id: str) -> Response:
        return _file_response(service.before(job_id))

    @app.get("/api/jobs/{job_id}/faces/{index}/{which}", responses={200: {"content": {"image/png": {}}}, **errors},
             summary="One face, aligned, before or after restoration")
    def get_face(job_id: str, index: int, which: Literal["before", "after"]) -> Response:
        return _file_response(service.face(job_id, index, which))

    @app.delete("/api/jobs/{job_id}", status_code=204, responses=errors, summary="Delete a job and its images now")
    def delete_job(job_id: str) -> Response:
        service.delete(job_id)
        return Response(status_code=204)

    @app.post(
        "/api/batches",
        status_code=202,
        response_model=BatchView,
        responses=submit_errors,
        summary="Submit several photos (or a zip) with the same options: one job each",
    )
    def submit_batch(request: Request, response: Response, form: Annotated[BatchSubmission, Form()]) -> BatchView:
        files = [(f.filename or "", f.file.read(settings.max_batch_bytes + 1)) for f in form.files]
        batch = service.submit_batch(files, form.options(), owner=current_caller(request).owner)
        charge_extra(request, len(batch.job_ids) - 1)  # one submission token per image
        response.headers["Location"] = f"/api/batches/{batch.id}"
        response.headers["Retry-After"] = str(POLL_SECONDS)
        return batch_view(*service.batch(batch.id))

    @app.get("/api/batches/{batch_id}", response_model=BatchView, responses=errors, summary="Batch progress")
    def get_batch(batch_id: str, response: Response) -> BatchView:
        view_ = batch_view(*service.batch(batch_id))
        if not view_.done:
            response.headers["Retry-After"] = str(POLL_SECONDS)
        response.headers["Cache-Control"] = "no-store"
        return view_

    @app.get("/api/batches/{batch_id}/results.zip", responses={200: {"content": {"application/zip": {}}}, **errors},
             summary="Every restored image of a finished batch, as one zip")
    def get_batch_zip(batch_id: str) -> StreamingResponse:
        spool = service.batch_zip(batch_id)
        return StreamingResponse(
            iter(lambda: spool.read(1 << 20), b""),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="restored-{batch_id[:8]}.zip"'},
            background=BackgroundTask(spool.close),
        )

    @app.delete("/api/batches/{batch_id}", status_code=204, responses=errors, summary="Delete a batch and all its jobs")
    def delete_batch(batch_id: str) -> Response:
        service.delete_batch(batch_id)
        return Response(status_code=204)

    @functools.cache
    def weight_problems() -> list[str]:
        # Once per process: weights do not change under a running instance, and in a read-only
        # image directory check() would re-hash ~900 MB on every probe.
        if not settings.weights_dir.is_dir():
            return [f"weights: directory {settings.weights_dir} does not exist"]
        return [f"weights: {s.name} {s.problem}" for s in weights.check(settings.weights_dir) if not s.ok]

    @app.get("/api/health", response_model=HealthView, summary="Storage reachable, weights present, queue depth")
    def health(response: Response) -> HealthView:
        problems = []
        depth = None
        try:
            depth = service.queue_depth()
            next(iter(service.jobs.table.query_entities("PartitionKey eq 'health'", results_per_page=1)), None)
        except AzureError as error:
            problems.append(f"storage: {error.__class__.__name__}")
        bad = weight_problems()
        problems += bad
        if problems:
            response.status_code = 503
        return HealthView(
            status="degraded" if problems else "ok",
            storage=depth is not None,
            weights=not bad,
            standin_weights=standin,
            queue_depth=depth,
            problems=problems,
        )

    @app.get("/api/info", response_model=InfoView, summary="What the page needs to know: limits, options, mode")
    def info() -> InfoView:
        return InfoView(
            standin_weights=standin,
            models=[m for m, name in weights.GFPGAN_FILES.items() if (settings.weights_dir / name).is_file()],
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            max_batch_files=settings.max_batch_files,
            max_batch_bytes=settings.max_batch_bytes,
            retention_hours=settings.retention_hours,
            options=JobOptions.model_json_schema()["properties"],
        )

    if settings.static_site_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.static_site_dir, html=True), name="site")
    return app
