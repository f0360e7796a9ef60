"""/api/health and /api/info: is the service able to work, and what may a caller ask of it."""

from __future__ import annotations

from typing import Annotated

from azure.core.exceptions import AzureError
from fastapi import APIRouter, Depends, Request, Response

from ...engine.runtimes import plan
from ...jobs.options import JobOptions
from ...jobs.service import JobService
from ..deps import get_service
from ..schemas import DetectionInfo, HealthView, InfoView, PrecisionInfo

router = APIRouter(prefix="/api", tags=["meta"])
Service = Annotated[JobService, Depends(get_service)]


def model_problems(request: Request, service: JobService) -> list[str]:
    # Once per process: the models do not change under a running instance.
    state = request.app.state
    if getattr(state, "model_problems", None) is None:
        state.model_problems = [f"models: {problem}" for problem in service.models.problems()]
    return state.model_problems


@router.get("/health", response_model=HealthView, summary="Storage reachable, models present, queue depth",
            responses={503: {"model": HealthView, "description": "Degraded: problems says what is wrong"}})
def get_health(request: Request, response: Response, service: Service) -> HealthView:
    problems = []
    depth = None
    try:
        depth = service.queue_depth()
        next(iter(service.jobs.table.query_entities("PartitionKey eq 'health'", results_per_page=1)), None)
    except AzureError as error:
        problems.append(f"storage: {error.__class__.__name__}")
    bad = model_problems(request, service)
    problems += bad
    if problems:
        response.status_code = 503
    return HealthView(
        status="degraded" if problems else "ok",
        storage=depth is not None,
        weights=not bad,
        standin_weights=service.models.standin,
        queue_depth=depth,
        problems=problems,
    )


@router.get("/info", response_model=InfoView, summary="What the page needs to know: limits, options, mode")
def get_info(service: Service) -> InfoView:
    settings = service.settings
    return InfoView(
        standin_weights=service.models.standin,
        models=service.models.gfpgan_versions(),
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        max_batch_files=settings.max_batch_files,
        max_batch_bytes=settings.max_batch_bytes,
        retention_hours=settings.retention_hours,
        detection=DetectionInfo(max_side=settings.detect_max_side, max_faces=settings.max_faces,
                                second_pass_max_side=settings.detect_second_pass_max_side),
        precision=precision_info(settings.engine_backend, settings.engine_precision),
        options=JobOptions.model_json_schema()["properties"],
    )


def precision_info(runtime: str, setting: str) -> PrecisionInfo:
    """What this instance's CPU and runtime make of ENGINE_PRECISION, asked as the worker asks
    (runtimes.plan, once per process); each job's own record says what it ran in."""
    chosen = plan(runtime, setting)
    return PrecisionInfo(engine=chosen.precision, setting=setting, native_bf16=chosen.native_bf16,
                         bf16_kernel=chosen.bf16_kernel)
