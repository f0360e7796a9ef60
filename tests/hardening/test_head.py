"""HEAD on every GET route answers what GET answers, without the body (RFC 9110, 9.3.2: "The
server SHOULD send the same header fields in response to a HEAD request as it would have sent if
the request method had been GET"): the job view, its images, a batch, health, info and the page.
Monitors and download managers ask HEAD first; a 405 there read as a broken service."""

from __future__ import annotations

import asyncio

from processing.worker import PollingWorker
from tests.hardening.helpers import png_bytes, submit

# Headers that may differ between two answers to the same question.
_VOLATILE = {"date", "retry-after"}


def test_head_answers_like_get_without_a_body(client, storage, settings, handler):
    job_id = submit(client, png_bytes(96, 96), upscale=1, blend_mask="box").json()["id"]
    assert PollingWorker(settings, storage, handler).run(max_messages=1) == 1
    batch_id = client.post("/api/batches", files=[("files", ("a.png", png_bytes(), "image/png"))]).json()["id"]
    paths = [f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/result", f"/api/jobs/{job_id}/result?download=true",
             f"/api/jobs/{job_id}/input", f"/api/batches/{batch_id}", "/api/health", "/api/info", "/",
             "/js/main.js", f"/api/jobs/{'0' * 32}"]
    for path in paths:
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
        assert head.content == b"", path
        assert {k: v for k, v in head.headers.items() if k not in _VOLATILE} == \
               {k: v for k, v in got.headers.items() if k not in _VOLATILE}, path
        if got.status_code == 200 and "content-length" in got.headers:
            assert int(head.headers["content-length"]) == len(got.content), path
        # The test client drops a HEAD answer's body itself; the app must not send one at all
        # (the Functions host's ASGI bridge passes on what it is given).
        assert _asgi_body(client.app, "HEAD", path) == b"", path
    # Where there is no GET, HEAD is still a 405 naming what the path has.
    response = client.head("/api/jobs")
    assert response.status_code == 405 and response.headers["allow"] == "POST" and response.content == b""


def _asgi_body(app, method: str, path: str) -> bytes:
    """Every body byte the app sends for one request, straight from the ASGI interface."""
    sent: list[bytes] = []
    path, _, query = path.partition("?")
    requested, done = False, asyncio.Event()

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # streaming responses listen for the client leaving meanwhile
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body":
            sent.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    return b"".join(sent)
