"""Webhooks end to end: the real API and worker processes on Azurite call a real HTTP receiver on
127.0.0.1 (WEBHOOK_ALLOW_PRIVATE, as local development does). Signatures are checked with the
Standard Webhooks reference implementation (`standardwebhooks` on PyPI, the spec's own library),
not with the service's code. Refused targets are refused before any connection is made: the
addresses in these tests (10.x, 169.254.169.254) are never contacted."""

from __future__ import annotations

import ipaddress
import json
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from processing.access.keys import ApiKeys
from processing.config import new_secret
from processing.jobs.webhooks import Delivery, check_target, TargetRefused
from processing.wiring import make_webhooks
from tests.conftest import LiveStack, wait_for_status



def _loopback_only(event: str, args) -> None:
    """A safety net for this process: should the checks under test ever let a refused address
    through, the connection fails here instead of leaving the machine."""
    if event == "socket.connect" and isinstance(args[1], tuple):
        if not ipaddress.ip_address(args[1][0].split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"test guard: no connection to {args[1][0]}")


sys.addaudithook(_loopback_only)
SERVICE_SECRET = new_secret()
FAST_RETRIES = "1,1,1,1"


class Receiver:
    """A webhook receiver: records every call; answers each with the next of ``statuses``
    (then 200)."""

    def __init__(self, statuses: list[int] | None = None):
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.end_headers()
                self.wfile.write(b"receiver's own body, not to be kept")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[tuple[str, dict]]:
        return [(json.loads(body)["id"], headers) for headers, body in self.calls]

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.calls) >= count, f"{len(self.calls)} calls, expected {count}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(statuses=None) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def stack(settings, storage, tmp_path):
    live = LiveStack(settings, tmp_path, WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_SECRET=SERVICE_SECRET,
                     WEBHOOK_RETRY_SECONDS=FAST_RETRIES)
    live.start_api()
    live.start_worker()
    yield live
    live.stop()


def verified(secret: str, headers: dict[str, str], body: bytes) -> dict:
    """The body, if the reference implementation accepts its signature."""
    return Webhook(secret).verify(body, headers)


def delivered(url: str, job_id: str, count: int, timeout: float = 60) -> dict:
    """The job once ``count`` of its deliveries have ended (delivered, failed or refused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()
        ended = [d for d in job["webhook"]["deliveries"] if d["status"] in ("delivered", "failed", "refused")]
        if len(ended) >= count:
            return job
        time.sleep(0.3)
    raise AssertionError(f"deliveries of {job_id} did not end: {job['webhook']}")


def test_signed_calls_for_start_and_completed(stack, receiver, astronaut_png):
    hook = receiver()
    secret = httpx.get(f"{stack.url}/api/webhooks/secret", timeout=10).json()
    assert secret == {"secret": SERVICE_SECRET, "scope": "service"}
    submitted = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)}, timeout=60, data={
        "blend_mask": "box", "webhook": hook.url, "webhook_events": "start,completed"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.json()["webhook"] == {"url": hook.url, "events": ["start", "completed"], "deliveries": []}
    hook.wait_for(2)
    bodies = [verified(secret["secret"], headers, body) for headers, body in hook.calls]
    assert [body["id"] for body in bodies] == [job_id, job_id]
    assert bodies[-1]["status"] == "succeeded" and bodies[-1]["result"] is not None
    # Signed with another secret, the same call does not verify.
    with pytest.raises(WebhookVerificationError):
        verified(new_secret(), *hook.calls[0])

    job = delivered(stack.url, job_id, 2)
    deliveries = {d["event"]: d for d in job["webhook"]["deliveries"]}
    assert set(deliveries) == {"start", "completed"}
    assert {d["status"] for d in deliveries.values()} == {"delivered"}
    assert all(d["attempts"] == 1 and d["last_status"] == 200 and d["last_error"] is None for d in deliveries.values())
    assert sorted(headers["webhook-id"] for headers, _ in hook.calls) == sorted(d["id"] for d in deliveries.values())
    assert "receiver's own body" not in json.dumps(job)


def test_a_failing_receiver_is_retried_and_every_attempt_is_recorded(stack, receiver, astronaut_png):
    flaky = receiver([500, 503, 302])  # a redirect is an answer, not followed: it fails the attempt too
    job_id = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)}, timeout=60, data={
        "blend_mask": "box", "webhook": flaky.url}).json()["id"]
    flaky.wait_for(4)
    job = delivered(stack.url, job_id, 1)
    (delivery,) = job["webhook"]["deliveries"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 4 and delivery["last_status"] == 200
    assert len({headers["webhook-id"] for headers, _ in flaky.calls}) == 1  # one event: receivers dedupe on it
    assert all(headers.get("host") == f"127.0.0.1:{flaky.port}" for headers, _ in flaky.calls)

    dead = receiver([500] * 10)
    job_id = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)}, timeout=60, data={
        "blend_mask": "box", "webhook": dead.url}).json()["id"]
    job = delivered(stack.url, job_id, 1)
    (delivery,) = job["webhook"]["deliveries"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("failed", 5, 500)
    assert delivery["last_error"] == "the receiver answered 500" and len(dead.calls) == 5


def test_a_batch_calls_once_when_it_ends_and_per_job_when_asked(stack, receiver, astronaut_png):
    hook = receiver()
    files = [("files", ("a.png", astronaut_png)), ("files", ("b.png", astronaut_png))]
    batch = httpx.post(f"{stack.url}/api/batches", files=files, timeout=60, data={
        "blend_mask": "box", "webhook": hook.url, "webhook_events": "start,completed,job_completed"}).json()
    assert batch["webhook"]["events"] == ["start", "completed", "job_completed"]
    hook.wait_for(4)
    time.sleep(1.5)  # nothing more comes
    bodies = [verified(SERVICE_SECRET, headers, body) for headers, body in hook.calls]
    assert len(bodies) == 4
    jobs = sorted(body["id"] for body in bodies if "status" in body)
    assert jobs == sorted(job["id"] for job in batch["jobs"])
    start, whole = [body for body in bodies if "total" in body]  # the batch's own: its start, then its end
    assert start["id"] == whole["id"] == batch["id"]
    assert whole["done"] and whole["counts"]["succeeded"] == 2
    assert bodies[-1] is whole  # the batch's end is called once its last job has ended
    view = httpx.get(f"{stack.url}/api/batches/{batch['id']}", timeout=10).json()["webhook"]["deliveries"]
    assert sorted((d["event"], d["status"]) for d in view) == [("completed", "delivered"), ("start", "delivered")]


def test_restoring_chosen_faces_takes_a_webhook(stack, receiver, astronaut_png):
    hook = receiver()
    detection = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)},
                           data={"detect_only": "true"}, timeout=60).json()["id"]
    assert wait_for_status(stack.url, detection)["status"] == "succeeded", stack.logs()
    restore = httpx.post(f"{stack.url}/api/jobs/{detection}/restore", timeout=60,
                         data={"blend_mask": "box", "webhook": hook.url}).json()
    hook.wait_for(1)
    assert verified(SERVICE_SECRET, *hook.calls[0])["id"] == restore["id"]


def test_a_keys_calls_are_signed_with_its_own_secret(stack, storage, settings, receiver, astronaut_png):
    hook = receiver()
    _, key = ApiKeys(storage.tables.get_table_client(settings.api_keys_table)).create("integrator")
    own = httpx.get(f"{stack.url}/api/webhooks/secret", headers={"X-API-Key": key}, timeout=10).json()
    assert own["scope"] == "key" and own["secret"].startswith("whsec_") and own["secret"] != SERVICE_SECRET
    again = httpx.get(f"{stack.url}/api/webhooks/secret", headers={"X-API-Key": key}, timeout=10).json()
    assert again == own
    httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)}, headers={"X-API-Key": key},
               data={"blend_mask": "box", "webhook": hook.url}, timeout=60)
    hook.wait_for(1)
    verified(own["secret"], *hook.calls[0])
    with pytest.raises(WebhookVerificationError):
        verified(SERVICE_SECRET, *hook.calls[0])


# -- refusals --------------------------------------------------------------------------

REFUSED = [
    ("http://127.0.0.1:9/hook", "https"),  # not https
    ("https://127.0.0.1/hook", "loopback"),
    ("https://10.1.2.3/hook", "private"),
    ("https://169.254.169.254/latest/meta-data", "metadata"),
    ("https://localhost:8443/hook", "loopback"),  # a name that resolves to loopback
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),  # IPv4-mapped IPv6
    ("https://[::1]/hook", "loopback"),
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://user:pw@203.0.113.9/hook", "user name"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_private_targets_are_refused_at_submit(client, astronaut_png, url, reason):
    answer = client.post("/api/jobs", files={"file": ("me.png", astronaut_png)}, data={"webhook": url})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["fields"][0]["field"] == "webhook" and reason in error["message"]


def test_submit_refusals_cover_batches_restorations_and_events(client, astronaut_png):
    files = [("files", ("a.png", astronaut_png))]
    answer = client.post("/api/batches", files=files, data={"webhook": "https://10.0.0.8/"})
    assert answer.status_code == 422 and answer.json()["error"]["fields"][0]["field"] == "webhook"
    answer = client.post(f"/api/jobs/{'0' * 32}/restore", data={"webhook": "https://192.168.1.1/"})
    assert answer.status_code in (404, 422)  # no such job: nothing is made either way
    answer = client.post("/api/jobs", files={"file": ("me.png", astronaut_png)}, data={"webhook_events": "completed"})
    assert answer.status_code == 422 and answer.json()["error"]["fields"][0]["field"] == "webhook_events"
    answer = client.post("/api/jobs", files={"file": ("me.png", astronaut_png)},
                         data={"webhook": "https://10.0.0.8/", "webhook_events": "job_start"})
    assert answer.status_code == 422 and answer.json()["error"]["fields"][0]["field"] == "webhook_events"


def test_without_a_service_secret_only_key_holders_get_webhooks(settings, storage, tmp_path, astronaut_png):
    stack = LiveStack(settings, tmp_path, WEBHOOK_ALLOW_PRIVATE="true")
    try:
        stack.start_api()
        answer = httpx.post(f"{stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)},
                            data={"webhook": "http://127.0.0.1:9/hook"}, timeout=60)
        assert answer.status_code == 422 and "WEBHOOK_SECRET" in answer.json()["error"]["message"]
        secret = httpx.get(f"{stack.url}/api/webhooks/secret", timeout=10)
        assert secret.status_code == 404 and secret.json()["error"]["code"] == "no_webhook_secret"
    finally:
        stack.stop()


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:{port}/hook", "https"),
    ("https://127.0.0.1:{port}/hook", "loopback"),
    ("https://localhost:{port}/hook", "loopback"),
    ("https://10.20.30.40/hook", "private"),
    ("https://169.254.169.254/latest/meta-data", "metadata"),
])
def test_targets_are_checked_again_when_the_call_is_made(settings, storage, receiver, url, reason):
    """A target accepted at submit (local development allowed it, or its name resolved to a public
    address then) is checked again, after resolving, when the call is due: refused, recorded, not
    retried, and the receiver is never reached."""
    hook = receiver()
    webhooks = make_webhooks(settings.with_changes(webhook_secret=SERVICE_SECRET), storage)
    from processing.jobs.records import Job

    job = Job(id="ab" * 16, webhook=url.format(port=hook.port), webhook_events=["completed"])
    webhooks.jobs.create(job)
    assert webhooks.schedule(job.id, "job", "completed", job.webhook, "")
    assert not webhooks.schedule(job.id, "job", "completed", job.webhook, "")  # once per event
    (message,) = storage.webhooks_queue.receive_messages(max_messages=1)
    assert webhooks.deliver(message.content) == "refused"
    delivery = webhooks.deliveries.get(job.id, "completed")
    assert delivery.status == "refused" and delivery.attempts == 1 and reason in delivery.last_error
    assert hook.calls == [] and storage.webhooks_queue.peek_messages() == []
    assert webhooks.deliver(message.content) == "dropped"  # a duplicate message changes nothing


def test_a_late_start_call_says_running_and_every_retry_sends_the_same_bytes(settings, storage, receiver):
    """The body is the job as it was at the event: a ``start`` call retried after the job
    ended still says running (a receiver would otherwise see a start event for a finished
    job), and one webhook-id always carries the same signed bytes."""
    from processing.jobs.records import Job

    hook = receiver([503])
    webhooks = make_webhooks(settings.with_changes(webhook_secret=SERVICE_SECRET, webhook_allow_private=True,
                                                   webhook_retry_seconds=("0",)), storage)
    job = webhooks.jobs.create(Job(id="f1" * 16, webhook=hook.url, webhook_events=["start", "completed"]))
    job = webhooks.jobs.claim(job.id, "worker-1", timedelta(minutes=5))
    webhooks.job_started(job)
    (message,) = storage.webhooks_queue.receive_messages(max_messages=1)
    assert webhooks.deliver(message.content) == "retrying"  # the receiver answered 503
    webhooks.jobs.finish(job, "succeeded")
    (retry,) = storage.webhooks_queue.receive_messages(max_messages=1)
    assert webhooks.deliver(retry.content) == "delivered"
    (first_headers, first), (second_headers, second) = hook.calls
    assert first == second and first_headers["webhook-id"] == second_headers["webhook-id"]
    body = verified(SERVICE_SECRET, second_headers, second)
    assert body["status"] == "running"
    # The body names the event behind its webhook-id, as it stood when the event happened.
    (own,) = [d for d in body["webhook"]["deliveries"] if d["id"] == second_headers["webhook-id"]]
    assert (own["event"], own["status"], own["attempts"]) == ("start", "pending", 0)
    # What GET answers is the job now, and its deliveries are listed without their bodies.
    (delivery,) = webhooks.deliveries.of(job.id)
    assert delivery.status == "delivered" and delivery.body is None


def test_local_development_may_call_loopback_but_never_metadata():
    assert check_target("http://127.0.0.1:8080/x", allow_private=True).address == "127.0.0.1"
    assert check_target("https://localhost:8443/x", allow_private=True).host == "localhost"
    for url in ("https://169.254.169.254/", "https://[::ffff:169.254.169.254]/", "http://168.63.129.16/"):
        with pytest.raises(TargetRefused, match="metadata"):
            check_target(url, allow_private=True)
    # An address literal needs no lookup, and nothing here connects to it.
    assert check_target("https://1.1.1.1:8443/a?b=c", allow_private=False).path == "/a?b=c"


def test_delivery_rows_are_removed_with_their_job(client, storage, settings):
    webhooks = make_webhooks(settings, storage)
    job_id = "cd" * 16
    from processing.jobs.records import Job

    webhooks.jobs.create(Job(id=job_id))
    webhooks.deliveries.create(Delivery(subject=job_id, event="completed", kind="job", url="https://x.test/", owner=""))
    assert client.delete(f"/api/jobs/{job_id}").status_code == 204
    assert webhooks.deliveries.of(job_id) == []


# -- nothing lost when a process dies between two steps -----------------------------------


def test_a_message_lost_after_the_row_was_written_is_sent_again_by_the_timer(settings, storage, receiver):
    hook = receiver()
    webhooks = make_webhooks(settings.with_changes(webhook_secret=SERVICE_SECRET, webhook_allow_private=True), storage)
    from processing.jobs.records import Job, utcnow

    old, new = Job(id="e1" * 16, webhook=hook.url), Job(id="e2" * 16, webhook=hook.url)
    for job in (old, new):
        webhooks.jobs.create(job)
    # Rows written, messages never sent (the process died in between); one of them long ago.
    webhooks.deliveries.create(Delivery(subject=old.id, event="completed", kind="job", url=hook.url, owner="",
                                        created_at=utcnow() - timedelta(minutes=11)))
    webhooks.deliveries.create(Delivery(subject=new.id, event="completed", kind="job", url=hook.url, owner=""))
    assert webhooks.requeue_stale() == 1
    (message,) = storage.webhooks_queue.receive_messages(max_messages=5)
    assert webhooks.deliver(message.content) == "delivered"
    assert verified(SERVICE_SECRET, *hook.calls[0])["id"] == old.id
    assert webhooks.requeue_stale() == 0  # delivered: nothing more to send; the new one is not overdue yet


def test_a_job_that_ended_without_its_webhook_gets_it_from_the_redelivered_message(settings, storage, engine,
                                                                                   astronaut_png):
    """A worker that ended the job and died before scheduling its webhook left the job's message
    to come back: the next delivery finds the job finished and schedules the call (once)."""
    from processing.jobs.options import JobOptions
    from processing.jobs.service import JobService
    from processing.jobs.webhooks import WebhookRequest
    from processing.storage import encode_job_message
    from processing.worker import JobHandler

    local = settings.with_changes(webhook_secret=SERVICE_SECRET, webhook_allow_private=True)
    job = JobService(local, storage).submit(astronaut_png, "me.png", JobOptions(blend_mask="box"),
                                            webhook=WebhookRequest("http://127.0.0.1:9/hook", ("completed",)))
    message = encode_job_message(job.id)
    assert JobHandler(local, storage, lambda: engine).handle_message(message).status == "succeeded"  # no webhooks
    webhooks = make_webhooks(local, storage)
    again = JobHandler(local, storage, lambda: engine, webhooks=webhooks)
    assert again.handle_message(message).status == "skipped"
    assert again.handle_message(message).status == "skipped"
    (delivery,) = webhooks.deliveries.of(job.id)
    assert (delivery.event, delivery.status) == ("completed", "pending")
    assert len(storage.webhooks_queue.peek_messages(max_messages=5)) == 1
