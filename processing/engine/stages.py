"""Timing the stages of a job: each stage's seconds summed into ``timings`` (what the job
reports), and the stage handed to an observer as it runs (the worker's tracing spans). The
engine knows nothing of tracing; whoever calls it decides what observing means."""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ContextManager, Iterator, Mapping

Observer = Callable[[str, Mapping[str, Any]], ContextManager]


def _unobserved(name: str, attributes: Mapping[str, Any]) -> ContextManager:
    return nullcontext()


class Stages:
    def __init__(self, observe: Observer | None = None, *initial: str):
        self.observe = observe or _unobserved
        self.timings: dict[str, float] = {name: 0.0 for name in initial}

    @contextmanager
    def __call__(self, name: str, span: str | None = None, **attributes: Any) -> Iterator[None]:
        """Time ``name`` (summed over repeats, e.g. one per face), observed as ``span``."""
        with self.observe(span or name, attributes):
            started = time.perf_counter()
            try:
                yield
            finally:
                self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
