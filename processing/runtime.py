"""The process-wide objects both entry points share: one storage client set, one job
handler (and through it one engine) per process."""

from __future__ import annotations

from functools import lru_cache

from .config import get_settings
from .storage import Storage


@lru_cache(maxsize=1)
def storage() -> Storage:
    return Storage(get_settings())


@lru_cache(maxsize=1)
def job_handler():
    from .engine import Engine
    from .worker import JobHandler

    settings = get_settings()
    return JobHandler(settings, storage(), lambda: Engine.from_settings(settings))


@lru_cache(maxsize=1)
def job_service():
    from .service import JobService

    return JobService(get_settings(), storage())


def http_app():
    from .api import create_app

    return create_app(get_settings(), storage())
