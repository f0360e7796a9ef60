"""/api/batches: several photos (or a zip) with the same options, one job each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from ...jobs.idempotency import Made
from ...jobs.service import JobService
from ..deps import charge_extra, current_caller, get_service
from ..errors import POLL_SECONDS
from ..submissions import IdempotencyKey, accepted, form_fields, once
from ..schemas import BatchSubmission, BatchView, batch_view_of
from .contract import (
    ACCEPTED_HEADERS, GATE, IN_USE, NOT_FOUND, SUBMISSION, BatchId, batch_event, error, header, links_to, retry_after,
    webhook_callbacks,
)

router = APIRouter(prefix="/api/batches", tags=["batches"])
Service = Annotated[JobService, Depends(get_service)]
READ = {**GATE, **NOT_FOUND}


@router.post("", status_code=202, response_model=BatchView, responses={
    202: {"description": "Accepted: one job per image, the first few queued; files that were not accepted are listed "
                         "in rejected", "headers": ACCEPTED_HEADERS,
          "links": {**links_to(("get_batch", "get_batch_results", "delete_batch"), "batch_id"),
                    **links_to(("get_job",), "job_id", "$response.body#/jobs/0/id")}},
    **GATE, **SUBMISSION, **IN_USE,
}, callbacks=webhook_callbacks("submit_batch", batch_event), summary="Submit several photos (or a zip) with the same options: one job each")
def submit_batch(request: Request, response: Response, form: Annotated[BatchSubmission, File()], service: Service,
                 idempotency_key: IdempotencyKey = None) -> BatchView:
    files = [(f.filename or "", f.file.read(service.settings.max_batch_bytes + 1)) for f in form.files]

    caller = current_caller(request)

    def make() -> Made:
        webhook = service.webhook(form.webhook, form.webhook_events, own_secret=caller.kind == "key", batch=True)
        batch = service.submit_batch(files, form.options(), owner=caller.owner, webhook=webhook)
        charge_extra(request, len(batch.job_ids) - 1)  # one submission token per image
        return Made("batch", batch.id)

    parts = [form_fields(form, "files"), *(part for name, data in files for part in (name, data))]
    batch_id, replayed = once(request, service, idempotency_key, parts, make)
    accepted(response, f"/api/batches/{batch_id}", replayed)
    return batch_view_of(service, batch_id)


@router.get("/{batch_id}", response_model=BatchView, summary="Batch progress", responses={
    200: {"description": "The batch", "headers": retry_after("Seconds until the next poll, while jobs run", required=False)},
    **READ,
})
def get_batch(batch_id: BatchId, response: Response, service: Service) -> BatchView:
    view = batch_view_of(service, batch_id)
    if not view.done:
        response.headers["Retry-After"] = str(POLL_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return view


@router.get("/{batch_id}/results.zip", response_class=StreamingResponse, responses={
    200: {"description": "A zip of every restored image", "content": {"application/zip": {}},
          "headers": {"Content-Disposition": header("attachment; a file name")}},
    **READ, **error(409, "Some of the batch's jobs are still running", retry_after("Seconds to wait")),
}, summary="Every restored image of a finished batch, as one zip")
def get_batch_results(batch_id: BatchId, service: Service) -> StreamingResponse:
    spool = service.batch_zip(batch_id)
    return StreamingResponse(
        iter(lambda: spool.read(1 << 20), b""),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="restored-{batch_id[:8]}.zip"'},
        background=BackgroundTask(spool.close),
    )


@router.delete("/{batch_id}", status_code=204, responses={204: {"description": "Deleted"}, **READ},
               summary="Delete a batch and all its jobs")
def delete_batch(batch_id: BatchId, service: Service) -> Response:
    service.delete_batch(batch_id)
    return Response(status_code=204)
