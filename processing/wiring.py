"""The process-wide objects the entry points share (function_app.py, ``python -m
processing``): one storage client set, one job service, one job handler (and through it
one engine) per process, and the periodic housekeeping."""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

from . import telemetry
from .config import get_settings
from .storage import Storage


@lru_cache(maxsize=1)
def storage() -> Storage:
    return Storage(get_settings())


@lru_cache(maxsize=1)
def job_handler():
    from .engine.pipeline import Engine
    from .worker import JobHandler

    settings = get_settings()
    return JobHandler(settings, storage(), lambda: Engine.from_settings(settings))


@lru_cache(maxsize=1)
def preload_engine() -> threading.Thread | None:
    """Under the Functions host one process serves the API and runs the jobs: as it starts,
    load the engine, unless the job trigger is disabled there (then it runs no jobs). In the
    background: the API answers meanwhile, and a first message waits only for what is left
    of the load. A load that fails is logged; each job then meets the error itself."""
    if get_settings().jobs_trigger_disabled:
        return None
    handler = job_handler()

    def load() -> None:
        try:
            handler.load_engine()
        except Exception:  # noqa: BLE001  (a thread's exception would otherwise go unseen)
            logging.getLogger(__name__).exception("models not loaded at start; jobs will report why")

    thread = threading.Thread(target=load, name="engine-load", daemon=True)
    thread.start()
    return thread


@lru_cache(maxsize=1)
def job_service():
    from .jobs.service import JobService

    return JobService(get_settings(), storage())


def http_app():
    from .api.app import create_app

    return create_app(get_settings(), storage())


def mark_poisoned(body: bytes | str) -> str | None:
    from .worker import mark_poisoned

    return mark_poisoned(get_settings(), storage(), body)


def housekeeping() -> None:
    """The timer's round: purge expired jobs, re-enqueue jobs whose message was lost, top
    up stalled batches, drop idle rate-limit rows."""
    from .access.ratelimit import purge_idle_buckets

    service = job_service()
    service.purge_expired()
    service.requeue_stale()
    purge_idle_buckets(service.settings, service.storage)


def observe(functions_host: bool = False) -> None:
    """Logging and telemetry for this process, once at start. Under the Functions host its
    own handlers format the lines (they get the job id); elsewhere LOG_FORMAT chooses text or
    JSON lines. Azure Monitor only when APPLICATIONINSIGHTS_CONNECTION_STRING is set, OTLP only
    when OTEL_EXPORTER_OTLP_ENDPOINT is."""
    settings = get_settings()
    if functions_host:
        telemetry.add_job_context_to(logging.getLogger().handlers)
    else:
        telemetry.configure_logging(settings.log_format)
    if telemetry.configure(settings.appinsights_connection_string, settings.appinsights_authentication,
                           settings.otlp_endpoint):
        telemetry.watch_queue_depth(lambda: storage().jobs_queue.get_queue_properties().approximate_message_count)
