"""/api/jobs: submit a photo, follow it, fetch its images, delete it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response
from starlette.concurrency import run_in_threadpool

from ...jobs.idempotency import Made
from ...jobs.records import Job
from ...jobs.service import Download, JobService
from ..deps import current_caller, get_service
from ..errors import POLL_SECONDS
from ..submissions import IdempotencyKey, Prefer, accepted, finished, form_fields, once, requested_wait
from ..schemas import FaceChoice, JobSubmission, JobView, job_view_of
from .contract import (
    ACCEPTED_HEADERS, GATE, IN_USE, INVALID, KEY_IN_USE, NOT_FOUND, NOT_READY, SUBMISSION, JobId,
    error, header, image, links_to, retry_after, webhook_callbacks,
)

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
Service = Annotated[JobService, Depends(get_service)]

# The operations a submitted job's id opens, each an OpenAPI link from the 202.
JOB_OPERATIONS = ("get_job", "get_job_result", "get_job_input", "get_job_before", "get_job_face", "delete_job",
                  "restore_chosen")
READ = {**GATE, **NOT_FOUND}


def view(service: JobService, job: Job) -> JobView:
    return job_view_of(service, job)


def file_response(download: Download, disposition: str = "inline") -> Response:
    return Response(
        download.data,
        media_type=download.content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{download.filename}"',
            "Cache-Control": "private, max-age=3600",
        },
    )


@router.post("", status_code=202, response_model=JobView, summary="Submit a photo for restoration", responses={
    200: {"description": "With Prefer: wait=N, the job ended within N seconds: the finished job", "headers": {
        "Preference-Applied": header("wait=N: the wait that was honoured"),
        "Content-Location": header("The job's URL")}, "links": links_to(JOB_OPERATIONS, "job_id")},
    202: {"description": "Accepted and queued: poll the Location", "headers": ACCEPTED_HEADERS,
          "links": links_to(JOB_OPERATIONS, "job_id")},
    **GATE, **SUBMISSION, **IN_USE, **error(415, "The file is not a JPEG, PNG or WebP image (GIF, SVG, HEIC... are named)"),
}, callbacks=webhook_callbacks("submit_job"))
async def submit_job(request: Request, response: Response, form: Annotated[JobSubmission, File()], service: Service,
                     idempotency_key: IdempotencyKey = None, prefer: Prefer = None) -> JobView:
    wait = requested_wait(prefer)
    async with request.app.state.waiting_room.seat(wait is not None):
        job_id, replayed = await run_in_threadpool(_submit, request, form, service, idempotency_key)
        job = await finished(service, job_id, wait) if wait else None
    if job is not None and job.terminal:
        response.status_code = 200
        response.headers["Preference-Applied"] = f"wait={wait}"
        response.headers["Content-Location"] = f"/api/jobs/{job_id}"
    else:
        accepted(response, f"/api/jobs/{job_id}", replayed)
    return await run_in_threadpool(lambda: view(service, job or service.get(job_id)))


def _submit(request: Request, form: JobSubmission, service: JobService, idempotency_key: str | None) -> tuple[str, bool]:
    data = form.file.file.read(service.settings.max_upload_bytes + 1)
    filename = form.file.filename or ""
    caller = current_caller(request)

    def make() -> Made:
        webhook = service.webhook(form.webhook, form.webhook_events, own_secret=caller.kind == "key")
        return Made("job", service.submit(data, filename, form.options(), owner=caller.owner, webhook=webhook).id)

    return once(request, service, idempotency_key, [form_fields(form, "file"), filename, data], make)


@router.post("/{job_id}/restore", status_code=202, response_model=JobView,
             summary="Restore chosen faces of a finished detection (detect_only), without sending the photo again",
             responses={
                 202: {"description": "Accepted and queued: a new job for the chosen faces; poll the Location",
                       "headers": ACCEPTED_HEADERS, "links": links_to(JOB_OPERATIONS, "job_id")},
                 **READ, **SUBMISSION,
                 **error(409, "The job has not finished finding faces (or it failed): the body's error.status says which; "
                              f"or {KEY_IN_USE}",
                         retry_after("Seconds until it is worth asking again, while the job still runs", required=False)),
             }, callbacks=webhook_callbacks("restore_chosen"))
def restore_chosen(job_id: JobId, request: Request, response: Response, form: Annotated[FaceChoice, Form()],
                   service: Service, idempotency_key: IdempotencyKey = None) -> JobView:
    caller = current_caller(request)

    def make() -> Made:
        webhook = service.webhook(form.webhook, form.webhook_events, own_secret=caller.kind == "key")
        return Made("job", service.restore_chosen(job_id, form.indices(), form.options(), owner=caller.owner,
                                                  webhook=webhook).id)

    made, replayed = once(request, service, idempotency_key, [form_fields(form)], make)
    accepted(response, f"/api/jobs/{made}", replayed)
    return view(service, service.get(made))


@router.get("/{job_id}", response_model=JobView, summary="Job status", responses={
    200: {"description": "The job", "headers": retry_after("Seconds until the next poll, while the job runs", required=False)},
    **READ,
})
def get_job(job_id: JobId, response: Response, service: Service) -> JobView:
    job = service.get(job_id)
    if not job.terminal:
        response.headers["Retry-After"] = str(POLL_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return view(service, job)


@router.get("/{job_id}/result", response_class=Response, summary="The restored image",
            responses={**image("image/png", "image/jpeg", "image/webp"), **READ, **NOT_READY, **INVALID})
def get_job_result(job_id: JobId, service: Service, download: bool = False) -> Response:
    return file_response(service.result(job_id), "attachment" if download else "inline")


@router.get("/{job_id}/input", response_class=Response, responses={**image("image/png"), **READ},
            summary="The uploaded image as stored (oriented, metadata removed)")
def get_job_input(job_id: JobId, service: Service) -> Response:
    return file_response(service.original(job_id))


@router.get("/{job_id}/before", response_class=Response, responses={**image("image/png"), **READ},
            summary="The image the engine restored (the input after preprocessing)")
def get_job_before(job_id: JobId, service: Service) -> Response:
    return file_response(service.before(job_id))


@router.get("/{job_id}/faces/{index}/{which}", response_class=Response,
            responses={**image("image/png"), **READ, **NOT_READY, **INVALID},
            summary="One face, aligned, before or after restoration")
def get_job_face(job_id: JobId, index: int, which: Literal["before", "after"], service: Service) -> Response:
    return file_response(service.face(job_id, index, which))


@router.delete("/{job_id}", status_code=204, responses={204: {"description": "Deleted"}, **READ},
               summary="Delete a job and its images now")
def delete_job(job_id: JobId, service: Service) -> Response:
    service.delete(job_id)
    return Response(status_code=204)
