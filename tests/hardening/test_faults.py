"""Faults with real processes: a worker killed mid-job, Azurite restarted mid-run,
messages for missing or damaged jobs, jobs stuck past their lease, storage errors.
Every accepted job ends succeeded or failed with a reason; no answer is a 500."""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.data.tables import UpdateMode

from processing.jobs.records import JobRepository, utcnow
from processing.jobs.options import JobOptions
from processing.jobs.service import JobService
from processing.storage import decode_job_message
from processing.worker import JobHandler, PollingWorker
from tests.conftest import LiveStack, wait_for_status
from tests.hardening.helpers import app_client, blob_names, png_bytes, submit


def _repo(storage, settings) -> JobRepository:
    return JobRepository(storage.tables.get_table_client(settings.jobs_table))


def _queue_empty(storage) -> bool:
    # Counts invisible messages too: a message left for a later retry would show here.
    return (storage.jobs_queue.get_queue_properties().approximate_message_count == 0
            and storage.poison_queue.get_queue_properties().approximate_message_count == 0)


def _wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(what)


# -- a worker killed with SIGKILL ------------------------------------------------------------


def test_worker_killed_mid_job_is_taken_over_with_one_result(settings, storage, tmp_path, astronaut_png):
    """JOB_LEASE_SECONDS=6: the dead worker's message reappears within seconds (the polling
    worker's visibility is the lease), the next worker finds the lease expired, takes the
    job over and finishes it. Results have fixed names, so there is exactly one."""
    short = settings.with_changes(lease_seconds=6)
    stack = LiveStack(short, tmp_path)
    stack.start_api()
    victim = stack.start_worker()
    try:
        response = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)},
                              data={"blend_mask": "parse"}, timeout=30)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

        def mid_job():
            body = httpx.get(f"{stack.url}/api/jobs/{job_id}", timeout=10).json()
            # Past loading and detection, before saving: inside the networks.
            return body if body["status"] == "running" and 0.05 < body["progress"] < 0.9 else None

        seen = _wait(mid_job, 120, "the job never started")
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        killed_at = time.monotonic()
        assert httpx.get(f"{stack.url}/api/jobs/{job_id}", timeout=10).json()["status"] == "running"

        stack.start_worker()
        final = wait_for_status(stack.url, job_id, timeout=180)
        assert final["status"] == "succeeded", stack.logs()
        assert final["attempts"] == 2 and final["face_count"] == 1
        print(f"\nkilled at stage {seen['stage']!r}; taken over and finished {time.monotonic() - killed_at:.1f} s later")

        assert blob_names(storage, short.results_container, job_id) == sorted(
            [f"{job_id}/restored.png", f"{job_id}/faces/0-before.png", f"{job_id}/faces/0-after.png"])
        assert httpx.get(f"{stack.url}{final['links']['result']}", timeout=30).status_code == 200
        _wait(lambda: _queue_empty(storage), 30, "the message was not deleted")
    finally:
        stack.stop()


def test_a_batch_job_deleted_while_running_hands_its_queue_slot_on_at_once(settings, storage, tmp_path, astronaut_png):
    """Batches feed BATCH_WINDOW (2) jobs to the queue. Deleting the running one frees its place:
    the third image is enqueued by the DELETE itself, while the second has not run yet, not
    when the second ends or the housekeeping timer runs; the rest of the batch finishes."""
    stack = LiveStack(settings, tmp_path)
    stack.start_api()
    stack.start_worker()
    try:
        response = httpx.post(f"{stack.url}/api/batches", files=[("files", (f"{i}.png", astronaut_png)) for i in range(3)],
                              data={"blend_mask": "parse"}, timeout=60)
        assert response.status_code == 202, response.text
        running, second, third = (job["id"] for job in response.json()["jobs"])
        repo = _repo(storage, settings)
        assert [repo.get(job_id).enqueued for job_id in (running, second, third)] == [True, True, False]

        def mid_job():
            body = httpx.get(f"{stack.url}/api/jobs/{running}", timeout=10).json()
            return body["status"] == "running" and 0.05 < body["progress"] < 0.9

        _wait(mid_job, 120, "the first job never started")
        assert httpx.delete(f"{stack.url}/api/jobs/{running}", timeout=30).status_code == 204
        assert not repo.get(second).terminal and repo.get(third).enqueued, "the slot was not handed on"

        for job_id in (second, third):
            assert wait_for_status(stack.url, job_id, timeout=180)["status"] == "succeeded", stack.logs()
        _wait(lambda: f"job {running}: deleted while running" in (tmp_path / "worker0.log").read_text(errors="replace"),
              30, "the worker never noticed the delete")
        assert blob_names(storage, settings.results_container, running) == []
        _wait(lambda: _queue_empty(storage), 30, "messages were left on the queue")
    finally:
        stack.stop()


# -- Azurite restarted mid-run -----------------------------------------------------------------


def test_azurite_restart_mid_run_loses_no_accepted_job(azurite, settings, storage, tmp_path, astronaut_png):
    stack = LiveStack(settings.with_changes(lease_seconds=8), tmp_path)
    stack.start_api()
    stack.start_worker()
    accepted: list[str] = []
    outage: list[tuple[int, str, float]] = []
    try:
        for _ in range(4):
            response = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)},
                                  data={"blend_mask": "box", "upscale": "1"}, timeout=30)
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        def early_in_the_first_job():
            body = httpx.get(f"{stack.url}/api/jobs/{accepted[0]}", timeout=10).json()
            return body["status"] == "running" and body["progress"] < 0.5

        _wait(early_in_the_first_job, 120, "the first job never started")

        azurite.stop()
        try:
            for method, path in (("POST", "/api/jobs"), ("GET", f"/api/jobs/{accepted[1]}"),
                                 ("GET", f"/api/jobs/{accepted[0]}/result"), ("DELETE", f"/api/jobs/{'0' * 32}")):
                started = time.monotonic()
                kwargs = {"files": {"file": ("me.png", astronaut_png)}} if method == "POST" else {}
                response = httpx.request(method, f"{stack.url}{path}", timeout=60, **kwargs)
                outage.append((response.status_code, response.json()["error"]["code"], time.monotonic() - started))
                assert response.headers["retry-after"]
            # The outage lasts until the worker has met it in the middle of the first job.
            worker_log = tmp_path / "worker0.log"
            _wait(lambda: f"job {accepted[0]}: attempt 1 failed" in worker_log.read_text(errors="replace"), 60,
                  "the worker never met the outage")
        finally:
            azurite.start()
        print("\nwhile storage was down:", [(s, c, f"{t:.1f}s") for s, c, t in outage])
        assert all(status == 503 and code == "storage_unavailable" for status, code, _ in outage)
        assert all(seconds < 20 for _, _, seconds in outage)

        for job_id in accepted:
            final = wait_for_status(stack.url, job_id, timeout=180)
            assert final["status"] == "succeeded", (final, stack.logs())
            # The first job was interrupted and run again; the others waited on the queue.
            assert final["attempts"] >= 2 if job_id == accepted[0] else final["attempts"] == 1, final
            assert blob_names(storage, settings.results_container, job_id) == sorted(
                [f"{job_id}/restored.png", f"{job_id}/faces/0-before.png", f"{job_id}/faces/0-after.png"])
        assert all(p.poll() is None for p in stack.workers), "a worker died during the outage"
        # After the outage, the service accepts work again.
        again = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", png_bytes())}, timeout=30)
        assert again.status_code == 202
    finally:
        stack.stop()


# -- messages for missing or damaged jobs ------------------------------------------------------


def test_messages_for_missing_or_damaged_jobs_leave_the_queue(client, settings, storage, handler):
    repo = _repo(storage, settings)
    submitted = {name: submit(client, png_bytes(), upscale=1).json()["id"]
                 for name in ("damaged record", "invalid options", "input deleted", "healthy")}
    table = repo.table
    table.update_entity({"PartitionKey": submitted["damaged record"], "RowKey": "job", "options": "{not json"},
                        mode="merge")
    table.update_entity({"PartitionKey": submitted["invalid options"], "RowKey": "job",
                         "options": json.dumps({"upscale": 99, "model": "9.9"})}, mode=UpdateMode.MERGE)
    storage.container(settings.uploads_container).delete_blob(f"{submitted['input deleted']}/input.png")
    storage.enqueue_job("0" * 32)  # a job that never existed
    storage.jobs_queue.send_message(b"\x00\xffnot json at all")
    storage.jobs_queue.send_message(json.dumps({"job": "wrong shape"}).encode())

    worker = PollingWorker(settings, storage, handler)
    assert worker.run(max_messages=7) == 7
    assert _queue_empty(storage)

    expected = {"damaged record": "corrupt_job", "invalid options": "invalid_options", "input deleted": "input_missing"}
    for name, code in expected.items():
        response = client.get(f"/api/jobs/{submitted[name]}")
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        assert body["status"] == "failed" and body["error"]["code"] == code, (name, body)
        assert body["error"]["message"]
    assert client.get(f"/api/jobs/{submitted['healthy']}").json()["status"] == "succeeded"


def test_a_message_delivered_more_often_than_the_limit_is_poisoned(client, settings, storage, handler):
    """A message whose earlier deliveries were never answered (a worker that died each time):
    the delivery past MAX_DEQUEUE_COUNT does not run the job again; it moves the message, as
    it was, to the poison queue and fails the job with a reason."""
    job_id = submit(client, png_bytes(), upscale=1).json()["id"]
    for _ in range(settings.max_dequeue_count):
        message = next(iter(storage.jobs_queue.receive_messages(max_messages=1, visibility_timeout=30)))
        storage.jobs_queue.update_message(message, visibility_timeout=0)  # back, unanswered
    assert message.dequeue_count == settings.max_dequeue_count

    assert PollingWorker(settings, storage, handler).run(max_messages=1) == 1
    job = _repo(storage, settings).get(job_id)
    assert (job.status, job.error_code, job.attempts) == ("failed", "processing_failed", 0)
    poisoned = list(storage.poison_queue.peek_messages(max_messages=32))
    assert [decode_job_message(m.content).job_id for m in poisoned] == [job_id]
    assert storage.jobs_queue.get_queue_properties().approximate_message_count == 0


def _damage(storage, settings, job_id: str, **properties) -> None:
    _repo(storage, settings).table.update_entity({"PartitionKey": job_id, "RowKey": "job", **properties},
                                                 mode=UpdateMode.MERGE)


def test_a_damaged_record_reads_as_a_failed_job_for_its_owner_only(settings, storage):
    """Reading a damaged record repairs it: the API answers it like any failed job (200,
    ``corrupt_job``), the owner check still holds, and a second read finds the repaired row."""
    from processing.access.keys import ApiKeys

    _, key = ApiKeys(storage.tables.get_table_client(settings.api_keys_table)).create("owner")
    mine = {"X-API-Key": key}
    with app_client(settings, storage, raise_server_exceptions=False) as client:
        anonymous, owned, unowned = (submit(client, png_bytes(), headers=headers).json()["id"]
                                     for headers in ({}, mine, mine))
        _damage(storage, settings, anonymous, faces="[[[")
        _damage(storage, settings, owned, options="{not json", status="banana")
        _damage(storage, settings, unowned, owner=42)  # whose it was cannot be known any more

        for job_id, headers in ((anonymous, {}), (anonymous, {}), (owned, mine)):
            response = client.get(f"/api/jobs/{job_id}", headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["status"] == "failed" and body["error"]["code"] == "corrupt_job", body
            assert "submit the photo again" in body["error"]["message"]
        assert client.get(f"/api/jobs/{owned}/result", headers=mine).status_code == 409
        for job_id, headers in ((owned, {}), (unowned, {}), (unowned, mine)):
            response = client.get(f"/api/jobs/{job_id}", headers=headers)
            assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
        assert client.delete(f"/api/jobs/{owned}", headers=mine).status_code == 204
    stored = _repo(storage, settings).get(anonymous)
    assert stored.status == "failed" and stored.error_code == "corrupt_job" and stored.faces == []


def test_a_damaged_record_stops_neither_a_batch_view_nor_the_timer(client, settings, storage):
    batch = client.post("/api/batches", files=[("files", (f"{i}.png", png_bytes(colour=(i, 9, 9)), "image/png"))
                                               for i in range(2)]).json()
    first, second = (job["id"] for job in batch["jobs"])
    _damage(storage, settings, first, status="banana")
    view = client.get(f"/api/batches/{batch['id']}")
    assert view.status_code == 200, view.text
    assert view.json()["counts"]["failed"] == 1 and view.json()["counts"]["queued"] == 1

    _damage(storage, settings, second, timings="{broken")
    past = utcnow() - timedelta(minutes=1)
    for job_id in (first, second):  # both damaged, both expired
        _damage(storage, settings, job_id, expires_at=past)
    assert JobService(settings, storage).purge_expired() == 2
    assert [client.get(f"/api/jobs/{job_id}").status_code for job_id in (first, second)] == [404, 404]


def _damage_batch(storage, settings, batch_id: str, **properties) -> None:
    _repo(storage, settings).table.update_entity({"PartitionKey": batch_id, "RowKey": "batch", **properties},
                                                 mode=UpdateMode.MERGE)


def test_a_damaged_batch_record_is_repaired_on_read_not_a_500(settings, storage):
    """As with jobs: the view answers 200 with every job (found again by their batch id), the
    owner check holds (an unreadable owner: 404 for everyone), DELETE still reaches every job,
    and the repaired row is what the next reader finds."""
    from processing.access.keys import ApiKeys
    from processing.jobs.batches import BatchRepository

    _, key = ApiKeys(storage.tables.get_table_client(settings.api_keys_table)).create("owner")
    mine = {"X-API-Key": key}
    files = [("files", (f"{i}.png", png_bytes(colour=(i, 9, 9)), "image/png")) for i in range(3)]
    with app_client(settings, storage, raise_server_exceptions=False) as client:
        anonymous, owned, unowned = (client.post("/api/batches", files=files, headers=headers).json()
                                     for headers in ({}, mine, mine))
        _damage_batch(storage, settings, anonymous["id"], job_ids="[[[", created_at="yesterday", rejected="{}")
        _damage_batch(storage, settings, owned["id"], options=7, job_ids=json.dumps(["../../etc"]))
        _damage_batch(storage, settings, unowned["id"], owner=42)

        for batch, headers in ((anonymous, {}), (anonymous, {}), (owned, mine)):
            response = client.get(f"/api/batches/{batch['id']}", headers=headers)
            assert response.status_code == 200, response.text
            assert [job["id"] for job in response.json()["jobs"]] == [job["id"] for job in batch["jobs"]]
        for batch, headers in ((owned, {}), (unowned, {}), (unowned, mine)):
            response = client.get(f"/api/batches/{batch['id']}", headers=headers)
            assert response.status_code == 404 and response.json()["error"]["code"] == "batch_not_found", response.text

        repaired = BatchRepository(_repo(storage, settings).table).get(owned["id"])
        assert repaired.job_ids == [job["id"] for job in owned["jobs"]] and repaired.options == {}
        assert client.delete(f"/api/batches/{owned['id']}", headers=mine).status_code == 204
        assert [client.get(f"/api/jobs/{job['id']}", headers=mine).status_code for job in owned["jobs"]] == [404] * 3


def test_engine_failures_retry_then_fail_with_a_reason(client, settings, storage):
    class Exploding:
        def restore(self, *args, **kwargs):
            raise RuntimeError("simulated crash in the engine")

    job_id = submit(client, png_bytes(), upscale=1).json()["id"]
    worker = PollingWorker(settings, storage, JobHandler(settings, storage, lambda: Exploding(), worker_id="w"))
    assert worker.run(max_messages=settings.max_dequeue_count) == settings.max_dequeue_count
    body = client.get(f"/api/jobs/{job_id}").json()
    assert body["status"] == "failed" and "giving up" in body["error"]["message"]
    assert body["attempts"] == settings.max_dequeue_count
    assert _queue_empty(storage)


# -- a job stuck in running --------------------------------------------------------------------


def test_a_job_stuck_past_its_lease_is_taken_over(client, settings, storage, handler):
    """A worker claimed the job and died: while its lease lives, the message is put back
    for later; once the lease has run out, the next delivery takes the job over."""
    job_id = submit(client, png_bytes(), upscale=1).json()["id"]
    repo = _repo(storage, settings)
    repo.claim(job_id, "worker-that-died", timedelta(seconds=3))
    worker = PollingWorker(settings, storage, handler)
    started = time.monotonic()
    assert worker.run(max_messages=1) == 1
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "running"  # busy: left for later
    worker.run(max_messages=1)
    final = repo.get(job_id)
    assert final.status == "succeeded" and final.attempts == 2 and final.lease_owner == ""
    assert time.monotonic() - started >= 2.5
    assert _queue_empty(storage)


def test_a_stuck_job_whose_message_is_gone_is_requeued_by_the_sweeper(client, settings, storage, handler):
    job_id = submit(client, png_bytes(), upscale=1).json()["id"]
    for message in storage.jobs_queue.receive_messages(max_messages=32):
        storage.jobs_queue.delete_message(message)
    repo = _repo(storage, settings)
    held = repo.claim(job_id, "worker-that-died", timedelta(seconds=1))
    held.lease_until = utcnow() - timedelta(minutes=11)
    repo.save(held)
    assert JobService(settings, storage).requeue_stale() == 1
    assert PollingWorker(settings, storage, handler).run(max_messages=1) == 1
    assert repo.get(job_id).status == "succeeded"


# -- storage errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [ServiceRequestError("connection reset by peer"),
                                   HttpResponseError(message="Server busy", response=None)])
def test_transient_storage_errors_are_503_never_500(settings, storage, monkeypatch, error):
    with app_client(settings, storage, raise_server_exceptions=False) as client:
        job_id = submit(client, png_bytes()).json()["id"]

        def broken(*args, **kwargs):
            raise error

        monkeypatch.setattr(storage, "put_blob", broken)
        monkeypatch.setattr(storage, "get_blob", broken)
        responses = [submit(client, png_bytes()), client.get(f"/api/jobs/{job_id}/input")]
        monkeypatch.setattr(JobRepository, "get", broken)
        responses.append(client.get(f"/api/jobs/{job_id}"))
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert response.headers["Retry-After"] == "5"


def test_a_failed_enqueue_is_503_and_leaves_no_job_stuck_queued(settings, storage, monkeypatch):
    with app_client(settings, storage, raise_server_exceptions=False) as client:
        def broken(job_id):
            raise ServiceRequestError("queue unreachable")

        monkeypatch.setattr(storage, "enqueue_job", broken)
        response = submit(client, png_bytes())
    assert response.status_code == 503
    rows = list(_repo(storage, settings).query("RowKey eq 'job'"))
    assert len(rows) == 1 and rows[0].status == "failed" and rows[0].error_code == "enqueue_failed"


def test_storage_down_answers_503_within_seconds_in_process(azurite, settings, storage):
    """Rate limits on, so the gate's table read is the first thing to meet the outage."""
    with app_client(settings, storage, raise_server_exceptions=False, rate_limit_per_minute=60,
                    rate_limit_reads_per_minute=600) as client:
        job_id = submit(client, png_bytes()).json()["id"]
        azurite.stop()
        try:
            timings = []
            for call in (lambda: submit(client, png_bytes()), lambda: client.get(f"/api/jobs/{job_id}"),
                         lambda: client.get("/api/health")):
                started = time.monotonic()
                response = call()
                timings.append(time.monotonic() - started)
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/json"
        finally:
            azurite.start()
    assert max(timings) < 15, timings
    with app_client(settings, storage) as client:
        assert client.get(f"/api/jobs/{job_id}").status_code == 200
