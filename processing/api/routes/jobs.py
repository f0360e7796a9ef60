"""/api/jobs: submit a photo, follow it, fetch its images, delete it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request, Response

from ...jobs.records import Job
from ...jobs.service import Download, JobService
from ..deps import current_caller, get_service
from ..errors import POLL_SECONDS
from ..schemas import ErrorResponse, FaceChoice, JobSubmission, JobView, job_view

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
Service = Annotated[JobService, Depends(get_service)]

ERRORS = {
    404: {"model": ErrorResponse, "description": "Unknown job"},
    409: {"model": ErrorResponse, "description": "Result not ready"},
}
SUBMIT_ERRORS = {status: {"model": ErrorResponse} for status in (413, 415, 422, 503)}
IMAGE = {200: {"content": {"image/png": {}}}, **ERRORS}


def view(service: JobService, job: Job) -> JobView:
    return job_view(job, service.queue_position(job), service.models.standin)


def file_response(download: Download, disposition: str = "inline") -> Response:
    return Response(
        download.data,
        media_type=download.content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{download.filename}"',
            "Cache-Control": "private, max-age=3600",
        },
    )


@router.post("", status_code=202, response_model=JobView, responses=SUBMIT_ERRORS, summary="Submit a photo for restoration")
def submit_job(request: Request, response: Response, form: Annotated[JobSubmission, Form()], service: Service) -> JobView:
    data = form.file.file.read(service.settings.max_upload_bytes + 1)
    job = service.submit(data, form.file.filename or "", form.options(), owner=current_caller(request).owner)
    response.headers["Location"] = f"/api/jobs/{job.id}"
    response.headers["Retry-After"] = str(POLL_SECONDS)
    return view(service, job)


@router.post("/{job_id}/restore", status_code=202, response_model=JobView, responses={**ERRORS, **SUBMIT_ERRORS},
             summary="Restore chosen faces of a finished detection (detect_only), without sending the photo again")
def restore_chosen(job_id: str, request: Request, response: Response, form: Annotated[FaceChoice, Form()],
                   service: Service) -> JobView:
    job = service.restore_chosen(job_id, form.indices(), form.options(), owner=current_caller(request).owner)
    response.headers["Location"] = f"/api/jobs/{job.id}"
    response.headers["Retry-After"] = str(POLL_SECONDS)
    return view(service, job)


@router.get("/{job_id}", response_model=JobView, responses=ERRORS, summary="Job status")
def get_job(job_id: str, response: Response, service: Service) -> JobView:
    job = service.get(job_id)
    if not job.terminal:
        response.headers["Retry-After"] = str(POLL_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return view(service, job)


@router.get("/{job_id}/result", responses=IMAGE, summary="The restored image")
def get_result(job_id: str, service: Service, download: bool = False) -> Response:
    return file_response(service.result(job_id), "attachment" if download else "inline")


@router.get("/{job_id}/input", responses=IMAGE, summary="The uploaded image as stored (oriented, metadata removed)")
def get_input(job_id: str, service: Service) -> Response:
    return file_response(service.original(job_id))


@router.get("/{job_id}/before", responses=IMAGE, summary="The image the engine restored (the input after preprocessing)")
def get_before(job_id: str, service: Service) -> Response:
    return file_response(service.before(job_id))


@router.get("/{job_id}/faces/{index}/{which}", responses=IMAGE, summary="One face, aligned, before or after restoration")
def get_face(job_id: str, index: int, which: Literal["before", "after"], service: Service) -> Response:
    return file_response(service.face(job_id, index, which))


@router.delete("/{job_id}", status_code=204, responses=ERRORS, summary="Delete a job and its images now")
def delete_job(job_id: str, service: Service) -> Response:
    service.delete(job_id)
    return Response(status_code=204)
