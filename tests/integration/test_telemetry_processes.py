"""Telemetry across the real processes: `python -m processing serve` and `worker` (as
run-local.sh starts them) on the test Azurite, exporting with the standard OTLP/HTTP
exporter to a small collector in this test (127.0.0.1), which decodes the protobuf with
the published opentelemetry-proto definitions. One trace crosses both processes and the
queue: the API's server span -> ``send`` (producer) -> the worker's ``process`` (consumer)
-> the engine's stages; the worker's JSON log lines carry the job id from claim to finish,
and its log records and metrics reach the collector too."""

from __future__ import annotations

import gzip
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import LiveStack, wait_for_status

# The OTLP/HTTP paths and payload type, from the OTLP specification (opentelemetry-proto,
# docs/specification.md, "OTLP/HTTP": default URL paths /v1/traces, /v1/metrics, /v1/logs;
# binary protobuf is Content-Type application/x-protobuf).
SIGNALS = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
}
PROTOBUF = "application/x-protobuf"
# OTEL_EXPORTER_OTLP_ENDPOINT is a base URL that may have a path; the specification
# (specification/protocol/exporter.md) appends the signal's path to it: .../mypath/v1/traces.
BASE_PATH = "/collector"


def value(any_value):
    """An OTLP AnyValue as Python."""
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(key_values) -> dict:
    return {kv.key: value(kv.value) for kv in key_values}


@dataclass
class Received:
    span: Span
    resource: dict

    @property
    def attributes(self) -> dict:
        return attributes(self.span.attributes)


@dataclass
class Collector:
    """An OTLP/HTTP receiver: what each POST carried, decoded, by path."""

    requests: dict = field(default_factory=lambda: {path: [] for path in SIGNALS})
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{BASE_PATH}"

    def spans(self) -> list[Received]:
        with self.lock:
            batches = list(self.requests["/v1/traces"])
        return [Received(span, attributes(rs.resource.attributes))
                for batch in batches for rs in batch.resource_spans for ss in rs.scope_spans for span in ss.spans]

    def log_records(self) -> list[tuple[dict, dict, str]]:
        with self.lock:
            batches = list(self.requests["/v1/logs"])
        return [(attributes(rl.resource.attributes), attributes(record.attributes), value(record.body))
                for batch in batches for rl in batch.resource_logs for sl in rl.scope_logs
                for record in sl.log_records]

    def metric_names(self) -> set[str]:
        with self.lock:
            batches = list(self.requests["/v1/metrics"])
        return {metric.name for batch in batches for rm in batch.resource_metrics for sm in rm.scope_metrics
                for metric in sm.metrics}


@pytest.fixture
def collector():
    received = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            path = self.path[len(BASE_PATH):] if self.path.startswith(BASE_PATH + "/") else ""
            request_type, response_type = SIGNALS.get(path, (None, None))
            if request_type is None or self.headers.get("Content-Type") != PROTOBUF:
                self.send_error(404 if request_type is None else 415)
                return
            message = request_type()
            message.ParseFromString(body)
            with received.lock:
                received.requests[path].append(message)
            payload = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", PROTOBUF)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    received.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=received.server.serve_forever, daemon=True)
    thread.start()
    yield received
    received.server.shutdown()
    received.server.server_close()


def wait_until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_one_trace_across_the_api_process_the_queue_and_the_worker_process(settings, storage, tmp_path, collector,
                                                                          astronaut_png):
    # Standard SDK variables, to see the batches in a second rather than in 5 s and 60 s.
    stack = LiveStack(settings, tmp_path, LOG_FORMAT="json", OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
                      OTEL_BSP_SCHEDULE_DELAY="200", OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_METRIC_EXPORT_INTERVAL="1000")
    queue = settings.jobs_queue
    try:
        stack.start_api()
        worker = stack.start_worker()
        response = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)},
                              data={"upscale": "2"}, timeout=30)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert wait_for_status(stack.url, job_id)["status"] == "succeeded", stack.logs()

        def job_spans():
            spans = collector.spans()
            ours = {s.span.trace_id for s in spans if s.attributes.get("restore.job_id") == job_id}
            trace_spans = [s for s in spans if s.span.trace_id in ours]
            return trace_spans if any(s.span.name == "upload" for s in trace_spans) and \
                any(s.span.name == f"process {queue}" for s in trace_spans) else None

        spans = wait_until(job_spans)
        assert spans, f"the job's spans never reached the collector; got {sorted({s.span.name for s in collector.spans()})}"
        assert wait_until(lambda: "restore.jobs" in collector.metric_names()), collector.metric_names()
        log_records = wait_until(lambda: [r for r in collector.log_records() if r[1].get("job_id") == job_id])
    finally:
        stack.stop()

    assert len({s.span.trace_id for s in spans}) == 1, "one trace from the request to the last stage"
    by_id = {s.span.span_id: s for s in spans}

    def named(name):
        found = [s for s in spans if s.span.name == name]
        assert len(found) == 1, (name, sorted(s.span.name for s in spans))
        return found[0]

    server, send, process = named("POST /api/jobs"), named(f"send {queue}"), named(f"process {queue}")
    assert server.span.kind == Span.SpanKind.Value("SPAN_KIND_SERVER")
    assert send.span.kind == Span.SpanKind.Value("SPAN_KIND_PRODUCER")
    assert process.span.kind == Span.SpanKind.Value("SPAN_KIND_CONSUMER")
    assert server.attributes.get("http.route") == "/api/jobs"
    assert send.span.parent_span_id == server.span.span_id
    assert process.span.parent_span_id == send.span.span_id, "the worker continues the message's context"
    assert process.attributes["restore.job_id"] == job_id and process.attributes["restore.outcome"] == "succeeded"

    # Each side from its own process: the resource names the exporting process.
    assert server.resource["process.pid"] == send.resource["process.pid"] == stack.api.pid
    assert process.resource["process.pid"] == worker.pid != stack.api.pid

    stages = {s.span.name: s for s in spans if s.span.parent_span_id == process.span.span_id}
    assert {"download", "decode", "preprocess", "detect", "align", "restore face", "parse", "upscale", "paste",
            "encode", "upload"} <= set(stages), sorted(stages)
    assert all(s.resource["process.pid"] == worker.pid for s in stages.values())
    for stage in stages.values():
        assert process.span.start_time_unix_nano <= stage.span.start_time_unix_nano
        assert stage.span.end_time_unix_nano <= process.span.end_time_unix_nano
    for span in spans:  # nothing of this trace hangs off a span that did not arrive
        assert span is server or span.span.parent_span_id in by_id, span.span.name

    # The worker's JSON lines: every one from the claim to the last word carries the job
    # id and the trace's id.
    lines = [json.loads(line) for line in (tmp_path / "worker0.log").read_text().splitlines() if line.strip()]
    mentions = [i for i, line in enumerate(lines) if job_id in line["message"]]
    assert mentions, [line["message"] for line in lines]
    claim, finish = mentions[0], mentions[-1]
    assert "attempt 1" in lines[claim]["message"] and "succeeded" in lines[finish]["message"], lines[claim:finish + 1]
    trace_hex = spans[0].span.trace_id.hex()
    for line in lines[claim:finish + 1]:
        assert line.get("job_id") == job_id and line.get("trace_id") == trace_hex, line
    # ... and the same lines reach the collector as log records with the job id.
    assert log_records, "the worker's log records never reached the collector"
    assert {r[0]["process.pid"] for r in log_records} == {worker.pid}
    assert any(f"{job_id}: succeeded" in body for _, _, body in log_records)
