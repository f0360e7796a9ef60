"""Telemetry: traces, metrics and logs, with OpenTelemetry.

- One trace per job: the submit request (FastAPI's server span) -> ``send <queue>`` (the
  enqueue; its context travels in the queue message, which is JSON) -> ``process <queue>``
  (the worker's consumer span, a child of the message's context) -> one span per stage
  (download, decode, preprocess, detect, restore face, parse, background, upscale, paste,
  encode, upload).
- Metrics (the names the alerts and the workbook in infra/ query): ``restore.jobs``
  (outcome, error_code), ``restore.stage.duration`` (stage), ``restore.queue.wait``,
  ``restore.job.duration``, ``restore.faces``, ``restore.refusals`` (http.status_code,
  error_code), ``restore.poisoned_messages``, ``restore.queue.depth``.
- Logs: every line of a job's work carries its id (and the trace's); ``LOG_FORMAT=json``
  writes one JSON object per line.

The instruments below are OpenTelemetry's proxies: until a provider is installed they do
nothing, so with neither APPLICATIONINSIGHTS_CONNECTION_STRING nor OTEL_EXPORTER_OTLP_ENDPOINT
set telemetry costs next to nothing. ``configure`` installs Azure Monitor's (Entra ID
authentication with the app's managed identity), OTLP exporters to any collector, or both;
tests install in-memory ones, or receive OTLP from the real processes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

NAME = "face_restore"
tracer = trace.get_tracer(NAME)
meter = metrics.get_meter(NAME)

JOBS = meter.create_counter("restore.jobs", unit="{job}", description="Jobs that ended, by outcome and error code")
POISONED = meter.create_counter("restore.poisoned_messages", unit="{message}",
                                description="Messages the queue gave up on; their jobs were marked failed")
STAGE_DURATION = meter.create_histogram("restore.stage.duration", unit="s", description="Time per stage of a job")
QUEUE_WAIT = meter.create_histogram("restore.queue.wait", unit="s", description="From enqueue to a worker's claim")
JOB_DURATION = meter.create_histogram("restore.job.duration", unit="s", description="From submission to the end")
FACES = meter.create_histogram("restore.faces", unit="{face}", description="Faces restored per job")
REFUSALS = meter.create_counter("restore.refusals", unit="{request}",
                                description="Requests refused, by HTTP status and error code")
REFUSAL_STATUSES = frozenset({413, 415, 422, 429, 503})

_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")
_queue_depth: list[Callable[[], int | None]] = []


# -- traces ------------------------------------------------------------------------------


def message_context() -> dict[str, str]:
    """What a queue message carries besides the job id: the current trace context (W3C
    traceparent, when a trace is being recorded) and when it was sent."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    carrier["enqueued_at"] = datetime.now(timezone.utc).isoformat()
    return carrier


@contextmanager
def producing(queue: str, job_id: str) -> Iterator[dict[str, str]]:
    """The ``send <queue>`` span around an enqueue; yields the context to put in the message."""
    with tracer.start_as_current_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes={
        "messaging.system": "azure_storage_queue", "messaging.operation.type": "send",
        "messaging.destination.name": queue, "restore.job_id": job_id,
    }):
        yield message_context()


@contextmanager
def consuming(queue: str, job_id: str, carried: Mapping[str, str], **attributes: Any) -> Iterator[trace.Span]:
    """The worker's ``process <queue>`` span, a child of the context the message carried (an
    old message without one starts a trace of its own), with the job id on every log line."""
    parent = propagate.extract(dict(carried))
    with job_logging(job_id), tracer.start_as_current_span(
        f"process {queue}", context=parent, kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "azure_storage_queue", "messaging.operation.type": "process",
                    "messaging.destination.name": queue, "restore.job_id": job_id, **_clean(attributes)},
    ) as span:
        yield span


@contextmanager
def stage(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """One stage of a job as a child span."""
    with tracer.start_as_current_span(name, attributes=_clean(attributes or {})):
        yield


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (the job's consumer span, in the worker)."""
    trace.get_current_span().set_attributes(_clean(attributes))


def failed(reason: str) -> None:
    trace.get_current_span().set_status(Status(StatusCode.ERROR, reason))


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes str, bool, int, float (and sequences of them); None is dropped."""
    return {key: value if isinstance(value, (str, bool, int, float)) else str(value)
            for key, value in attributes.items() if value is not None}


# -- metrics -----------------------------------------------------------------------------


def job_ended(outcome: str, error_code: str = "", seconds: float | None = None) -> None:
    JOBS.add(1, {"outcome": outcome, "error_code": error_code})
    if seconds is not None:
        JOB_DURATION.record(max(0.0, seconds), {"outcome": outcome})


def stages_took(timings: Mapping[str, float]) -> None:
    for name, seconds in timings.items():
        STAGE_DURATION.record(seconds, {"stage": name})


def refused(status: int, code: str) -> None:
    if status in REFUSAL_STATUSES:
        REFUSALS.add(1, {"http.status_code": status, "error_code": code})


def watch_queue_depth(read: Callable[[], int | None]) -> None:
    """Report the jobs queue's length as ``restore.queue.depth`` whenever metrics are
    collected (once a minute with Azure Monitor); ``read`` may raise, which skips a reading."""
    _queue_depth.append(read)


def _observe_queue_depth(options: CallbackOptions) -> Iterator[Observation]:
    for read in _queue_depth[-1:]:
        try:
            depth = read()
        except Exception:  # noqa: BLE001  (storage away: no reading this time)
            continue
        if depth is not None:
            yield Observation(depth)


meter.create_observable_gauge("restore.queue.depth", callbacks=[_observe_queue_depth], unit="{message}",
                              description="Messages waiting on the jobs queue (approximate)")


# -- logs --------------------------------------------------------------------------------


@contextmanager
def job_logging(job_id: str) -> Iterator[None]:
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def current_job_id() -> str:
    return _job_id.get()


class JobContext(logging.Filter):
    """Puts the job id and the trace and span ids (when a trace is recorded) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = _job_id.get()
        record.job = f" [job {record.job_id}]" if record.job_id else ""
        span = trace.get_current_span().get_span_context()
        record.trace_id = f"{span.trace_id:032x}" if span.is_valid else ""
        record.span_id = f"{span.span_id:016x}" if span.is_valid else ""
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "trace_id", "span_id"):
            if getattr(record, key, ""):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s"


def configure_logging(log_format: str = "text", stream=None) -> None:
    """The root logger's handler: readable text by default, JSON lines with ``json``; every
    record carries the job id either way. Replaces handlers an earlier call installed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_face_restore", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._face_restore = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(JobContext())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)


def add_job_context_to(handlers) -> None:
    """Give existing handlers (the Functions host's) the job id, without changing their format."""
    for handler in handlers:
        if not any(isinstance(f, JobContext) for f in handler.filters):
            handler.addFilter(JobContext())


_configured = False


def configure(connection_string: str, authentication: str = "", otlp_endpoint: str = "") -> bool:
    """Install the exporters the settings name, once per process: Azure Monitor when a
    connection string is set, OTLP/HTTP to any collector when an endpoint is, both when both
    are; False (and nothing installed) when neither is. ``authentication`` is the Functions
    convention ``Authorization=AAD;ClientId=<id>``: ingestion with that managed identity
    (Entra ID), so no instrumentation key needs to be trusted."""
    global _configured
    if _configured or not (connection_string or otlp_endpoint):
        return _configured
    spans, readers, records = _otlp(otlp_endpoint) if otlp_endpoint else ([], [], [])
    if connection_string:
        _azure_monitor(connection_string, authentication, spans=spans, readers=readers, records=records)
    else:
        _providers(spans, readers, records)
    _configured = True
    return True


def _azure_monitor(connection_string: str, authentication: str, *, spans, readers, records) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    options: dict[str, Any] = {
        "connection_string": connection_string,
        # The app instruments FastAPI itself (api/app.py), the same way with or without Azure Monitor.
        "instrumentation_options": {"fastapi": {"enabled": False}},
    }
    if spans:  # OTLP too: the distro's providers feed both
        options.update(span_processors=spans, metric_readers=readers, log_record_processors=records)
    parts = dict(part.split("=", 1) for part in authentication.split(";") if "=" in part)
    if parts.get("Authorization", "").upper() == "AAD":
        from azure.identity import ManagedIdentityCredential

        client_id = parts.get("ClientId") or None
        options["credential"] = ManagedIdentityCredential(client_id=client_id)
    configure_azure_monitor(**options)


def _otlp(endpoint: str) -> tuple[list, list, list]:
    """OTLP/HTTP with protobuf, the collectors' common ground (the OpenTelemetry Collector,
    Jaeger, Tempo, Honeycomb, Datadog, ...). The endpoint is a base URL, as the
    specification defines OTEL_EXPORTER_OTLP_ENDPOINT: each signal goes to its ``v1/...``
    path under it. Headers, timeout and compression come from the exporter's own
    OTEL_EXPORTER_OTLP_* variables, read by the SDK."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    base = endpoint.rstrip("/")
    return ([BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))],
            [PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))],
            [BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{base}/v1/logs"))])


def _providers(spans, readers, records) -> None:
    """The SDK's providers for the OTLP exporters alone (with Azure Monitor, its distro makes
    them). The resource names the process (pid, executable), so a collector tells the API's
    spans from each worker's; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES apply."""
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import ProcessResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create().merge(ProcessResourceDetector().detect())
    tracer_provider = TracerProvider(resource=resource)
    for processor in spans:
        tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    logger_provider = LoggerProvider(resource=resource)
    for processor in records:
        logger_provider.add_log_record_processor(processor)
    set_logger_provider(logger_provider)
    handler = LoggingHandler(logger_provider=logger_provider)
    add_job_context_to([handler])  # the job id as a log attribute, whatever the handlers' order
    logging.getLogger().addHandler(handler)
