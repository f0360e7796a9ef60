"""Every error the API answers, as JSON: ``{"error": {"code", "message", ...}}`` with a 4xx or
503 status, never a trace. ``install`` registers one handler per exception the layers below
raise; the table in it is the whole mapping from domain errors to HTTP."""

from __future__ import annotations

import logging
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import telemetry
from ..access.callers import AuthError
from ..images.codec import ImageRejected
from ..jobs.batches import BatchNotFound
from ..jobs.idempotency import IdempotencyKeyInUse, IdempotencyKeyReused
from ..jobs.options import InvalidOption
from ..jobs.records import TERMINAL, JobNotFound
from ..jobs.service import BatchNotReady, NotReady, ServiceBusy
from ..jobs.webhooks import NoWebhookSecret

log = logging.getLogger(__name__)
POLL_SECONDS = 1  # what Retry-After tells a client polling an unfinished job
WWW_AUTHENTICATE = 'ApiKey realm="face-restoration", header="X-API-Key"'


def error_response(http_status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **extra) -> JSONResponse:
    telemetry.refused(http_status, code)  # every refusal (413/415/422/429/503) is counted by its code
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=http_status, headers=headers)


def _plain(error: dict[str, Any]) -> str:
    # A form part without a file name reaches the model as text; say what to send instead
    # of pydantic's "Expected UploadFile, received: <class 'str'>".
    if "Expected UploadFile" in error["msg"]:
        return "send the image as a file part (multipart/form-data with a filename), not as text"
    return error["msg"]


def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path")), "message": _plain(e)}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return error_response(422, "invalid_request", summary or "invalid request", fields=problems)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


def _not_ready(request: Request, exc: NotReady) -> JSONResponse:
    headers = {"Retry-After": str(POLL_SECONDS)} if exc.job.status not in TERMINAL else None
    return error_response(409, "not_ready", str(exc), headers=headers, status=exc.job.status)


def _storage_unavailable(request: Request, exc: AzureError) -> JSONResponse:
    # Transient storage trouble (the SDK already retried): tell the client to come back.
    status = getattr(exc, "status_code", None) if isinstance(exc, HttpResponseError) else None
    log.warning("storage error (%s): %s", status, exc.__class__.__name__)
    return error_response(503, "storage_unavailable", "storage is temporarily unavailable; try again shortly",
                          headers={"Retry-After": "5"})


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not the client's fault: JSON like every other answer, the trace only in the log.
    log.error("unhandled %s on %s %s", exc.__class__.__name__, request.method, request.url.path, exc_info=exc)
    # Starlette answers this one outside the middleware stack, so SecurityHeaders never sees it.
    return error_response(500, "internal_error", "something went wrong on our side; it has been logged",
                          headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def _invalid_option(request: Request, exc: InvalidOption) -> JSONResponse:
    return error_response(422, "invalid_request", f"{exc.field}: {exc}", fields=[{"field": exc.field, "message": str(exc)}])


_HANDLERS = {
    InvalidOption: _invalid_option,
    RequestValidationError: _invalid_request,
    StarletteHTTPException: _http_error,
    JobNotFound: lambda request, exc: error_response(404, "job_not_found", "no such job (it may have expired or been deleted)"),
    BatchNotFound: lambda request, exc: error_response(404, "batch_not_found", "no such batch (it may have expired or been deleted)"),
    BatchNotReady: lambda request, exc: error_response(409, "not_ready", "some of the batch's jobs are still running",
                                                       headers={"Retry-After": "2"}),
    ImageRejected: lambda request, exc: error_response(exc.status, exc.code, str(exc)),
    NotReady: _not_ready,
    AuthError: lambda request, exc: error_response(
        401, exc.code, str(exc), headers={"WWW-Authenticate": WWW_AUTHENTICATE}),
    NoWebhookSecret: lambda request, exc: error_response(
        404, "no_webhook_secret", "this service has no WEBHOOK_SECRET: webhooks are signed with an API key's own "
        "secret, so ask with your key (X-API-Key)"),
    IdempotencyKeyReused: lambda request, exc: error_response(
        422, "idempotency_key_reused", "this Idempotency-Key was used in the last 24 hours for a different request; "
        "use a new key for a new request", fields=[{"field": "Idempotency-Key", "message": "used for another request"}]),
    IdempotencyKeyInUse: lambda request, exc: error_response(
        409, "idempotency_key_in_use", "the first request with this Idempotency-Key is still being answered; "
        "send it again shortly", headers={"Retry-After": "1"}),
    ServiceBusy: lambda request, exc: error_response(503, "busy", str(exc), headers={"Retry-After": str(exc.retry_after)}),
    AzureError: _storage_unavailable,
    Exception: _unexpected,
}


def install(app: FastAPI) -> None:
    for exception, handler in _HANDLERS.items():
        app.add_exception_handler(exception, handler)
