"""What the POSTs that make work (a job, a batch, a restoration of chosen faces) share: the
Idempotency-Key header, how a submission is answered, and Prefer: wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, AsyncIterator, Callable

from fastapi import Header, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..jobs.idempotency import Made, fingerprint
from ..jobs.records import Job
from ..jobs.service import JobService, ServiceBusy
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


MAX_WAIT = 60
Prefer = Annotated[str | None, Header(alias="Prefer", description=(
    f"RFC 7240. wait=N (seconds, at most {MAX_WAIT}): hold the request until the job ends or N seconds pass; the "
    "answer is then 200 with the finished job and Preference-Applied, or 202 as without it. A request holds no "
    "worker while it waits; beyond MAX_WAITING_REQUESTS waiting at once it is a 503 with Retry-After. Other "
    "preferences are ignored"))]


def requested_wait(prefer: str | None) -> int | None:
    """The seconds ``Prefer: wait=N`` asks for, at most MAX_WAIT; None without one (RFC 7240:
    a preference that cannot be read is ignored, not refused)."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        try:
            seconds = int(value.strip().strip('"'))
        except ValueError:
            return None
        return min(seconds, MAX_WAIT) if seconds > 0 else None
    return None


class WaitingRoom:
    """Requests holding on with Prefer: wait. They wait in the event loop (asyncio.sleep
    between reads of the job's row), not in a thread each; the bound keeps one instance from
    holding an unbounded number of connections open."""

    def __init__(self, limit: int):
        self.limit = limit
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def seat(self, wanted: bool) -> AsyncIterator[None]:
        if not wanted:
            yield
            return
        # One event loop per process: no await between the check and the count, so no lock.
        if self.waiting >= self.limit:
            raise ServiceBusy(f"{self.waiting} requests are already waiting for their jobs (Prefer: wait); submit "
                              "without it and poll, or try again shortly", retry_after=5)
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1


async def finished(service: JobService, job_id: str, seconds: int) -> Job:
    """The job once it has ended, or as it is when ``seconds`` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pause = 0.2
    while True:
        job = await run_in_threadpool(service.get, job_id)  # a thread for the read only, never for the wait
        remaining = deadline - loop.time()
        if job.terminal or remaining <= 0:
            return job
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 1.5, 1.0)
