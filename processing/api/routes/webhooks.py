"""/api/webhooks/secret: the secret a receiver verifies this service's webhook calls with."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from ...access.callers import AuthError
from ...access.keys import ApiKeys, signing_secret
from ...jobs.service import JobService
from ...jobs.webhooks import NoWebhookSecret
from ..deps import current_caller, get_service
from .contract import GATE, error

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
Service = Annotated[JobService, Depends(get_service)]


class WebhookSecret(BaseModel):
    secret: str = Field(description="whsec_ and base64: the HMAC key is the base64-decoded part (Standard Webhooks)")
    scope: Literal["key", "service"] = Field(description=(
        "key: this API key's own secret, signing only its jobs' calls; service: the one secret that signs the calls "
        "of every job submitted without a key"))


@router.get("/secret", response_model=WebhookSecret, summary="The secret that signs this caller's webhooks",
            responses={**GATE, **error(404, "Without an API key: the service has no WEBHOOK_SECRET (webhooks need a key)")})
def get_webhook_secret(request: Request, response: Response, service: Service) -> WebhookSecret:
    caller = current_caller(request)
    settings = service.settings
    if settings.require_auth and not caller.authenticated:
        raise AuthError("auth_required", "the webhook secret needs an API key (X-API-Key header) or a signed-in user")
    keys = ApiKeys(service.storage.tables.get_table_client(settings.api_keys_table))
    secret = signing_secret(caller.owner if caller.kind == "key" else "", keys, settings.webhook_secret)
    if secret is None:
        raise NoWebhookSecret()
    response.headers["Cache-Control"] = "no-store"
    return WebhookSecret(secret=secret, scope="key" if caller.kind == "key" else "service")
