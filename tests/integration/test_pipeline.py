"""Submit over HTTP -> queue -> worker (real GFPGAN code path, stand-in weights) -> result, on Azurite."""

from __future__ import annotations

import base64
import io
import json
import re
import threading

import numpy as np
import pytest
from PIL import Image

from processing.jobs.records import JobRepository, utcnow
from processing.storage import Storage, decode_job_message


def submit(client, data: bytes, name="portrait.png", **options):
    form = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in options.items()}
    return client.post("/api/jobs", files={"file": (name, data, "application/octet-stream")}, data=form)


def next_message(storage):
    messages = list(storage.jobs_queue.receive_messages(max_messages=32, visibility_timeout=60))
    return messages


def run_queue(storage, handler):
    """Deliver every queued message to the handler, as the trigger would, and ack it."""
    outcomes = []
    for message in next_message(storage):
        outcomes.append(handler.handle_message(message.content, message.dequeue_count))
        storage.jobs_queue.delete_message(message)
    return outcomes


def test_submit_process_download(client, storage, handler, astronaut_png):
    response = submit(client, astronaut_png, "astronaut photo.png", upscale=2, blend_mask="box")
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["id"]
    assert re.fullmatch("[0-9a-f]{32}", job_id), job_id
    assert response.headers["Location"] == f"/api/jobs/{job_id}"
    assert response.headers["Retry-After"] == "1"
    assert body["status"] == "queued" and body["queue_position"] == 1
    assert body["links"]["self"] == f"/api/jobs/{job_id}"
    assert body["standin_weights"] is True

    early = client.get(f"/api/jobs/{job_id}/result")
    assert early.status_code == 409
    assert early.json()["error"]["status"] == "queued"

    outcomes = run_queue(storage, handler)
    assert [o.status for o in outcomes] == ["succeeded"]

    status = client.get(f"/api/jobs/{job_id}").json()
    assert status["status"] == "succeeded" and status["progress"] == 1.0 and status["stage"] == "done"
    assert status["face_count"] == 1
    assert status["result"] == {"width": 1024, "height": 1024, "format": "png"}
    assert status["timings"]["restore"] > 0

    result = client.get(f"/api/jobs/{job_id}/result?download=true")
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/png"
    assert result.headers["content-disposition"] == 'attachment; filename="astronaut-photo-restored.png"'
    image = Image.open(io.BytesIO(result.content))
    assert image.size == (1024, 1024) and image.format == "PNG"

    original = client.get(f"/api/jobs/{job_id}/input")
    assert Image.open(io.BytesIO(original.content)).size == (512, 512)
    face = client.get(status["faces"][0]["after"])
    assert face.status_code == 200 and Image.open(io.BytesIO(face.content)).size == (512, 512)


def test_output_format_jpeg_and_upscale_one(client, storage, handler, astronaut_png):
    job_id = submit(client, astronaut_png, upscale=1, output_format="jpeg", quality=80, blend_mask="box").json()["id"]
    run_queue(storage, handler)
    result = client.get(f"/api/jobs/{job_id}/result")
    assert result.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(result.content)).size == (512, 512)


def test_queue_message_is_base64_json_with_the_job_id_and_its_context_only(client, storage, astronaut_png, settings):
    """The Functions trigger expects base64 (host.json keeps the default encoding); a client
    with no decode policy sees exactly what the host will decode: the job id (a claim check,
    never the image) and the context telemetry carries (send time, trace when traced)."""
    job_id = submit(client, astronaut_png).json()["id"]
    from azure.storage.queue import QueueClient

    raw_client = QueueClient.from_connection_string(settings.storage_connection_string, settings.jobs_queue)
    raw = next(iter(raw_client.peek_messages(max_messages=1))).content
    body = json.loads(base64.b64decode(raw, validate=True))
    assert body["job_id"] == job_id and set(body) <= {"job_id", "enqueued_at", "traceparent", "tracestate"}
    assert len(raw) < 400
    host = json.load(open("host.json"))
    assert host["extensions"]["queues"].get("messageEncoding", "base64") == "base64"
    assert decode_job_message(base64.b64decode(raw)).job_id == job_id


def test_redelivery_gives_one_result(client, storage, handler, settings, astronaut_png):
    job_id = submit(client, astronaut_png, blend_mask="box").json()["id"]
    storage.enqueue_job(job_id)  # the same job twice on the queue
    outcomes = run_queue(storage, handler)
    assert sorted(o.status for o in outcomes) == ["skipped", "succeeded"]
    job = JobRepository(storage.tables.get_table_client(settings.jobs_table)).get(job_id)
    assert job.attempts == 1
    blobs = [b.name for b in storage.container(settings.results_container).list_blobs(name_starts_with=job_id)]
    assert sorted(blobs) == sorted([f"{job_id}/restored.png", f"{job_id}/faces/0-before.png", f"{job_id}/faces/0-after.png"])


def test_corrupt_stored_input_fails_with_reason_without_retries(client, storage, handler, settings, astronaut_png):
    job_id = submit(client, astronaut_png).json()["id"]
    storage.put_blob(settings.uploads_container, f"{job_id}/input.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")
    outcomes = run_queue(storage, handler)
    assert outcomes[0].status == "failed"
    status = client.get(f"/api/jobs/{job_id}").json()
    assert status["status"] == "failed"
    assert status["error"]["code"] in {"corrupt_image", "not_an_image"}
    assert "damaged" in status["error"]["message"] or "not a JPEG" in status["error"]["message"]
    assert client.get(f"/api/jobs/{job_id}/result").status_code == 409


def test_message_for_missing_job_is_dropped(handler):
    assert handler.handle_message(json.dumps({"job_id": "0" * 32}).encode()).status == "missing"
    assert handler.handle_message(b"not json at all").status == "missing"


def test_transient_error_retries_then_fails_after_max_dequeue(client, storage, settings, engine, astronaut_png):
    from processing.worker import JobHandler

    class Exploding:
        def restore(self, *args, **kwargs):
            raise RuntimeError("simulated out-of-memory in the engine")

    broken = JobHandler(settings, storage, lambda: Exploding(), worker_id="broken")
    job_id = submit(client, astronaut_png).json()["id"]
    body = json.dumps({"job_id": job_id}).encode()
    with pytest.raises(RuntimeError):
        broken.handle_message(body, dequeue_count=1)
    after_first = client.get(f"/api/jobs/{job_id}").json()
    assert after_first["status"] == "running" and after_first["stage"].startswith("retrying")
    outcome = broken.handle_message(body, dequeue_count=settings.max_dequeue_count)
    assert outcome.status == "failed"
    final = client.get(f"/api/jobs/{job_id}").json()
    assert final["status"] == "failed" and "giving up" in final["error"]["message"]
    assert final["attempts"] == 2


def test_poisoned_message_marks_job_failed(client, storage, settings, astronaut_png):
    from processing.worker import mark_poisoned

    job_id = submit(client, astronaut_png).json()["id"]
    assert mark_poisoned(settings, storage, json.dumps({"job_id": job_id})) == job_id
    status = client.get(f"/api/jobs/{job_id}").json()
    assert status["status"] == "failed" and status["error"]["code"] == "processing_failed"


def test_expired_lease_is_taken_over_and_live_lease_is_not(client, storage, settings, handler, astronaut_png):
    from datetime import timedelta

    from processing.jobs.records import utcnow

    repo = JobRepository(storage.tables.get_table_client(settings.jobs_table))
    job_id = submit(client, astronaut_png, blend_mask="box").json()["id"]
    held = repo.claim(job_id, "other-worker", timedelta(seconds=60))
    assert held.status == "running"
    busy = handler.handle(job_id)
    assert busy.status == "busy" and busy.retry_after > 50
    held.lease_until = utcnow() - timedelta(seconds=1)  # the other worker died
    repo.save(held)
    assert handler.handle(job_id).status == "succeeded"
    job = repo.get(job_id)
    assert job.attempts == 2 and job.status == "succeeded"


def test_etag_guards_concurrent_claims(client, storage, settings, astronaut_png):
    from datetime import timedelta

    from azure.core.exceptions import ResourceModifiedError

    repo = JobRepository(storage.tables.get_table_client(settings.jobs_table))
    job_id = submit(client, astronaut_png).json()["id"]
    stale_copy = repo.get(job_id)
    assert repo.claim(job_id, "a", timedelta(seconds=60)).lease_owner == "a"
    stale_copy.lease_owner = "b"
    with pytest.raises(ResourceModifiedError):
        repo.save(stale_copy, "running")
    assert repo.claim(job_id, "b", timedelta(seconds=60)) is None
    assert repo.get(job_id).lease_owner == "a"


def test_delete_removes_everything(client, storage, handler, settings, astronaut_png):
    job_id = submit(client, astronaut_png, blend_mask="box").json()["id"]
    run_queue(storage, handler)
    assert client.delete(f"/api/jobs/{job_id}").status_code == 204
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    for container in (settings.uploads_container, settings.results_container):
        assert list(storage.container(container).list_blobs(name_starts_with=job_id)) == []
    assert client.delete(f"/api/jobs/{job_id}").status_code == 404


class PausingStorage(Storage):
    """The real storage (Azurite) with one pause: before it writes the first blob whose name
    ends with ``pause_before``, it says so and waits until the test lets it go on."""

    def __init__(self, settings, pause_before: str):
        super().__init__(settings)
        self.pause_before = pause_before
        self.reached, self.resume = threading.Event(), threading.Event()

    def put_blob(self, container, name, data, content_type):
        if name.endswith(self.pause_before) and not self.reached.is_set():
            self.reached.set()
            assert self.resume.wait(120), "the test never let the worker go on"
        super().put_blob(container, name, data, content_type)


@pytest.mark.parametrize("pause_before, options", [
    ("restored.png", {}),  # the last stretch: after the "saving" report, before the final transition
    ("before.png", {"rotate": 90}),  # the preprocessed pixels, before the engine's first report
])
def test_delete_while_the_worker_saves_leaves_no_blob(client, settings, engine, astronaut_png, pause_before, options):
    """DELETE lands while the worker is about to write: the worker writes after the delete
    has listed the job's blobs, its final transition finds no row, and it removes what it
    wrote. Both containers hold nothing of the job afterwards."""
    from processing.worker import JobHandler

    paused = PausingStorage(settings, pause_before)
    worker = JobHandler(settings, paused, lambda: engine, worker_id="saver")
    job_id = submit(client, astronaut_png, blend_mask="box", upscale=1, **options).json()["id"]
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=worker.handle(job_id)))
    runner.start()
    try:
        assert paused.reached.wait(120), "the worker never got to " + pause_before
        assert client.delete(f"/api/jobs/{job_id}").status_code == 204
    finally:
        paused.resume.set()
        runner.join(120)
    assert outcome["result"].status == "lost" and outcome["result"].detail == "deleted while running"
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    for container in (settings.uploads_container, settings.results_container):
        assert [b.name for b in paused.container(container).list_blobs()] == [], container


def test_deleting_a_blob_that_is_already_gone_is_not_an_error(storage, settings):
    """A DELETE and a worker cleaning up after it remove the same blobs, in either order."""
    storage.put_blob(settings.results_container, "x/one.png", b"1", "image/png")
    storage.delete_blob(settings.results_container, "x/one.png")
    storage.delete_blob(settings.results_container, "x/one.png")
    storage.delete_blob(settings.results_container, "x/never-was.png")
    assert storage.delete_prefix(settings.results_container, "x/") == 0


def test_purge_removes_expired_jobs_and_their_blobs(client, storage, handler, settings, astronaut_png):
    from processing.jobs.service import JobService

    keep = submit(client, astronaut_png, blend_mask="box").json()["id"]
    short = JobService(settings.with_changes(retention_hours=1e-6), storage)
    from processing.jobs.options import JobOptions

    gone = short.submit(astronaut_png, "old.png", JobOptions(blend_mask="box")).id
    run_queue(storage, handler)
    assert short.purge_expired() == 1
    assert client.get(f"/api/jobs/{gone}").status_code == 404
    assert client.get(f"/api/jobs/{keep}").status_code == 200
    for container in (settings.uploads_container, settings.results_container):
        names = [b.name for b in storage.container(container).list_blobs()]
        assert names and all(name.startswith(keep) for name in names)


def test_queue_positions_follow_submission_order(client, astronaut_png):
    ids = [submit(client, astronaut_png).json()["id"] for _ in range(3)]
    assert [client.get(f"/api/jobs/{i}").json()["queue_position"] for i in ids] == [1, 2, 3]


def test_health_and_info(client):
    health = client.get("/api/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok" and health.json()["weights"] is True
    assert health.json()["queue_depth"] == 0
    info = client.get("/api/info").json()
    assert info["standin_weights"] is True and "1.4" in info["models"]
    assert info["options"]["upscale"]["maximum"] == 4
    assert info["max_batch_files"] == 50 and info["max_batch_bytes"] == 200 * 1024 * 1024


@pytest.mark.parametrize(
    "form, field",
    [({"upscale": "5"}, "upscale"), ({"model": "2.0"}, "model"), ({"strength": "1.5"}, "strength"),
     ({"output_format": "gif"}, "output_format"), ({"quality": "0"}, "quality"), ({"colour": "red"}, "colour")],
)
def test_invalid_options_get_field_level_422(client, astronaut_png, form, field):
    response = client.post("/api/jobs", files={"file": ("a.png", astronaut_png)}, data=form)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [f["field"] for f in error["fields"]] == [field]


@pytest.mark.parametrize(
    "data, status, code",
    [(b"", 422, "empty_file"), (b"hello, I am text", 415, "not_an_image"),
     (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;", 415, "unsupported_format")],
)
def test_bad_uploads_are_refused_with_json(client, data, status, code):
    response = client.post("/api/jobs", files={"file": ("photo.jpg", data, "image/jpeg")})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_unknown_job_is_404_json(client):
    for path in ("/api/jobs/" + "a" * 32, "/api/jobs/not-an-id", "/api/jobs/" + "a" * 32 + "/result"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"


def test_missing_file_field_is_422(client):
    response = client.post("/api/jobs", data={"upscale": "2"})
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "file"


def test_lease_is_renewed_during_a_long_silent_stage(client, storage, settings, engine, astronaut_png):
    """A stage longer than the lease (here a 3 s lease, a 4.5 s engine call with no progress)
    must not let another worker take the job over."""
    import threading
    import time
    from datetime import timedelta

    from processing.worker import JobHandler

    entered, thief_tried = threading.Event(), threading.Event()

    class Slow:
        """A stage that says nothing (no progress report) until the thief has tried."""

        def restore(self, image, options, progress, **kwargs):
            entered.set()
            thief_tried.wait(60)
            return engine.restore(image, options, progress, **kwargs)

    short = settings.with_changes(lease_seconds=3)
    holder = JobHandler(short, storage, lambda: Slow(), worker_id="holder")
    repo = JobRepository(storage.tables.get_table_client(settings.jobs_table))
    job_id = submit(client, astronaut_png, blend_mask="box", upscale=1).json()["id"]
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=holder.handle(job_id)))
    runner.start()
    assert entered.wait(60)
    claimed = repo.get(job_id).started_at
    first_lease_end = claimed + timedelta(seconds=3)
    while utcnow() <= first_lease_end + timedelta(seconds=0.5):  # the lease the claim took has run out
        time.sleep(0.1)
    assert repo.get(job_id).lease_until > first_lease_end, "renewed in the background"
    assert repo.claim(job_id, "thief", timedelta(seconds=3)) is None
    thief_tried.set()
    runner.join()
    assert outcome["result"].status == "succeeded"
    assert repo.get(job_id).attempts == 1


def test_health_is_degraded_without_weights(settings, storage, tmp_path):
    from fastapi.testclient import TestClient

    from processing.api.app import create_app

    with TestClient(create_app(settings.with_changes(weights_dir=tmp_path / "none"), storage)) as bare:
        response = bare.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["storage"] is True and body["weights"] is False
    assert any("models.json is missing" in problem for problem in body["problems"])


def test_a_file_field_sent_as_text_is_explained(client):
    response = client.post("/api/jobs", data={"file": "just text"})
    assert response.status_code == 422
    (problem,) = response.json()["error"]["fields"]
    assert problem == {"field": "file",
                       "message": "send the image as a file part (multipart/form-data with a filename), not as text"}
