"""The remote client (`python -m processing submit`) against the live stack: the real API and
worker processes on Azurite with stand-in weights. The client runs from .venv-runtime (what the
image ships), in a process of its own, and talks to the service over HTTP only.

MAX_BATCH_FILES is 2 on this service, so a folder of five photos goes as three batches: the client
read the limit from GET /api/info."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from processing.jobs.records import JobRepository
from tests.conftest import ROOT, LiveStack
from tests.hardening.helpers import jpeg_bytes, png_bytes

RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"
STATE = ".restore-state.json"
FAST = ["-o", "upscale=1", "-o", "blend_mask=box"]


@pytest.fixture
def stack(settings, storage, tmp_path):
    if not RUNTIME_PYTHON.is_file():
        pytest.fail(f"{RUNTIME_PYTHON} is missing: ./scripts/setup.sh builds it (./scripts/test.sh runs setup first)")
    live = LiveStack(settings, tmp_path / "logs", MAX_BATCH_FILES="2")
    (tmp_path / "logs").mkdir()
    live.start_api()
    live.start_worker()
    yield live
    live.stop()


def _photos(folder: Path, count: int) -> list[Path]:
    (folder / "sub").mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / ("sub" if i % 2 else "") / f"photo{i}.{'jpg' if i % 2 else 'png'}"
        path.write_bytes(jpeg_bytes(60 + i, 48) if i % 2 else png_bytes(60 + i, 48, colour=(30 * i, 90, 140)))
        paths.append(path)
    return paths


def _client(stack, *args: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([str(RUNTIME_PYTHON), "-m", "processing", "submit", "--url", stack.url, "--out", str(out),
                             "--no-progress", *FAST, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={"PATH": "/usr/bin:/bin"})  # none of the service's settings


def _run(stack, *args: str, out: Path) -> tuple[int, str]:
    process = _client(stack, *args, out=out)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def _jobs(stack) -> list:
    from processing.storage import Storage

    settings = stack.settings
    return list(JobRepository(Storage(settings).tables.get_table_client(settings.jobs_table)).query("RowKey eq 'job'"))


def _wait_for_uploads(client: subprocess.Popen, out: Path, count: int) -> dict:
    """The state file once it holds a job for each of ``count`` files (the client still running)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            files = json.loads((out / STATE).read_text())["files"]
            if len(files) == count and all(entry["job_id"] for entry in files.values()):
                return files
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert client.poll() is None and time.monotonic() < deadline, client.communicate()[1]
        time.sleep(0.05)


def test_a_folder_is_restored_in_batches_within_the_service_limits(stack, tmp_path):
    folder, out = tmp_path / "scans", tmp_path / "restored"
    photos = _photos(folder, 5)
    code, stderr = _run(stack, str(folder), out=out)
    assert code == 0, stderr + stack.logs()
    assert "5 of 5 restored" in stderr

    state = json.loads((out / STATE).read_text())["files"]
    assert sorted(state) == sorted(p.relative_to(folder).as_posix() for p in photos)
    jobs = _jobs(stack)
    assert len(jobs) == 5 and all(job.status == "succeeded" for job in jobs)
    # Two per batch, as /api/info says: three batches.
    assert len({job.batch_id for job in jobs}) == 3 and all(job.batch_id for job in jobs)
    for name, entry in state.items():
        result = out / entry["output"]
        assert entry["status"] == "downloaded" and result.name == Path(name).stem + "-restored.png"
        served = httpx.get(f"{stack.url}/api/jobs/{entry['job_id']}/result", timeout=30)
        assert result.read_bytes() == served.content


def test_an_interrupted_run_resumes_without_uploading_again(stack, tmp_path):
    folder, out = tmp_path / "scans", tmp_path / "restored"
    _photos(folder, 4)
    first = _client(stack, str(folder), out=out)
    seen = _wait_for_uploads(first, out, 4)
    first.send_signal(signal.SIGKILL)  # the hardest stop: no handler, no last save
    first.wait(10)
    assert sum(entry["status"] == "downloaded" for entry in seen.values()) < 4, "nothing was left to resume"
    assert len(_jobs(stack)) == 4

    code, stderr = _run(stack, str(folder), out=out)
    assert code == 0, stderr + stack.logs()
    jobs = _jobs(stack)
    assert len(jobs) == 4 and {job.id for job in jobs} == {entry["job_id"] for entry in seen.values()}
    state = json.loads((out / STATE).read_text())["files"]
    assert all(entry["status"] == "downloaded" and (out / entry["output"]).is_file() for entry in state.values())

    # A third run finds everything downloaded: nothing is sent, nothing fetched again.
    stamps = {name: (out / entry["output"]).stat().st_mtime_ns for name, entry in state.items()}
    code, stderr = _run(stack, str(folder), out=out)
    assert code == 0 and "4 of 4 restored" in stderr, stderr
    assert {name: (out / entry["output"]).stat().st_mtime_ns for name, entry in state.items()} == stamps
    assert len(_jobs(stack)) == 4


def test_bad_files_among_good_ones_exit_non_zero_naming_each(stack, tmp_path):
    folder, out = tmp_path / "scans", tmp_path / "restored"
    _photos(folder, 3)
    # Sorted, the client sends [cut, photo0] [photo0x, photo2] [sub/photo1]: each bad file shares a
    # batch with a good one, so the refusals come back in the batch's list, by name.
    (folder / "photo0x.jpg").write_text("this is not a photo")
    (folder / "cut.png").write_bytes(png_bytes(64, 48)[:60])
    code, stderr = _run(stack, str(folder), out=out)
    assert code == 1, stderr
    failed = [line for line in stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2, stderr
    assert any("photo0x.jpg: upload refused" in line and "(not_an_image)" in line for line in failed), failed
    assert any("cut.png: upload refused" in line and "(corrupt_image)" in line for line in failed), failed
    assert "3 of 5 restored" in stderr and "2 failed" in stderr
    assert len(list(out.rglob("*-restored.png"))) == 3
    assert len(_jobs(stack)) == 3  # refused files made no job

    # A batch of bad files only is refused as a whole; sent again one by one, each says why.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_text("not a photo")
    (bad / "b.png").write_bytes(png_bytes(64, 48)[:60])
    archive = tmp_path / "photos.zip"  # named as a file: refused by the client, which cannot follow what it unpacks to
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("inside.png", png_bytes())
    code, stderr = _run(stack, str(bad), str(archive), out=tmp_path / "bad-out")
    assert code == 1 and "0 of 3 restored" in stderr, stderr
    assert "photos.zip: a zip archive" in stderr
    assert "a.jpg: upload refused: 415" in stderr and "(not_an_image)" in stderr
    assert "b.png: upload refused: 422" in stderr and "(corrupt_image)" in stderr


def test_a_job_that_fails_on_the_service_is_named_with_its_reason(settings, storage, tmp_path):
    """No worker until every file is uploaded; then one job's record is damaged (the service ends
    it failed, corrupt_job) and the worker starts: the others are restored, that one is named."""
    from azure.data.tables import UpdateMode

    (tmp_path / "logs").mkdir()
    stack = LiveStack(settings, tmp_path / "logs")
    stack.start_api()
    folder, out = tmp_path / "scans", tmp_path / "restored"
    _photos(folder, 3)
    client = _client(stack, str(folder), out=out)
    try:
        files = _wait_for_uploads(client, out, 3)
        table = storage.tables.get_table_client(settings.jobs_table)
        table.update_entity({"PartitionKey": files["photo0.png"]["job_id"], "RowKey": "job", "status": "banana"},
                            mode=UpdateMode.MERGE)
        stack.start_worker()
        _, stderr = client.communicate(timeout=300)
    finally:
        if client.poll() is None:
            client.kill()
        stack.stop()
    assert client.returncode == 1, stderr
    failed = [line for line in stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "photo0.png: job failed:" in failed[0] and "(corrupt_job)" in failed[0], stderr
    assert "2 of 3 restored" in stderr


class FaultyProxy:
    """Between the client and the API: passes every request on, except that it loses the answer
    to the first POST of a batch (the service made the batch; the connection drops before the
    client hears of it) and cuts the first result download off halfway (headers and the full
    Content-Length sent, then half the bytes, then the connection closes)."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.faults: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                content = answer.read()
                connection.close()
                if self.command == "POST" and self.path == "/api/batches" and "lost answer" not in proxy.faults:
                    proxy.faults.append("lost answer")
                    self.close_connection = True
                    return  # nothing written: the client sees the connection close
                cut = self.path.endswith("/result") and answer.status == 200 and "cut download" not in proxy.faults
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                if cut:
                    proxy.faults.append("cut download")
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(content[: len(content) // 2] if cut else content)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_lost_answer_and_a_cut_download_are_retried_without_a_second_batch(stack, tmp_path):
    """The batch POST's answer is lost after the service made the batch: the client sends it again
    with the same Idempotency-Key and gets that batch back, so no photo is restored twice. The
    first result download ends halfway: it is fetched again, and the file kept is the whole result."""
    folder, out = tmp_path / "scans", tmp_path / "restored"
    _photos(folder, 2)
    proxy = FaultyProxy(stack.url)
    try:
        process = subprocess.Popen(
            [str(RUNTIME_PYTHON), "-m", "processing", "submit", "--url", proxy.url, "--out", str(out), "--no-progress",
             *FAST, str(folder)], cwd=ROOT, stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})
        _, stderr = process.communicate(timeout=300)
    finally:
        proxy.close()
    assert proxy.faults == ["lost answer", "cut download"]
    assert process.returncode == 0 and "2 of 2 restored" in stderr, stderr + stack.logs()
    jobs = _jobs(stack)
    assert len(jobs) == 2 and len({job.batch_id for job in jobs}) == 1, "the retried POST made a second batch"
    for entry in json.loads((out / STATE).read_text())["files"].values():
        served = httpx.get(f"{stack.url}/api/jobs/{entry['job_id']}/result", timeout=30)
        assert (out / entry["output"]).read_bytes() == served.content
    assert not list(out.rglob("*.part"))
