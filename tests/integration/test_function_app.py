"""The Azure Functions entry points, called the way the Functions host calls them: the
module imported with the host's environment, each function taken from
``app.get_functions()`` and given real ``azure.functions`` request, message and timer
objects, against Azurite."""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import json
import logging
import time
from datetime import timedelta
from types import SimpleNamespace

import azure.functions as func
import httpx
import pytest
from azure.functions import meta
from azure.functions.queue import QueueMessage, QueueMessageInConverter
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient
from PIL import Image

from processing.jobs.records import JobRepository, utcnow
from tests.conftest import ROOT, env_for


HOST_MAX_DEQUEUE_COUNT = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"]


def as_the_host_delivers(wire: str, message_id: str, dequeue_count: int) -> QueueMessage:
    """What the Python worker hands a queue trigger: the host decodes the stored base64
    (host.json keeps messageEncoding base64) and sends the body as a string datum (bytes if
    it is not UTF-8) with its trigger metadata; the worker's converter builds the message."""
    body = base64.b64decode(wire, validate=True)
    try:
        datum = meta.Datum(body.decode("utf-8"), "string")
    except UnicodeDecodeError:
        datum = meta.Datum(body, "bytes")
    return QueueMessageInConverter.decode(datum, trigger_metadata={
        "Id": meta.Datum(message_id, "string"), "DequeueCount": meta.Datum(str(dequeue_count), "json")})


def _clear_caches() -> None:
    from processing import config, wiring

    config.get_settings.cache_clear()
    for cached in (wiring.storage, wiring.job_handler, wiring.job_service, wiring.preload_engine):
        cached.cache_clear()


class Functions:
    """function_app as the host sees it, plus helpers to call its functions."""

    def __init__(self, module, storage):
        self.module = module
        self.storage = storage
        # get_functions() indexes the app, as the host does once at start-up.
        self.functions = module.app.get_functions()
        self.by_name = {f.get_function_name(): f.get_user_function() for f in self.functions}
        self.loop = asyncio.new_event_loop()
        self.raised: list[Exception] = []
        self.context = SimpleNamespace(invocation_id="test-invocation", function_name="http_app_func",
                                       function_directory=".", trace_context=None, retry_context=None,
                                       thread_local_storage=None)

    def http(self, method: str, path: str, **kwargs) -> func.HttpResponse:
        """Build the request with httpx (so multipart bodies are real) and hand it to the
        ASGI function as a func.HttpRequest."""
        built = httpx.Request(method, f"http://localhost{path}", **kwargs)
        request = func.HttpRequest(method, str(built.url), headers=dict(built.headers), body=built.read())
        return self.loop.run_until_complete(self.by_name["http_app_func"](request, self.context))

    def deliver_all(self, queue: str | None = None, function: str = "restore_job") -> int:
        """Every visible message on ``queue`` (the jobs queue by default) to ``function``, as the
        host does: read as it is on the wire, base64-decoded, handed over as a string datum,
        deleted when the function returns, made visible again when it raises; a message that
        raises at host.json's maxDequeueCount goes to the poison queue instead. Returns how
        many returned; the errors the function raised are kept in ``raised``."""
        wire, poison = self.wire(queue or self.storage.settings.jobs_queue), self.wire(self.storage.settings.poison_queue)
        returned = 0
        # Taken first, as the host's batch is: a message made visible again waits for the next round.
        for message in list(wire.receive_messages(max_messages=32, visibility_timeout=60)):
            try:
                self.by_name[function](as_the_host_delivers(message.content, message.id, message.dequeue_count))
            except Exception as error:  # noqa: BLE001  (the host logs it and retries the message)
                self.raised.append(error)
                if message.dequeue_count >= HOST_MAX_DEQUEUE_COUNT:
                    poison.send_message(message.content)
                    wire.delete_message(message)
                else:
                    wire.update_message(message, visibility_timeout=0)
                continue
            wire.delete_message(message)
            returned += 1
        return returned

    def wire(self, queue: str) -> QueueClient:
        """The queue with no codec: messages as they are stored, base64 text."""
        return QueueClient.from_connection_string(self.storage.settings.storage_connection_string, queue)

    def close(self) -> None:
        app = self.module.app
        if app.startup_task_done:  # the ASGI lifespan's shutdown, on the loop it started on
            self.loop.run_until_complete(app.middleware.notify_shutdown())
            app.startup_task_done = False
        self.loop.close()


@pytest.fixture
def functions(settings, storage, engine, monkeypatch):
    def load(own_engine: bool = False, **extra_env: str) -> Functions:
        """function_app imported as the host imports it; it starts loading its engine as it
        is imported, so unless ``own_engine`` the session's engine is put in its place first
        (no second model load)."""
        for name, value in env_for(settings, **extra_env).items():
            monkeypatch.setenv(name, value)
        _clear_caches()
        import function_app
        from processing import wiring

        if not own_engine:
            wiring.job_handler()._engine = engine
        module = importlib.reload(function_app)
        loaded = Functions(module, storage)
        opened.append(loaded)
        return loaded

    opened: list[Functions] = []
    yield load
    for loaded in opened:
        loaded.close()
    monkeypatch.undo()
    _clear_caches()


def _png(width=96, height=64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(out, "PNG")
    return out.getvalue()


def _rows(storage, settings) -> list[dict]:
    return list(storage.tables.get_table_client(settings.jobs_table).list_entities())


def _repo(app) -> JobRepository:
    return JobRepository(app.storage.tables.get_table_client(app.storage.settings.jobs_table))


def _submit(app, name: str = "a.png", **form) -> str:
    response = app.http("POST", "/api/jobs", files={"file": (name, _png(), "image/png")}, data=form)
    assert response.status_code == 202, response.get_body()
    return json.loads(response.get_body())["id"]


def _submit_batch(app, count: int, width: int) -> dict:
    """``count`` photos of slightly different widths from ``width`` on, as one batch."""
    response = app.http("POST", "/api/batches", files=[
        ("files", (f"{i}.png", _png(width + i), "image/png")) for i in range(count)])
    assert response.status_code == 202, response.get_body()
    return json.loads(response.get_body())


def _drop_messages(app) -> None:
    """The queue loses what it holds (the messages a dead instance took with it)."""
    for message in list(app.storage.jobs_queue.receive_messages(max_messages=32, visibility_timeout=60)):
        app.storage.jobs_queue.delete_message(message)


def _tick(app) -> None:
    app.by_name["purge_expired_jobs"](TimerRequest(past_due=False))


def _tick_before_and_after_the_grace(app, job_id: str, age: timedelta) -> None:
    """A timer round while the job is younger than the timer's grace leaves it alone; then the
    job is made ``age`` old, and the timer runs again."""
    _tick(app)
    assert app.deliver_all() == 0, "younger than the grace: left alone"
    repo = _repo(app)
    job = repo.get(job_id)
    job.created_at = utcnow() - age
    repo.save(job)
    _tick(app)


def test_the_app_registers_its_functions(functions):
    app = functions()
    assert set(app.by_name) == {"http_app_func", "restore_job", "fail_poisoned_job", "purge_expired_jobs"}
    bindings = {f.get_function_name(): f.get_bindings_dict()["bindings"] for f in app.functions}
    assert [(b["type"], b["queueName"]) for b in bindings["restore_job"]] == [("queueTrigger", "%JOBS_QUEUE%")]
    assert [(b["type"], b["queueName"]) for b in bindings["fail_poisoned_job"]] == [("queueTrigger", "%JOBS_QUEUE%-poison")]
    assert bindings["purge_expired_jobs"][0]["type"] == "timerTrigger"


def test_the_engine_is_loaded_as_the_app_starts_not_at_the_first_message(functions, astronaut_png):
    """Importing function_app (what the host's worker process does as it starts) loads the
    networks in the background while the API already answers; the first message finds the
    engine there and uses it."""
    from processing import wiring

    app = functions(own_engine=True)
    assert wiring.preload_engine.cache_info().currsize == 1, "importing function_app started the load"
    loading = wiring.preload_engine()
    assert loading is not None and loading.name == "engine-load"
    assert app.http("GET", "/api/health").status_code == 200  # answered while (or after) it loads
    loading.join(timeout=300)
    handler = wiring.job_handler()
    loaded = handler._engine
    assert not loading.is_alive() and loaded is not None, "the engine exists before any message"
    assert handler.load_engine() == 0.0, "a second load is refused"

    accepted = app.http("POST", "/api/jobs", files={"file": ("me.png", astronaut_png, "image/png")},
                        data={"upscale": "1", "blend_mask": "box"})
    job_id = json.loads(accepted.get_body())["id"]
    assert app.deliver_all() == 1
    assert _repo(app).get(job_id).status == "succeeded"
    assert handler._engine is loaded, "the first job ran on the engine loaded at start"


def test_an_instance_whose_job_trigger_is_disabled_loads_no_networks(functions):
    """AzureWebJobs.restore_job.Disabled=true (the host's switch): this process serves the
    API and runs no jobs, so it never loads the networks."""
    from processing import wiring

    app = functions(own_engine=True, **{"AzureWebJobs.restore_job.Disabled": "true"})
    assert wiring.preload_engine() is None
    _submit(app)
    assert app.http("GET", "/api/info").status_code == 200
    assert wiring.job_handler.cache_info().currsize == 0, "no job handler, so no engine"


def test_http_submit_queue_process_and_download(functions, astronaut_png):
    app = functions()
    accepted = app.http("POST", "/api/jobs", files={"file": ("me.png", astronaut_png, "image/png")},
                        data={"blend_mask": "box", "upscale": "1"})
    assert accepted.status_code == 202, accepted.get_body()
    job = json.loads(accepted.get_body())
    assert accepted.headers["Location"] == f"/api/jobs/{job['id']}"
    assert accepted.headers["X-Content-Type-Options"] == "nosniff"

    assert app.deliver_all() == 1
    status = app.http("GET", f"/api/jobs/{job['id']}")
    body = json.loads(status.get_body())
    assert status.status_code == 200 and body["status"] == "succeeded" and body["face_count"] == 1
    result = app.http("GET", f"/api/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.mimetype == "image/png"
    assert Image.open(io.BytesIO(result.get_body())).size == (512, 512)

    health = app.http("GET", "/api/health")
    assert json.loads(health.get_body())["storage"] is True
    missing = app.http("GET", "/api/jobs/" + "0" * 32)
    assert missing.status_code == 404 and json.loads(missing.get_body())["error"]["code"] == "job_not_found"
    refused = app.http("POST", "/api/jobs", files={"file": ("x.jpg", b"not an image", "image/jpeg")})
    assert refused.status_code == 415 and json.loads(refused.get_body())["error"]["code"] == "not_an_image"


def test_functions_without_a_client_address_trust_the_front_end_only_when_told(functions):
    """Under the Functions host the ASGI scope has no client address; with
    TRUST_FORWARDED_FOR the front end's X-Forwarded-For tells clients apart."""
    app = functions(RATE_LIMIT_PER_MINUTE="6", RATE_LIMIT_BURST="1", TRUST_FORWARDED_FOR="true")
    post = lambda ip: app.http("POST", "/api/jobs", files={"file": ("a.png", _png(), "image/png")},  # noqa: E731
                               headers={"X-Forwarded-For": ip}).status_code
    assert [post("198.51.100.1:4431"), post("198.51.100.1:4432"), post("198.51.100.2:4433")] == [202, 429, 202]


def test_bad_and_orphan_messages_are_consumed_without_raising(functions, settings, caplog):
    """Stored on the queue (base64 on the wire) and delivered as the host delivers them: each
    returns (so the host deletes it), none is put back, and nothing is created."""
    app = functions()
    caplog.set_level(logging.INFO)
    for body in (b"not json", json.dumps({"job_id": "0" * 32}).encode(), b"{}", b"\x00\xffnot utf-8"):
        app.storage.jobs_queue.send_message(body)
    assert app.deliver_all() == 4 and app.raised == []
    outcomes = [r.getMessage() for r in caplog.records if r.name == "root" and r.getMessage().startswith("message ")]
    assert len(outcomes) == 4 and all(line.split()[2] == "missing" for line in outcomes), outcomes
    for queue in (app.storage.jobs_queue, app.storage.poison_queue):
        assert queue.get_queue_properties().approximate_message_count == 0
    assert _rows(app.storage, settings) == []


def test_an_engine_failing_every_time_is_retried_by_the_host_then_fails_the_job(functions, settings):
    """The function raises while attempts remain (the host retries the message) and, at
    host.json's maxDequeueCount, fails the job itself and returns: the message never needs
    the poison queue, and the job ends failed with the reason."""
    from processing import wiring

    class Exploding:
        def restore(self, *args, **kwargs):
            raise RuntimeError("simulated crash in the engine")

    app = functions()
    wiring.job_handler()._engine = Exploding()
    job_id = _submit(app)
    returned = [app.deliver_all() for _ in range(HOST_MAX_DEQUEUE_COUNT)]
    assert returned == [0] * (HOST_MAX_DEQUEUE_COUNT - 1) + [1]
    assert [str(error) for error in app.raised] == ["simulated crash in the engine"] * (HOST_MAX_DEQUEUE_COUNT - 1)
    body = json.loads(app.http("GET", f"/api/jobs/{job_id}").get_body())
    assert body["status"] == "failed" and body["error"]["code"] == "processing_failed", body
    assert body["attempts"] == HOST_MAX_DEQUEUE_COUNT and "giving up" in body["error"]["message"]
    for queue in (app.storage.jobs_queue, app.storage.poison_queue):
        assert queue.get_queue_properties().approximate_message_count == 0


def test_a_poison_message_fails_its_job_and_its_batch_goes_on(functions, settings):
    """The host moves a message that kept failing to <queue>-poison as it was; the poison
    trigger fails its job with a reason, and a batch job's slot goes to the batch's next image."""
    from processing.storage import encode_job_message

    app = functions()
    batch = _submit_batch(app, 3, width=90)
    first, second, third = (job["id"] for job in batch["jobs"])
    queued = [json.loads(base64.b64decode(m.content))["job_id"]
              for m in app.wire(settings.jobs_queue).receive_messages(max_messages=32, visibility_timeout=60)]
    assert sorted(queued) == sorted([first, second])  # the batch window
    app.storage.poison_queue.send_message(encode_job_message(first))
    app.storage.poison_queue.send_message(b"garbage")  # no job: consumed, nothing to fail
    assert app.deliver_all(settings.poison_queue, "fail_poisoned_job") == 2 and app.raised == []

    body = json.loads(app.http("GET", f"/api/jobs/{first}").get_body())
    assert body["status"] == "failed" and body["error"]["code"] == "processing_failed"
    repo = _repo(app)
    assert repo.get(third).enqueued, "the poisoned job's slot went to the batch's next image"
    assert app.storage.poison_queue.get_queue_properties().approximate_message_count == 0


def test_a_busy_job_message_is_put_back_for_when_the_lease_ends(functions, settings):
    """The host deletes a message once the function returns; a message for a job another
    instance holds is re-sent, invisible until that lease runs out, so a dead holder's
    job is still taken over."""
    app = functions()
    job_id = _submit(app, upscale="1")
    _drop_messages(app)
    repo = _repo(app)
    repo.claim(job_id, "instance-that-will-die", timedelta(seconds=2))

    app.by_name["restore_job"](QueueMessage(id="b", body=json.dumps({"job_id": job_id}).encode(), dequeue_count=1))
    assert app.storage.jobs_queue.get_queue_properties().approximate_message_count == 1
    assert list(app.storage.jobs_queue.peek_messages()) == []  # invisible for now
    deadline = time.monotonic() + 15
    while app.deliver_all() == 0:
        assert time.monotonic() < deadline, "the re-sent message never became visible"
        time.sleep(0.5)
    job = repo.get(job_id)
    assert job.status == "succeeded" and job.attempts == 2


def test_timer_purges_expired_jobs_and_batches_requeues_stale_ones_and_forgets_idle_clients(functions, settings):
    from processing.access.ratelimit import client_key

    app = functions(JOB_RETENTION_HOURS="0.0005", RATE_LIMIT_PER_MINUTE="60", RATE_LIMIT_BURST="5")  # 1.8 s
    ids = [_submit(app, upscale="1") for _ in range(2)]
    batch = _submit_batch(app, 2, width=80)
    assert app.deliver_all() == 4
    assert app.http("DELETE", f"/api/jobs/{ids[1]}").status_code == 204  # DELETE: gone at once
    limits = app.storage.tables.get_table_client(settings.rate_limit_table)
    limits.upsert_entity({"PartitionKey": client_key("ip:old"), "RowKey": "submit", "tokens": 5.0,
                          "updated": time.time() - 3600})
    repo = _repo(app)
    last_expiry = max(row["expires_at"] for row in repo.table.list_entities())
    while utcnow() <= last_expiry:  # everything submitted so far has expired
        time.sleep(0.05)

    # A job whose worker died long ago and whose message is gone: the timer re-enqueues it.
    stale_id = _submit(app, "b.png")
    _drop_messages(app)
    held = repo.claim(stale_id, "dead-instance", timedelta(seconds=1))
    held.lease_until = utcnow() - timedelta(minutes=11)
    held.expires_at = utcnow() + timedelta(hours=1)
    repo.save(held)

    _tick(app)

    assert app.http("GET", f"/api/jobs/{ids[0]}").status_code == 404
    assert app.http("GET", f"/api/batches/{batch['id']}").status_code == 404
    for container in (settings.uploads_container, settings.results_container):
        names = [b.name for b in app.storage.container(container).list_blobs()]
        assert all(name.startswith(stale_id) for name in names), names
    remaining = {row["PartitionKey"] for row in repo.table.list_entities()}
    assert remaining == {stale_id}  # no job row, no batch row
    assert not any(row["PartitionKey"] == client_key("ip:old") for row in limits.list_entities())

    assert app.deliver_all() == 1  # the re-enqueued message
    final = repo.get(stale_id)
    assert final.status == "succeeded" and final.attempts == 2


def test_timer_requeues_a_job_whose_row_was_written_but_never_enqueued(functions, settings):
    """The API wrote the row and its instance died before the enqueue: an hour on, the timer
    puts the job on the queue, and it runs once."""
    app = functions()
    job_id = _submit(app, upscale="1")
    _drop_messages(app)
    _tick_before_and_after_the_grace(app, job_id, timedelta(minutes=61))
    assert app.deliver_all() == 1
    final = _repo(app).get(job_id)
    assert (final.status, final.attempts) == ("succeeded", 1)


def test_timer_tops_up_a_batch_whose_feeding_stopped(functions, settings):
    """Both jobs in the batch's window ended without enqueueing the next (their instance died
    in between): ten minutes on, the timer tops the batch up to its window."""
    app = functions()
    batch = _submit_batch(app, 3, width=70)
    first, second, third = (job["id"] for job in batch["jobs"])
    _drop_messages(app)
    repo = _repo(app)
    for job_id in (first, second):
        repo.fail(job_id, "processing_failed", "ended without feeding the batch")
    _tick_before_and_after_the_grace(app, third, timedelta(minutes=11))
    assert repo.get(third).enqueued
    assert app.deliver_all() == 1
    assert repo.get(third).status == "succeeded"
    view = json.loads(app.http("GET", f"/api/batches/{batch['id']}").get_body())
    assert view["done"] and view["counts"] == {"queued": 0, "running": 0, "succeeded": 1, "failed": 2, "cancelled": 0}
