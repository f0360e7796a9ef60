"""What the three POSTs that make work (a job, a batch, a restoration of chosen faces) share:
the Idempotency-Key header and how a submission is answered."""

from __future__ import annotations

import json
from typing import Annotated, Callable

from fastapi import Header, Request, Response
from pydantic import BaseModel

from ..jobs.idempotency import Made, fingerprint
from ..jobs.service import JobService
from .deps import current_caller
from .errors import POLL_SECONDS

KEY_PATTERN = "^[\\x21-\\x7e]{1,255}$"  # printable ASCII without spaces, as Stripe's keys
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=KEY_PATTERN, max_length=255,
    description="Makes a retried POST safe (Stripe's rules): the same key from the same caller within 24 hours "
                "answers with the job (or batch) the first request made, without a second upload or queue message "
                "(Idempotent-Replayed: true says so); the same key with a different request is a 422 "
                "idempotency_key_reused; while the first is still being answered, a duplicate waits for it (then 409 "
                "idempotency_key_in_use if it takes over 10 s). A request that was refused does not use the key up.")]


def form_fields(form: BaseModel, *files: str) -> str:
    """A form's fields (not its files) as canonical JSON, for the request's fingerprint."""
    return json.dumps(form.model_dump(exclude=set(files), mode="json"), sort_keys=True)


def once(request: Request, service: JobService, key: str | None, parts: list[bytes | str],
         make: Callable[[], Made]) -> tuple[str, bool]:
    """The id of what ``make()`` made, once per Idempotency-Key, and whether this answer is a
    replay. ``parts`` identify the request: the multipart body's bytes differ on every retry
    (a fresh boundary), so the fingerprint is over what the body says (fields, file names and
    bytes) and the route."""
    if not key:
        return make().id, False
    parts = [request.method, request.url.path, *parts]
    made, replayed = service.idempotency.once(current_caller(request).rate_key, key, fingerprint(*parts), make)
    return made.id, replayed


def accepted(response: Response, location: str, replayed: bool) -> None:
    response.headers["Location"] = location
    response.headers["Retry-After"] = str(POLL_SECONDS)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
