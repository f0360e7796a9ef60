"""Prefer: wait=N on POST /api/jobs (RFC 7240), against the real API process and, where a job is
to finish, the real worker on stand-in weights."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.conftest import LiveStack


def small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(out, "PNG")
    return out.getvalue()


def submit(url: str, png: bytes, prefer: str | None, timeout: float = 90) -> httpx.Response:
    return httpx.post(f"{url}/api/jobs", files={"file": ("me.png", png)}, data={"blend_mask": "box"},
                      headers={"Prefer": prefer} if prefer else {}, timeout=timeout)


@pytest.fixture
def api_only(settings, storage, tmp_path):
    """No worker: a submitted job stays queued, so a wait always runs its full length."""
    def start(**env) -> LiveStack:
        stack = LiveStack(settings, tmp_path, **env)
        stack.start_api()
        started.append(stack)
        return stack

    started: list[LiveStack] = []
    yield start
    for stack in started:
        stack.stop()


def test_a_job_that_ends_within_the_wait_is_answered_finished(live_stack, astronaut_png):
    answer = submit(live_stack.url, astronaut_png, "respond-async, wait=60")
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "succeeded" and job["links"]["result"]
    assert answer.headers["Preference-Applied"] == "wait=60"
    assert answer.headers["Content-Location"] == f"/api/jobs/{job['id']}"
    # Over 60 is taken as 60 (the most the service waits), and says so.
    longer = submit(live_stack.url, astronaut_png, "wait=600")
    assert longer.status_code == 200 and longer.headers["Preference-Applied"] == "wait=60"
    # Without the preference: 202 at once, as always.
    plain = submit(live_stack.url, astronaut_png, None)
    assert plain.status_code == 202 and "Preference-Applied" not in plain.headers


def test_a_job_still_running_when_the_wait_ends_is_a_202(api_only):
    stack = api_only()
    started = time.monotonic()
    answer = submit(stack.url, small_png(), "wait=2")
    took = time.monotonic() - started
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    assert answer.headers["Location"] == f"/api/jobs/{answer.json()['id']}"
    assert 2.0 <= took < 6.0, took
    for unreadable in ("wait=soon", "wait=0", "wait=-3", "handling=lenient"):  # ignored, as RFC 7240 says
        started = time.monotonic()
        assert submit(stack.url, small_png(), unreadable).status_code == 202
        assert time.monotonic() - started < 2.0


def test_waiting_requests_hold_no_thread_and_are_bounded(api_only):
    """Fifty requests wait at once, more than the API's thread pool (40): were a thread held per
    request, the health check behind them would queue for one. Past MAX_WAITING_REQUESTS: 503."""
    stack = api_only(MAX_WAITING_REQUESTS="50")
    png = small_png()
    with ThreadPoolExecutor(51) as pool:
        waiting = [pool.submit(submit, stack.url, png, "wait=12") for _ in range(50)]
        time.sleep(4)  # every one is in by now (each upload takes well under a second here)
        started = time.monotonic()
        health = httpx.get(f"{stack.url}/api/health", timeout=30)
        health_took = time.monotonic() - started
        refused = submit(stack.url, png, "wait=12")
        answers = [future.result() for future in waiting]
    assert health.status_code in (200, 503) and health_took < 2.0, health_took
    assert [a.status_code for a in answers] == [202] * 50
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.json()["error"]["code"] == "busy" and "Prefer: wait" in refused.json()["error"]["message"]
    # The seats are free again once the waits are over.
    assert submit(stack.url, png, "wait=1").status_code == 202
