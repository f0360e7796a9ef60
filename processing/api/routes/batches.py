"""/api/batches: several photos (or a zip) with the same options, one job each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from ...jobs.service import JobService
from ..deps import charge_extra, current_caller, get_service
from ..errors import POLL_SECONDS
from ..schemas import BatchSubmission, BatchView, batch_view
from .jobs import ERRORS, SUBMIT_ERRORS

router = APIRouter(prefix="/api/batches", tags=["batches"])
Service = Annotated[JobService, Depends(get_service)]


@router.post("", status_code=202, response_model=BatchView, responses=SUBMIT_ERRORS,
             summary="Submit several photos (or a zip) with the same options: one job each")
def submit_batch(request: Request, response: Response, form: Annotated[BatchSubmission, Form()], service: Service) -> BatchView:
    files = [(f.filename or "", f.file.read(service.settings.max_batch_bytes + 1)) for f in form.files]
    batch = service.submit_batch(files, form.options(), owner=current_caller(request).owner)
    charge_extra(request, len(batch.job_ids) - 1)  # one submission token per image
    response.headers["Location"] = f"/api/batches/{batch.id}"
    response.headers["Retry-After"] = str(POLL_SECONDS)
    return batch_view(*service.batch(batch.id))


@router.get("/{batch_id}", response_model=BatchView, responses=ERRORS, summary="Batch progress")
def get_batch(batch_id: str, response: Response, service: Service) -> BatchView:
    view = batch_view(*service.batch(batch_id))
    if not view.done:
        response.headers["Retry-After"] = str(POLL_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return view


@router.get("/{batch_id}/results.zip", responses={200: {"content": {"application/zip": {}}}, **ERRORS},
            summary="Every restored image of a finished batch, as one zip")
def get_batch_zip(batch_id: str, service: Service) -> StreamingResponse:
    spool = service.batch_zip(batch_id)
    return StreamingResponse(
        iter(lambda: spool.read(1 << 20), b""),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="restored-{batch_id[:8]}.zip"'},
        background=BackgroundTask(spool.close),
    )


@router.delete("/{batch_id}", status_code=204, responses=ERRORS, summary="Delete a batch and all its jobs")
def delete_batch(batch_id: str, service: Service) -> Response:
    service.delete_batch(batch_id)
    return Response(status_code=204)
