"""The HTTP API: a FastAPI app served by uvicorn locally and by AsgiFunctionApp in Azure.

``create_app`` assembles it: the middleware (security headers, CORS, the access gate, the
body limit), the error table (errors.py), one router per resource (routes/), and the page.
``/openapi.json`` says exactly what the API accepts and answers; tests/contract checks it
against the running service with Schemathesis.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount, compile_path

from ..config import Settings
from ..jobs.service import JobService
from ..storage import Storage
from . import errors
from .deps import owner_check
from .gate import AccessGate
from .middleware import BodyLimit, HeadAsGet, SecurityHeaders
from .routes import batches, jobs, meta

# Multipart framing adds a little to the files themselves.
_FRAMING = 64 * 1024

TAGS = [
    {"name": "jobs", "description": "One photo: submit it, poll it, fetch its images, delete it"},
    {"name": "batches", "description": "Several photos (or a zip) with the same options: one job each"},
    {"name": "meta", "description": "Health and what the service offers"},
]
API_KEY = {"type": "apiKey", "in": "header", "name": "X-API-Key",
           "description": "Optional unless REQUIRE_AUTH is set; a job submitted with a key is read with the same key"}


def create_app(settings: Settings, storage: Storage | None = None) -> FastAPI:
    storage = storage or Storage(settings)
    app = FastAPI(
        title="Face restoration API",
        version="1.0.0",
        description="Upload a photo; GFPGAN restores the faces. Jobs are asynchronous: POST, then poll the Location.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        openapi_tags=TAGS,
        # The operation ids are the endpoints' names (submit_job, get_job, ...): the links use them.
        generate_unique_id_function=lambda route: route.name,
        # Owned jobs and batches are found only by their owner (404 to anyone else).
        dependencies=[Depends(owner_check)],
    )
    app.state.service = JobService(settings, storage)
    app.state.settings = settings

    app.add_middleware(BodyLimit, limits=[("/api/batches", settings.max_batch_bytes + _FRAMING),
                                          ("/", settings.max_upload_bytes + _FRAMING)])
    # Keys, principals, REQUIRE_AUTH and rate limits, before any body is read.
    app.add_middleware(AccessGate, settings=settings, storage=storage)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
            expose_headers=["Location", "Retry-After"],
        )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HeadAsGet)  # outermost: everything inside sees the GET it answers
    errors.install(app)
    app.add_exception_handler(405, _method_not_allowed)

    for router in (jobs.router, batches.router, meta.router):
        app.include_router(router)
    app.openapi = lambda: _openapi(app, settings)
    if settings.static_site_dir.is_dir():
        app.router.routes.append(_Site("/", app=StaticFiles(directory=settings.static_site_dir, html=True), name="site"))
    # Server spans (the start of each job's trace) and HTTP metrics; without a telemetry
    # provider installed they are no-ops. Health probes would only be noise.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="api/health")
    return app


class _Site(Mount):
    """The page, at every path but the API's: an /api path is the API's to answer, with its 404
    or its 405 (a mount at "/" matches every path, so the router never fell back to the route
    that has the path with another method)."""

    def matches(self, scope) -> tuple[Match, dict[str, Any]]:
        path = scope.get("path", "")
        if path == "/api" or path.startswith("/api/"):
            return Match.NONE, {}
        return super().matches(scope)


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's description, then what it cannot derive from the routes."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for path in schema["paths"].values():
            for operation in path.values():
                # FastAPI adds a 422 with its own body to every operation with parameters; this API
                # answers ErrorResponse, and only where a parameter can fail (the routes say so).
                if "HTTPValidationError" in str(operation["responses"].get("422", "")):
                    del operation["responses"]["422"]
                if set(operation.get("tags", ())) & {"jobs", "batches"}:
                    operation["security"] = [{}, {"ApiKey": []}]  # anonymous, or with a key
        components = schema["components"]
        for name in ("HTTPValidationError", "ValidationError"):
            components["schemas"].pop(name, None)
        components["securitySchemes"] = {"ApiKey": API_KEY}
        components["schemas"]["BatchSubmission"]["properties"]["files"]["maxItems"] = settings.max_batch_files
    return app.openapi_schema


def _allowed_methods(app: FastAPI, path: str) -> list[str] | None:
    """The methods /openapi.json documents for ``path`` (and HEAD wherever GET is: HeadAsGet answers
    it), or None for a path it does not have."""
    for template, operations in app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            methods = {method.upper() for method in operations}
            return sorted(methods | ({"HEAD"} if "GET" in methods else set()))
    return None


def _method_not_allowed(request: Request, exc: HTTPException):
    """A 405 whose Allow names every method of the path: Starlette names only those of the one
    route it tried, and GET and DELETE on a job are two routes."""
    allowed = _allowed_methods(request.app, request.url.path)
    headers = {**(exc.headers or {}), **({"Allow": ", ".join(allowed)} if allowed else {})}
    return errors.error_response(405, "method_not_allowed", str(exc.detail), headers=headers)
