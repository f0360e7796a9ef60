"""A soak with the networks running and faults injected, on loopback.

    .venv/bin/python -m benchmarks.soak [--jobs 60] [--clients 3]

Starts Azurite, the API and two competing workers as real processes (the test suite's
LiveStack, stand-in weights: every job runs detection, GFPGAN, ParseNet and the paste-back),
and a webhook receiver on 127.0.0.1. Clients submit small real photos with faces, each with
an Idempotency-Key and a webhook for `start` and `completed`, and poll each job to its end,
retrying what storage refuses while it is down. During the run:

- one worker is SIGKILLed in the middle of a job (inside the networks) and a new one started;
- Azurite is stopped and started again.

Then it checks that nothing was lost or done twice: every job succeeded, each was finished
by exactly one worker (one final log line across all workers' logs), the table holds one
row per accepted job, every blob belongs to a job and every job has its result set (no
orphans), the job, poison and webhook queues drain, and every job's `start` and `completed`
webhooks arrived, correctly signed (receivers dedupe on `webhook-id`). It reports jobs per
minute and p50/p95 end to end (POST to the poll that sees the end).

tests/hardening/test_soak.py runs the same soak, smaller, in the suite.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import signal
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
FINAL_LINE = re.compile(r"job ([0-9a-f]{32}): succeeded with \d+ faces")
RETRYABLE = (429, 502, 503, 504)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def photos(count: int) -> list[tuple[str, bytes]]:
    """Small real photos with one face each: the astronaut at several sizes, mirrored or
    not, as JPEG, so each upload is different bytes and the Haar stand-in finds the face."""
    import cv2

    from benchmarks.inputs import astronaut_bgr

    base = astronaut_bgr()
    out = []
    for index in range(count):
        side = 288 + 32 * (index % 6)
        pixels = cv2.resize(base, (side, side), interpolation=cv2.INTER_AREA)
        if index % 2:
            pixels = cv2.flip(pixels, 1)
        data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90 - index % 7])[1].tobytes()
        out.append((f"soak-{index:03d}.jpg", data))
    return out


class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies each call as it arrives, as a receiver
    must (Standard Webhooks refuses a timestamp more than 5 minutes old), and keeps what it
    got: the payload, or why it failed verification."""

    def __init__(self):
        self.calls: list[dict] = []
        self.verifier = None  # a standardwebhooks Webhook, set once the secret is known
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                call = {"headers": headers, "body": body, "payload": None, "error": None}
                try:
                    call["payload"] = receiver.verifier.verify(body, headers)
                except Exception as error:  # noqa: BLE001 - any verification failure is a finding
                    call["error"] = f"{error.__class__.__name__}: {error}"
                with receiver._lock:
                    receiver.calls.append(call)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.calls)


@dataclass
class Outcome:
    name: str
    job_id: str | None = None
    status: str | None = None
    error: str | None = None
    submitted: float = 0.0
    ended: float = 0.0
    submit_attempts: int = 0


@dataclass
class Soak:
    azurite: object  # tests.conftest.Azurite
    stack: object  # tests.conftest.LiveStack
    storage: object  # processing.storage.Storage
    jobs: int = 60
    clients: int = 3
    job_timeout: float = 600.0
    log: callable = print
    outcomes: list[Outcome] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    webhook_calls: int = 0

    # -- the clients ---------------------------------------------------------------------

    def _request(self, client, method: str, path: str, deadline: float, **kwargs):
        """One call as a careful integrator makes it: retried on 503/429 (Retry-After) and on
        a dropped connection, until the deadline. Safe for the POST: it carries an
        Idempotency-Key, so a retry never makes a second job."""
        import httpx

        while True:
            try:
                response = client.request(method, f"{self.stack.url}{path}", **kwargs)
                if response.status_code not in RETRYABLE:
                    return response
                wait = min(float(response.headers.get("retry-after", 1)), 5.0)
            except httpx.TransportError:
                wait = 1.0
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"{method} {path}: no answer before the deadline")
            time.sleep(wait)

    def _client(self, work: list[tuple[str, bytes]], webhook: str | None) -> None:
        import httpx

        with httpx.Client(timeout=30) as client:
            for name, data in work:
                outcome = Outcome(name)
                self.outcomes.append(outcome)
                deadline = time.monotonic() + self.job_timeout
                fields = {"blend_mask": "parse"}
                if webhook:
                    fields |= {"webhook": webhook, "webhook_events": "start,completed"}
                outcome.submitted = time.monotonic()
                key = uuid.uuid4().hex
                try:
                    response = self._request(client, "POST", "/api/jobs", deadline,
                                             files={"file": (name, data, "image/jpeg")}, data=fields,
                                             headers={"Idempotency-Key": key})
                    if response.status_code != 202:
                        outcome.status, outcome.error = "refused", f"{response.status_code} {response.text[:200]}"
                        continue
                    outcome.job_id = response.json()["id"]
                    while True:
                        body = self._request(client, "GET", f"/api/jobs/{outcome.job_id}", deadline).json()
                        if body["status"] in ("succeeded", "failed", "cancelled"):
                            outcome.status, outcome.ended = body["status"], time.monotonic()
                            outcome.error = (body.get("error") or {}).get("message") if body.get("error") else None
                            break
                        if time.monotonic() > deadline:
                            outcome.status = "timeout"
                            break
                        time.sleep(0.25)
                except TimeoutError as error:
                    outcome.status, outcome.error = "timeout", str(error)

    # -- the faults ----------------------------------------------------------------------

    def _finished(self) -> int:
        return sum(1 for o in self.outcomes if o.ended)

    def _kill_a_worker_mid_job(self) -> None:
        """SIGKILL the worker that holds a job inside the networks, then start another."""
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for outcome in list(self.outcomes):
                if not outcome.job_id or outcome.ended:
                    continue
                try:
                    body = httpx.get(f"{self.stack.url}/api/jobs/{outcome.job_id}", timeout=10).json()
                except httpx.HTTPError:
                    continue
                if body.get("status") != "running" or not 0.05 < body.get("progress", 0) < 0.9:
                    continue
                for index, worker in enumerate(self.stack.workers):
                    if worker.poll() is not None:
                        continue
                    log = (self.stack.log_dir / f"worker{index}.log").read_text(errors="replace")
                    claimed = [m.group(1) for m in re.finditer(r"job ([0-9a-f]{32}): attempt \d+ on", log)]
                    if claimed and claimed[-1] == outcome.job_id:
                        worker.send_signal(signal.SIGKILL)
                        worker.wait(10)
                        self.faults.append(f"worker{index} SIGKILLed in job {outcome.job_id} "
                                           f"(stage {body.get('stage')}, progress {body.get('progress'):.2f})")
                        self.log(self.faults[-1])
                        self.stack.start_worker()
                        return
            time.sleep(0.1)
        self.faults.append("no job was caught inside the networks: no worker killed")

    def _restart_azurite(self) -> None:
        self.azurite.stop()
        time.sleep(2.0)
        self.azurite.start()
        self.faults.append("Azurite stopped and started again")
        self.log(self.faults[-1])

    def _inject_faults(self) -> None:
        for threshold, fault in ((self.jobs // 4, self._kill_a_worker_mid_job),
                                 (self.jobs // 2, self._restart_azurite)):
            while self._finished() < threshold and any(t.is_alive() for t in self._threads):
                time.sleep(0.2)
            fault()

    # -- the run -------------------------------------------------------------------------

    def run(self, receiver: Receiver | None = None) -> dict:
        pool = photos(self.jobs)
        if receiver is not None:
            import httpx
            from standardwebhooks.webhooks import Webhook

            secret = httpx.get(f"{self.stack.url}/api/webhooks/secret", timeout=10).json()["secret"]
            receiver.verifier = Webhook(secret)
        shares = [pool[i::self.clients] for i in range(self.clients)]
        webhook = receiver.url if receiver else None
        started = time.monotonic()
        self._threads = [threading.Thread(target=self._client, args=(share, webhook)) for share in shares]
        for thread in self._threads:
            thread.start()
        self._inject_faults()
        for thread in self._threads:
            thread.join()
        elapsed = time.monotonic() - started
        problems = self.check(receiver)
        e2e = [o.ended - o.submitted for o in self.outcomes if o.status == "succeeded"]
        return {
            "jobs": self.jobs, "clients": self.clients, "workers": 2, "faults": self.faults,
            "succeeded": sum(o.status == "succeeded" for o in self.outcomes),
            "wall_seconds": round(elapsed, 1),
            "jobs_per_minute": round(len(e2e) / elapsed * 60, 2),
            "end_to_end_p50_s": round(statistics.median(e2e), 2) if e2e else None,
            "end_to_end_p95_s": round(percentile(e2e, 95), 2) if e2e else None,
            "webhook_calls": self.webhook_calls,
            "problems": problems,
        }

    # -- the checks ----------------------------------------------------------------------

    def _drained(self, timeout: float = 60.0) -> list[str]:
        queues = [self.storage.jobs_queue, self.storage.poison_queue, self.storage.webhooks_queue]
        deadline = time.monotonic() + timeout
        while True:
            left = [q.queue_name for q in queues if _message_count(q)]
            if not left or time.monotonic() > deadline:
                return [f"queue {name} did not drain" for name in left]
            time.sleep(0.5)

    def check(self, receiver: Receiver | None) -> list[str]:
        problems = [f"{o.name}: {o.status} ({o.error})" for o in self.outcomes if o.status != "succeeded"]
        ids = [o.job_id for o in self.outcomes if o.job_id]
        if len(set(ids)) != len(self.outcomes):
            problems.append(f"{len(self.outcomes)} photos submitted, {len(set(ids))} distinct jobs")
        finals: dict[str, int] = {}
        for log in self.stack.log_dir.glob("worker*.log"):
            for match in FINAL_LINE.finditer(log.read_text(errors="replace")):
                finals[match.group(1)] = finals.get(match.group(1), 0) + 1
        problems += [f"job {j} finished {finals.get(j, 0)} times" for j in ids if finals.get(j, 0) != 1]

        settings = self.stack.settings
        table = self.storage.tables.get_table_client(settings.jobs_table)
        rows = {e["PartitionKey"] for e in table.query_entities("RowKey eq 'job'")}
        if rows != set(ids):
            problems.append(f"table rows differ from accepted jobs: {sorted(rows ^ set(ids))[:5]}")
        for container in (settings.uploads_container, settings.results_container):
            for blob in self.storage.container(container).list_blobs():
                if blob.name.split("/", 1)[0] not in rows:
                    problems.append(f"orphan blob {container}/{blob.name}")
        for job_id in ids:
            names = {b.name for b in self.storage.container(settings.results_container).list_blobs(
                name_starts_with=f"{job_id}/")}
            if f"{job_id}/restored.png" not in names:
                problems.append(f"job {job_id} has no result")
        problems += self._drained()
        if receiver is not None:
            problems += self._check_webhooks(receiver, ids)
        return problems

    def _check_webhooks(self, receiver: Receiver, ids: list[str], timeout: float = 120.0) -> list[str]:
        """Every job's `start` and `completed` calls, each verified on arrival with the Standard
        Webhooks reference implementation; duplicates of one webhook-id count once. The body is
        the job view, whose deliveries name the event behind each webhook-id."""
        deadline = time.monotonic() + timeout
        while True:
            events: set[tuple[str, str]] = set()
            bad = []
            for call in receiver.snapshot():
                job = call["payload"]
                if job is None:
                    bad.append(f"a webhook call failed verification: {call['error']}")
                    continue
                webhook_id = call["headers"]["webhook-id"]
                named = [d["event"] for d in (job.get("webhook") or {}).get("deliveries", []) if d["id"] == webhook_id]
                if not named:
                    bad.append(f"job {job.get('id')}: webhook-id {webhook_id} names no delivery of the job")
                    continue
                events.add((job["id"], named[0]))
                if named[0] == "completed" and job["status"] != "succeeded":
                    bad.append(f"job {job['id']}: the completed call carries status {job['status']}")
            missing = [f"job {j}: no {event} webhook" for j in ids for event in ("start", "completed")
                       if (j, event) not in events]
            if not missing and not bad or time.monotonic() > deadline:
                self.webhook_calls = len(receiver.snapshot())
                return bad + missing
            time.sleep(1.0)


def _message_count(queue) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return queue.get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    from benchmarks.local import scratch_azurite, standin_store
    from processing.storage import Storage
    from tests.conftest import LiveStack, isolated_settings

    weights_dir = standin_store()
    scratch, azurite = scratch_azurite("soak-")
    settings = isolated_settings(azurite, weights_dir).with_changes(**SOAK_SETTINGS)
    storage = Storage(settings)
    storage.ensure_resources()
    (scratch / "logs").mkdir()
    stack = LiveStack(settings, scratch / "logs", **SOAK_ENV)
    try:
        stack.start_api()
        for _ in range(2):
            stack.start_worker()
        with Receiver() as receiver:
            report = Soak(azurite, stack, storage, jobs=args.jobs, clients=args.clients,
                          log=lambda line: print(line, file=sys.stderr, flush=True)).run(receiver)
    finally:
        stack.stop()
        azurite.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 1 if report["problems"] else 0


# The soak's settings beside the suite's defaults: a short lease, so a killed worker's job is
# taken over in seconds; a thread each for two workers on two cores; local webhook targets
# allowed; rate limits off (three clients poll).
SOAK_SETTINGS = {"lease_seconds": 8, "engine_threads": 1}
SOAK_ENV = {"WEBHOOK_ALLOW_PRIVATE": "true", "RATE_LIMIT_PER_MINUTE": "0", "RATE_LIMIT_READS_PER_MINUTE": "0",
            "WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"soak-webhook-secret-32-bytes-long").decode()}


if __name__ == "__main__":
    sys.exit(main())
