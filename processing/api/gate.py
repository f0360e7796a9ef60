"""The API's door: who is calling, may they submit, are they within their rate.

An ASGI middleware, so a refused request is refused before its body is read: a client
over its limit cannot make the service spool another 20 MB. It answers

- 401 when an ``X-API-Key`` is present but not valid, or when ``REQUIRE_AUTH`` is set
  and a submission comes with neither a key nor an App Service principal;
- 429 with ``Retry-After`` when the client's token bucket is empty (submissions: a
  bucket in Table Storage, exact across instances; reads: a bucket in this instance's
  memory, because a table round trip per status poll cost more than the poll);
- 503 with ``Retry-After`` when the tables it needs cannot be reached;

and otherwise records the caller in the request state for the endpoints (job owners).
``deps.owner_check`` is the matching dependency: a job or batch that has an owner is found
only by that owner (404 to anyone else, so its existence does not leak).
"""

from __future__ import annotations

import functools
import logging

from azure.core.exceptions import AzureError
from starlette.concurrency import run_in_threadpool

from ..access.callers import AuthError, Caller, identify
from ..access.keys import ApiKeys
from ..access.ratelimit import Bucket, Decision, LocalRateLimiter, RateLimiter, buckets
from ..config import Settings
from ..storage import Storage
from .errors import WWW_AUTHENTICATE, error_response

log = logging.getLogger(__name__)

_WRITE_METHODS = {"POST", "PUT", "PATCH"}
_READ_PREFIXES = ("/api/jobs", "/api/batches", "/api/webhooks")


class AccessGate:
    def __init__(self, app, settings: Settings, storage: Storage):
        self.app = app
        self.settings = settings
        self.keys = ApiKeys(storage.tables.get_table_client(settings.api_keys_table), settings.api_key_cache_seconds)
        self.limiter = RateLimiter(storage.tables.get_table_client(settings.rate_limit_table))
        self.read_limiter = LocalRateLimiter()
        self.submit_bucket, self.read_bucket = buckets(settings)

    def bucket_for(self, method: str, path: str) -> Bucket | None:
        if not path.startswith("/api/"):
            return None
        if method in _WRITE_METHODS:
            return self.submit_bucket
        if path.startswith(_READ_PREFIXES) and method in ("GET", "HEAD", "DELETE"):
            return self.read_bucket
        return None  # health, info: cheap and unauthenticated

    def admit(self, headers: dict[str, str], peer: str | None, bucket: Bucket) -> tuple[Caller, Decision]:
        caller = identify(headers, peer, self.keys, trust_forwarded_for=self.settings.trust_forwarded_for,
                          app_service_auth=self.settings.app_service_auth)
        if bucket is self.submit_bucket and self.settings.require_auth and not caller.authenticated:
            raise AuthError("auth_required", "submitting needs an API key (X-API-Key header) or a signed-in user")
        limiter = self.limiter if bucket is self.submit_bucket else self.read_limiter
        return caller, limiter.take(caller.rate_key, bucket)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        bucket = self.bucket_for(scope["method"], scope["path"])
        if bucket is None:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client")
        peer = client[0] if client else None
        try:
            caller, decision = await run_in_threadpool(self.admit, headers, peer, bucket)
        except AuthError as error:
            response = error_response(401, error.code, str(error), {"WWW-Authenticate": WWW_AUTHENTICATE})
            return await response(scope, receive, send)
        except AzureError as error:
            log.warning("access check could not reach storage: %s", error.__class__.__name__)
            response = error_response(503, "storage_unavailable", "storage is temporarily unavailable; try again shortly",
                                   {"Retry-After": "5"})
            return await response(scope, receive, send)
        if not decision.allowed:
            what = "submissions" if bucket is self.submit_bucket else "requests"
            response = error_response(
                429, "rate_limited",
                f"too many {what}; the limit is {bucket.per_minute:g} a minute (bursts of {bucket.burst}). "
                f"Try again in {decision.retry_after} s",
                {"Retry-After": str(decision.retry_after)},
            )
            return await response(scope, receive, send)
        state = scope.setdefault("state", {})
        state["caller"] = caller
        if bucket is self.submit_bucket:
            state["charge"] = functools.partial(self.limiter.charge, caller.rate_key, bucket)
        await self.app(scope, receive, send)
