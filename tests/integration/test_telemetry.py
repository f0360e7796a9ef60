"""Telemetry on real jobs: the real API (in process, FastAPI's own instrumentation) and the
real worker on Azurite, with OpenTelemetry's in-memory exporters as the SDK's providers.
One trace runs from the submit request through the queue message to the worker's stages;
the metrics count outcomes, stages, waits, faces and refusals; every log line of a job's
work carries its id, and LOG_FORMAT=json writes JSON lines from the real processes."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.trace import SpanKind

from processing import telemetry
from tests.conftest import ROOT, LiveStack, env_for, wait_for_status


@dataclass
class Capture:
    spans: object  # InMemorySpanExporter
    reader: object  # InMemoryMetricReader

    def points(self, name: str) -> list:
        data = self.reader.get_metrics_data()
        return [point for resource in (data.resource_metrics if data else []) for scope in resource.scope_metrics
                for metric in scope.metrics if metric.name == name for point in metric.data.data_points]

    def total(self, name: str, **attributes) -> float:
        """A counter's sum, or a histogram's count, over the points with these attributes."""
        found = 0.0
        for point in self.points(name):
            if all(point.attributes.get(key) == value for key, value in attributes.items()):
                found += getattr(point, "value", None) if hasattr(point, "value") else point.count
        return found


@pytest.fixture(scope="session")
def capture():
    """The SDK's providers with in-memory exporters, installed once for the session (a second
    set_*_provider is ignored); each test reads what it caused as a difference."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    assert trace.get_tracer_provider() is provider, "another provider was installed first: these tests would see nothing"
    return Capture(spans, reader)


def deliver_one(storage, handler):
    """The next message, exactly as the Functions host hands it over (base64-decoded body)."""
    (message,) = storage.jobs_queue.receive_messages(max_messages=1, visibility_timeout=60)
    outcome = handler.handle_message(message.content, message.dequeue_count)
    storage.jobs_queue.delete_message(message)
    return outcome


def by_name(spans, name):
    found = [span for span in spans if span.name == name]
    assert found, f"no span {name!r} among {sorted({s.name for s in spans})}"
    return found


def test_one_trace_from_the_request_through_the_queue_to_each_stage(capture, client, storage, handler, astronaut_png, settings):
    capture.spans.clear()
    response = client.post("/api/jobs", files={"file": ("me.png", astronaut_png, "image/png")},
                           data={"upscale": "2", "model": "1.3", "crop": "0,0,512,500"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert deliver_one(storage, handler).status == "succeeded"
    spans = capture.spans.get_finished_spans()

    (server,) = [s for s in spans if s.kind == SpanKind.SERVER and s.attributes.get("http.route") == "/api/jobs"]
    assert server.name == "POST /api/jobs"
    (send,) = by_name(spans, f"send {settings.jobs_queue}")
    (process,) = by_name(spans, f"process {settings.jobs_queue}")
    assert send.kind == SpanKind.PRODUCER and process.kind == SpanKind.CONSUMER
    trace_id = server.context.trace_id
    assert send.context.trace_id == process.context.trace_id == trace_id, "one trace across the queue"
    assert send.parent.span_id == server.context.span_id
    assert process.parent.span_id == send.context.span_id, "the worker's span is the message's child"

    attributes = process.attributes
    assert attributes["restore.job_id"] == job_id and attributes["restore.outcome"] == "succeeded"
    assert attributes["restore.face_count"] == 1 and attributes["restore.model"] == "1.3"
    assert attributes["restore.megapixels"] == round(512 * 500 / 1e6, 3)
    assert attributes["restore.options.upscale"] == 2 and attributes["restore.options.crop"] == "0,0,512,500"

    stages = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == process.context.span_id}
    expected = {"download", "decode", "preprocess", "upload before", "detect", "align", "restore face", "parse",
                "upscale", "paste", "encode", "upload"}
    assert expected <= set(stages), sorted(stages)
    assert stages["restore face"].attributes["face"] == 0 and stages["restore face"].attributes["model"] == "1.3"
    ordered = sorted(stages.values(), key=lambda s: s.start_time)
    assert [s.name for s in ordered].index("download") < [s.name for s in ordered].index("detect") < \
        [s.name for s in ordered].index("upload")
    for span in stages.values():
        assert process.start_time <= span.start_time <= span.end_time <= process.end_time


def test_a_batch_job_carries_its_batch(capture, client, storage, handler, astronaut_png, settings):
    capture.spans.clear()
    response = client.post("/api/batches", files=[("files", ("a.png", astronaut_png, "image/png"))],
                           data={"blend_mask": "box", "upscale": "1"})
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    assert deliver_one(storage, handler).status == "succeeded"
    (process,) = by_name(capture.spans.get_finished_spans(), f"process {settings.jobs_queue}")
    assert process.attributes["restore.batch_id"] == batch_id


def test_a_message_without_trace_context_still_works_and_starts_its_own_trace(capture, client, storage, handler,
                                                                             astronaut_png, settings):
    response = client.post("/api/jobs", files={"file": ("me.png", astronaut_png, "image/png")},
                           data={"blend_mask": "box", "upscale": "1"})
    job_id = response.json()["id"]
    (queued,) = storage.jobs_queue.receive_messages(max_messages=1)
    storage.jobs_queue.delete_message(queued)
    capture.spans.clear()
    # A message as the service wrote them before telemetry: the job id alone.
    outcome = handler.handle_message(json.dumps({"job_id": job_id}).encode())
    assert outcome.status == "succeeded"
    (process,) = by_name(capture.spans.get_finished_spans(), f"process {settings.jobs_queue}")
    assert process.parent is None and process.attributes["restore.job_id"] == job_id


def test_metrics_of_outcomes_stages_waits_faces_and_refusals(capture, client, storage, handler, astronaut_png):
    before = {
        "succeeded": capture.total("restore.jobs", outcome="succeeded", error_code=""),
        "failed": capture.total("restore.jobs", outcome="failed", error_code="corrupt_image"),
        "detect": capture.total("restore.stage.duration", stage="detect"),
        "wait": capture.total("restore.queue.wait"),
        "duration": capture.total("restore.job.duration", outcome="succeeded"),
        "faces": capture.total("restore.faces"),
        "415": capture.total("restore.refusals", **{"http.status_code": 415, "error_code": "not_an_image"}),
        "422": capture.total("restore.refusals", **{"http.status_code": 422, "error_code": "invalid_request"}),
    }
    good = client.post("/api/jobs", files={"file": ("me.png", astronaut_png, "image/png")}, data={"blend_mask": "box"})
    assert deliver_one(storage, handler).status == "succeeded"
    bad = client.post("/api/jobs", files={"file": ("x.png", b"not an image at all", "image/png")})
    assert bad.status_code == 415
    invalid = client.post("/api/jobs", files={"file": ("me.png", astronaut_png, "image/png")}, data={"upscale": "9"})
    assert invalid.status_code == 422
    # A job whose stored input is damaged fails with its reason.
    damaged = client.post("/api/jobs", files={"file": ("me.png", astronaut_png, "image/png")}).json()
    storage.put_blob(handler.settings.uploads_container, f"{damaged['id']}/input.png", astronaut_png[:3000], "image/png")
    assert deliver_one(storage, handler).status == "failed"

    assert good.status_code == 202
    assert capture.total("restore.jobs", outcome="succeeded", error_code="") == before["succeeded"] + 1
    assert capture.total("restore.jobs", outcome="failed", error_code="corrupt_image") == before["failed"] + 1
    assert capture.total("restore.stage.duration", stage="detect") == before["detect"] + 1
    assert capture.total("restore.queue.wait") == before["wait"] + 2
    assert capture.total("restore.job.duration", outcome="succeeded") == before["duration"] + 1
    assert capture.total("restore.faces") == before["faces"] + 1
    assert capture.total("restore.refusals", **{"http.status_code": 415, "error_code": "not_an_image"}) == before["415"] + 1
    assert capture.total("restore.refusals", **{"http.status_code": 422, "error_code": "invalid_request"}) == before["422"] + 1
    stage_names = {point.attributes["stage"] for point in capture.points("restore.stage.duration")}
    assert {"download", "decode", "detect", "restore", "paste", "encode", "upload"} <= stage_names


def test_poisoned_messages_and_queue_depth(capture, storage, settings):
    from processing.worker import mark_poisoned

    before = capture.total("restore.poisoned_messages")
    mark_poisoned(settings, storage, json.dumps({"job_id": "0" * 32}).encode())
    assert capture.total("restore.poisoned_messages") == before + 1

    storage.enqueue_job("f" * 32)
    storage.enqueue_job("e" * 32)
    telemetry.watch_queue_depth(lambda: storage.jobs_queue.get_queue_properties().approximate_message_count)
    (depth,) = capture.points("restore.queue.depth")
    assert depth.value == 2


def test_every_log_line_of_a_job_carries_its_id(capture, client, storage, handler, astronaut_png, caplog):
    response = client.post("/api/jobs", files={"file": ("me.png", astronaut_png, "image/png")},
                           data={"blend_mask": "box", "upscale": "1"})
    job_id = response.json()["id"]
    caplog.handler.addFilter(telemetry.JobContext())
    with caplog.at_level(logging.INFO):
        assert deliver_one(storage, handler).status == "succeeded"
    lines = [record for record in caplog.records if record.name.startswith("processing")]
    assert lines, "the worker logs its work"
    assert all(record.job_id == job_id for record in lines), [(r.getMessage(), r.job_id) for r in lines]
    assert all(len(record.trace_id) == 32 for record in lines)


def test_log_format_json_from_the_real_processes(settings, storage, tmp_path, astronaut_png):
    stack = LiveStack(settings, tmp_path, LOG_FORMAT="json")
    try:
        stack.start_api()
        stack.start_worker()
        job_id = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)},
                            data={"blend_mask": "box"}, timeout=30).json()["id"]
        assert wait_for_status(stack.url, job_id)["status"] == "succeeded"
    finally:
        stack.stop()
    for name in ("api.log", "worker0.log"):
        lines = [line for line in (tmp_path / name).read_text().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    worker = [json.loads(line) for line in (tmp_path / "worker0.log").read_text().splitlines() if line.strip()]
    about_job = [r for r in worker if job_id in r["message"]]
    assert about_job and all(r.get("job_id") == job_id for r in about_job)


def test_readable_text_by_default_and_nothing_installed_without_a_connection_string(settings):
    script = ("from processing import wiring\nwiring.observe()\nfrom opentelemetry import trace, metrics\n"
              "print(type(trace.get_tracer_provider()).__name__, type(metrics.get_meter_provider()).__name__)\n"
              "import logging\nfrom processing import telemetry\n"
              "with telemetry.job_logging('abc'):\n    logging.getLogger('processing.worker').info('hello')\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env_for(settings), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["ProxyTracerProvider", "_ProxyMeterProvider"]
    assert "INFO processing.worker [job abc]: hello" in run.stderr


def test_azure_monitor_ingests_with_the_managed_identity(monkeypatch):
    """Entra ID ingestion: the Functions convention's client id becomes the credential (no
    network here: the distro's entry point is replaced to see what it is given)."""
    import azure.monitor.opentelemetry as distro
    from azure.identity import ManagedIdentityCredential

    given = {}
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **options: given.update(options))
    monkeypatch.setattr(telemetry, "_configured", False)
    assert telemetry.configure("InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://x",
                               "Authorization=AAD;ClientId=11111111-2222-3333-4444-555555555555")
    assert isinstance(given["credential"], ManagedIdentityCredential)
    assert given["credential"]._credential is not None
    assert given["instrumentation_options"] == {"fastapi": {"enabled": False}}
    monkeypatch.setattr(telemetry, "_configured", False)
    assert telemetry.configure("") is False


def test_with_both_azure_monitor_and_an_otlp_endpoint_the_distro_feeds_both(monkeypatch):
    """Both set: the OTLP exporters ride on the distro's providers (one set per process)
    rather than replacing Azure Monitor's. The cross-process OTLP path itself is in
    test_telemetry_processes.py."""
    import azure.monitor.opentelemetry as distro
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    given = {}
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **options: given.update(options))
    monkeypatch.setattr(telemetry, "_configured", False)
    assert telemetry.configure("InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://x",
                               "", "http://127.0.0.1:4318")
    monkeypatch.setattr(telemetry, "_configured", False)
    assert [type(p) for p in given["span_processors"]] == [BatchSpanProcessor]
    assert [type(r) for r in given["metric_readers"]] == [PeriodicExportingMetricReader]
    assert [type(p) for p in given["log_record_processors"]] == [BatchLogRecordProcessor]
    for shut in (*given["span_processors"], *given["metric_readers"], *given["log_record_processors"]):
        shut.shutdown()  # their threads, not the test's providers


def test_queue_messages_carry_the_trace_context_and_old_ones_stay_readable(capture, storage):
    from opentelemetry import trace

    from processing.storage import decode_job_message

    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        storage.enqueue_job("a" * 32)
    (raw,) = storage.jobs_queue.receive_messages(max_messages=1)
    message = decode_job_message(raw.content)
    assert message.job_id == "a" * 32 and message.enqueued_at is not None
    assert message.context["traceparent"].split("-")[1] == f"{caller.get_span_context().trace_id:032x}"
    assert decode_job_message(base64.b64decode(base64.b64encode(b'{"job_id": "old"}'))).context == {}


def test_the_visibility_keepers_lines_carry_the_job_id(storage, caplog):
    """The polling worker renews a message's visibility from a thread of its own, between the
    job's claim and finish: a failed renewal's warning names the job too. A real queue on
    Azurite refuses the renewal (the receipt is stale once the message was updated)."""
    from processing.storage import encode_job_message
    from processing.worker import _VisibilityKeeper

    storage.jobs_queue.send_message(encode_job_message("f" * 32))
    message = storage.jobs_queue.receive_message(visibility_timeout=30)
    storage.jobs_queue.update_message(message.id, message.pop_receipt, visibility_timeout=30)  # receipt now stale
    keeper = _VisibilityKeeper(storage.jobs_queue, message, visibility=1, job_id="f" * 32)
    caplog.handler.addFilter(telemetry.JobContext())
    with caplog.at_level(logging.WARNING, logger="processing"):
        keeper.start()
        deadline = time.monotonic() + 10
        while not any("could not renew" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        keeper.stop()
    renewals = [r for r in caplog.records if "could not renew" in r.getMessage()]
    assert renewals, "the stale receipt was not refused"
    assert all(r.job_id == "f" * 32 for r in renewals)
