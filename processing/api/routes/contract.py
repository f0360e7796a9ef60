"""What the routers share in /openapi.json: every answer an operation can give besides its own,
with the headers that come with it, and the OpenAPI links from a submission to what it made.

Each operation lists exactly the statuses it can answer (Schemathesis checks this against the
live service in tests/contract). Every job and batch route passes the access gate first (401,
429, 503), and FastAPI's default 422 is dropped where nothing can fail validation (app.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path

from ..schemas import BatchView, ErrorResponse, JobView


def _id(what: str) -> Any:
    # Ids are 128-bit random, as 32 lowercase hex digits; any other value is simply not found (404).
    return Annotated[str, Path(description=f"The {what}'s id (from its submission)",
                               json_schema_extra={"pattern": "^[0-9a-f]{32}$"})]


JobId, BatchId = _id("job"), _id("batch")


def header(description: str, *, required: bool = True, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


def retry_after(description: str, *, required: bool = True) -> dict[str, Any]:
    return {"Retry-After": header(description, required=required, schema={"type": "integer", "minimum": 0})}


def error(status: int, description: str, headers: dict[str, Any] | None = None) -> dict[int, dict[str, Any]]:
    answer: dict[str, Any] = {"model": ErrorResponse, "description": description}
    if headers:
        answer["headers"] = headers
    return {status: answer}


def image(*media_types: str) -> dict[int, dict[str, Any]]:
    return {200: {"description": "The image", "content": {media_type: {} for media_type in media_types},
                  "headers": {"Content-Disposition": header("inline, or attachment with ?download=true; a file name")}}}


# The access gate, in front of every job and batch route.
GATE = {
    **error(401, "X-API-Key present but unknown or revoked (or, with REQUIRE_AUTH, a submission with neither "
                 "a key nor a signed-in user)",
            {"WWW-Authenticate": header("ApiKey realm and header name")}),
    **error(429, "Over this client's rate limit", retry_after("Seconds until the bucket has a token again")),
    **error(503, "Storage unavailable, or (submissions) the queue is full or too many requests already wait "
                 "(Prefer: wait)", retry_after("Seconds to wait")),
}
NOT_FOUND = error(404, "No such job or batch (expired, deleted, or owned by another caller)")
# A non-terminal job's 409 says when to look again; a failed or cancelled job's does not.
NOT_READY = error(409, "Not finished yet (or it failed): the body's error.status says which",
                  retry_after("Seconds until it is worth asking again, while the job is still running", required=False))
INVALID = error(422, "A field failed validation; error.fields names each one")
SUBMISSION = {
    **error(400, "The body is not multipart/form-data that can be parsed"),
    **error(413, "The body, a file, or an image's pixel count (or a batch's file count) is over the limit"),
    **error(422, "A field failed validation (error.fields names each one), or the Idempotency-Key was used for a "
                 "different request (idempotency_key_reused)"),
}
ACCEPTED_HEADERS = {
    "Location": header("The new job's (or batch's) URL"),
    **retry_after("Seconds before the first poll is worth it"),
    "Idempotent-Replayed": header("true: this answers a repeated Idempotency-Key with what its first request made",
                                  required=False, schema={"type": "string", "enum": ["true"]}),
}
# A duplicate of a request with the same Idempotency-Key that is still being answered.
KEY_IN_USE = "the first request with the same Idempotency-Key is still being answered (idempotency_key_in_use)"
IN_USE = error(409, KEY_IN_USE[0].upper() + KEY_IN_USE[1:], retry_after("Seconds to wait before sending it again"))


def links_to(operations: tuple[str, ...], parameter: str, expression: str = "$response.body#/id") -> dict[str, Any]:
    """OpenAPI links from a response to the operations that take what it created."""
    return {operation: {"operationId": operation, "parameters": {parameter: expression}} for operation in operations}


# The webhook, as OpenAPI callbacks: what the service POSTs to a submission's webhook URL.
WebhookId = Annotated[str, Header(description="The event's id: the same on every retry (dedupe on it)")]
WebhookTimestamp = Annotated[int, Header(description="Unix seconds of this attempt (reject it 5 minutes off)")]
WebhookSignature = Annotated[str, Header(description=(
    "v1,<base64 HMAC-SHA256 over '{webhook-id}.{webhook-timestamp}.{body}'>, keyed with the base64-decoded part of the "
    "whsec_ secret from GET /api/webhooks/secret (Standard Webhooks)"))]


def job_event(body: Annotated[JobView, Body()], webhook_id: WebhookId, webhook_timestamp: WebhookTimestamp,
              webhook_signature: WebhookSignature) -> None:
    """The job as GET /api/jobs/{id} answers it."""


def batch_event(body: Annotated[BatchView | JobView, Body()], webhook_id: WebhookId,
                webhook_timestamp: WebhookTimestamp, webhook_signature: WebhookSignature) -> None:
    """The batch as GET /api/batches/{id} answers it (start, completed), or one of its jobs (job_start,
    job_completed)."""


def webhook_callbacks(operation: str, endpoint=job_event) -> list:
    """The OpenAPI callbacks of a submission whose webhook ``endpoint`` documents (never called:
    it is the receiver's side), with an operation id of its own."""
    router = APIRouter()
    router.add_api_route(
        "{$request.body#/webhook}", endpoint, methods=["POST"], name=endpoint.__name__,
        operation_id=f"{operation}_webhook", status_code=200, summary="A webhook call: " + endpoint.__doc__.split("\n")[0],
        description="Sent for each event in webhook_events, from a queue of its own: any 2xx ends it; anything else (a "
                    "redirect too: none is followed), or no answer within WEBHOOK_TIMEOUT_SECONDS, is tried again, five "
                    "tries over about an hour. Each attempt is recorded in the job's (or batch's) webhook.deliveries.",
        responses={200: {"description": "Any 2xx: received"}})
    return router.routes
