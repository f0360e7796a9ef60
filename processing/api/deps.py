"""What the routes take from the request besides its parameters: the job service, the
settings, the caller the gate admitted, and the owner check every job and batch route runs."""

from __future__ import annotations

import logging

from azure.core.exceptions import AzureError
from fastapi import Request

from ..access.callers import ANONYMOUS, Caller
from ..config import Settings
from ..jobs.batches import BatchNotFound
from ..jobs.records import JobNotFound
from ..jobs.service import JobService

log = logging.getLogger(__name__)


def get_service(request: Request) -> JobService:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def current_caller(request: Request) -> Caller:
    return getattr(request.state, "caller", ANONYMOUS)

def charge_extra(request: Request, cost: int) -> None:
    """Bill further units of accepted work to the caller's submission bucket (each image
    of a batch after the first), into debt if need be: a 50-image batch costs 50 tokens,
    not one. Billing trouble never fails work that was already accepted."""
    charge = getattr(request.state, "charge", None)
    if charge is None or cost <= 0:
        return
    try:
        charge(cost)
    except AzureError as error:
        log.warning("could not bill %d extra submissions: %s", cost, error.__class__.__name__)


def owner_check(request: Request) -> None:
    """A global dependency: any route with a ``job_id`` or ``batch_id`` in its path is
    answered only for the owner of an owned job or batch. Unknown ids fall through to
    the endpoint, which answers 404 itself."""
    service = get_service(request)
    caller = current_caller(request)
    for param, repository, not_found in (("job_id", service.jobs, JobNotFound), ("batch_id", service.batches, BatchNotFound)):
        if param not in request.path_params:
            continue
        identifier = request.path_params[param]
        try:
            owner = repository.get(identifier).owner
        except not_found:
            return
        if not caller.may_read(owner):
            raise not_found(identifier)
