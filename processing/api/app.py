"""The HTTP API: a FastAPI app served by uvicorn locally and by AsgiFunctionApp in Azure.

``create_app`` assembles it: the middleware (security headers, CORS, the access gate, the
body limit), the error table (errors.py), one router per resource (routes/), and the page.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from ..config import Settings
from ..jobs.service import JobService
from ..storage import Storage
from . import errors
from .deps import owner_check
from .gate import AccessGate
from .middleware import BodyLimit, SecurityHeaders
from .routes import batches, jobs, meta

# Multipart framing adds a little to the files themselves.
_FRAMING = 64 * 1024


def create_app(settings: Settings, storage: Storage | None = None) -> FastAPI:
    storage = storage or Storage(settings)
    app = FastAPI(
        title="Face restoration API",
        version="1.0.0",
        description="Upload a photo; GFPGAN restores the faces. Jobs are asynchronous: POST, then poll the Location.",
        docs_url="/docs",
        openapi_url="/openapi.json",
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
    errors.install(app)

    for router in (jobs.router, batches.router, meta.router):
        app.include_router(router)
    if settings.static_site_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.static_site_dir, html=True), name="site")
    # Server spans (the start of each job's trace) and HTTP metrics; without a telemetry
    # provider installed they are no-ops. Health probes would only be noise.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="api/health")
    return app
