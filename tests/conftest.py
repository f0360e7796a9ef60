"""Shared fixtures: a real Azurite on free ports, stand-in weights, one engine per session."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processing.checkpoints import weights  # noqa: E402
from processing.config import Settings, azurite_connection_string  # noqa: E402

STANDIN_DIR = ROOT / ".cache" / "standin-weights"
OFFICIAL_DIR = ROOT / "weights" / "official"
ARTIFACTS = ROOT / "test-artifacts"


class NearestApiVersion(Warning):
    """tests/infra/test_infra_api_models.py: a resource checked against another API version than
    the template's (the package lacks it). Here, not there, because pytest-xdist's controller
    imports a warning's class to show it, and tests/infra's modules are not importable from it."""


@contextmanager
def cache_lock(name: str):
    """One test process at a time builds what ``.cache`` shares: ./scripts/test.sh runs the
    suite in several processes (pytest-xdist), and each one's session fixtures would otherwise
    build and export the same stand-in weights at once. The second waits, then finds them made."""
    STANDIN_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(STANDIN_DIR.parent / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Until something listens on ``port``; fails at once if ``process`` (the one that should
    listen) has exited, with the end of its ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
            raise RuntimeError(f"the process meant to listen on {port} exited ({process.returncode}):\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def stop_processes(processes, grace: float = 15.0) -> None:
    """SIGTERM to each process's own group (each was started in a new session), then SIGKILL to
    any group still there after ``grace`` seconds: nothing a test started outlives it."""
    running = [p for p in processes if p is not None]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for process in running:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        running = [p for p in running if p.poll() is None]
        if not running:
            return


@dataclass
class Azurite:
    """A real Azurite process with disk persistence, restartable on the same ports."""

    location: Path
    ports: tuple[int, int, int]
    process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string("127.0.0.1", *self.ports)

    def start(self) -> None:
        blob, queue, table = self.ports
        binary = ROOT / "node_modules" / ".bin" / "azurite"
        self.process = subprocess.Popen(
            [str(binary), "--silent", "--skipApiVersionCheck", "--loose", "--location", str(self.location),
             "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
             "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        for port in self.ports:
            wait_for_port(port, process=self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # On SIGINT (Ctrl-C) Azurite stops answering and saves its databases at once,
            # but then lingers while clients hold keep-alive connections (the API and
            # workers under test do): give it 2 s, then end it.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                pass
        stop_processes([self.process], grace=0)  # and anything it started, in its group


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    server = Azurite(tmp_path_factory.mktemp("azurite"), (free_port(), free_port(), free_port()))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def standin_weights() -> Path:
    """Stand-in checkpoints (real architectures, seeded random parameters) and their exported
    model store in ``<dir>/onnx`` (the service's default MODELS_DIR), built once and cached."""
    from processing.checkpoints.export import export_store
    from processing.checkpoints.standin import build_standin

    with cache_lock("standin"):
        complete = weights.is_standin_dir(STANDIN_DIR) and weights.BACKGROUND_FILE in weights.expected_files(STANDIN_DIR)
        if not (complete and all(s.ok for s in weights.check(STANDIN_DIR))):
            shutil.rmtree(STANDIN_DIR, ignore_errors=True)
            build_standin(STANDIN_DIR, seed=0)
        export_store(STANDIN_DIR, STANDIN_DIR / "onnx", log=lambda line: None)
    return STANDIN_DIR


@pytest.fixture(scope="session")
def standin_models(standin_weights) -> Path:
    """The model store the service runs: weights stored in fp16."""
    return standin_weights / "onnx"


@pytest.fixture(scope="session")
def standin_models_fp32(standin_weights) -> Path:
    """The same networks exported with fp32 weights (``export --fp32-weights``), built once:
    what the faithfulness tests compare with upstream's modules, which hold fp32 weights."""
    from processing.checkpoints.export import export_store

    with cache_lock("standin"):
        export_store(standin_weights, standin_weights / "onnx-fp32", log=lambda line: None, weights="fp32")
    return standin_weights / "onnx-fp32"


# The files that keep a test process busy a minute or more (measured in a two-process run,
# longest first). ./scripts/test.sh hands files out in collection order, so these go first:
# otherwise one of them drawn last runs alone while the other process has finished.
LONG_FILES = (
    "engine/test_old_photos.py", "hardening/test_faults.py", "integration/test_webhooks.py",
    "integration/test_runtime_alone.py", "engine/test_engine.py", "engine/test_pasteback.py",
    "integration/test_pipeline.py", "engine/test_precision.py", "browser/test_page.py", "hardening/test_soak.py",
    "contract/test_schemathesis.py", "integration/test_idempotency.py", "integration/test_run_local.py",
    "hardening/test_load.py",
)


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    tests = Path(__file__).parent
    items.sort(key=lambda item: rank.get(item.path.relative_to(tests).as_posix(), len(LONG_FILES)))


_official_requested = False


def pytest_configure(config) -> None:
    global _official_requested
    markexpr = config.getoption("markexpr") or ""
    _official_requested = "official" in markexpr and "not official" not in markexpr


def skip_unless_official_weights() -> None:
    """At the top of a module of tests marked ``official``: they run only when asked for
    (``./scripts/test.sh -m official``); otherwise the module is skipped, with one line saying
    why. Asked for, they need weights/official to verify (every SHA-256): when it does not,
    the module fails to collect, naming what is wrong, since a suite that was asked for and
    skipped would read as a pass."""
    if not _official_requested:
        pytest.skip("the official-weights suite is opt-in: ./scripts/test.sh -m official", allow_module_level=True)
    where = OFFICIAL_DIR.relative_to(ROOT)
    verify = subprocess.run([sys.executable, "-m", "processing.checkpoints", "verify", "--dir", str(OFFICIAL_DIR)],
                            cwd=ROOT, capture_output=True, text=True)
    if verify.returncode != 0 or weights.is_standin_dir(OFFICIAL_DIR):
        found = "stand-in checkpoints" if verify.returncode == 0 else "; ".join(
            line.removeprefix("BROKEN").strip() for line in verify.stdout.splitlines() if line.startswith("BROKEN"))
        pytest.fail(f"-m official was asked for, but {where} does not hold verified official checkpoints "
                    f"({found or 'verify failed'}); get them with "
                    f"`.venv/bin/python -m processing.checkpoints fetch --dir {where}`", pytrace=False)


@pytest.fixture(scope="session")
def official_models() -> Path:
    """The official checkpoints' model store, exported once into weights/official/onnx
    (where run-local.sh puts it). Only for modules guarded by skip_unless_official_weights."""
    from processing.checkpoints.export import export_store

    with cache_lock("official"):
        export_store(OFFICIAL_DIR, OFFICIAL_DIR / "onnx", versions=("1.4",), log=lambda line: None)
    return OFFICIAL_DIR / "onnx"


@pytest.fixture(scope="session")
def engine(standin_models_fp32):
    from processing.engine.pipeline import Engine

    # fp32 weights computed in f32, on any CPU: the faithfulness tests compare it with upstream's
    # modules (the fp16-stored store's difference is measured apart, tests/engine/test_precision.py).
    return Engine.open(standin_models_fp32, threads=2, allow_standin=True, models=("1.4", "1.3"), precision="f32")


def unique_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def isolated_settings(azurite: Azurite, standin_weights: Path, **overrides) -> Settings:
    """Settings with their own queue, table and containers on the test Azurite, so tests never
    see each other's jobs; stand-in weights, two threads, short leases and fast polling."""
    return Settings(
        storage_connection_string=azurite.connection_string,
        jobs_queue=unique_name("jobs-"),
        webhooks_queue=unique_name("hooks-"),
        jobs_table=unique_name("jobs"),
        uploads_container=unique_name("uploads-"),
        results_container=unique_name("results-"),
        weights_dir=standin_weights,
        standin_weights=True,
        engine_threads=2,
        lease_seconds=30,
        worker_poll_seconds=0.2,
        **overrides,
    )


@pytest.fixture
def settings(azurite, standin_weights, tmp_path) -> Settings:
    # Rate limits off unless a test turns them on (tests/hardening does); own tables.
    return isolated_settings(
        azurite,
        standin_weights,
        rate_limit_per_minute=0,
        rate_limit_reads_per_minute=0,
        rate_limit_table=unique_name("limits"),
        api_keys_table=unique_name("keys"),
    )


@pytest.fixture
def storage(settings):
    from processing.storage import Storage

    store = Storage(settings)
    store.ensure_resources()
    return store


@pytest.fixture
def handler(settings, storage, engine):
    from processing.worker import JobHandler

    return JobHandler(settings, storage, lambda: engine, worker_id="test-worker")


@pytest.fixture
def client(settings, storage):
    from fastapi.testclient import TestClient

    from processing.api.app import create_app

    with TestClient(create_app(settings, storage)) as test_client:
        yield test_client


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def encoded(pixels: np.ndarray, ext: str = ".png", params: list[int] | None = None) -> bytes:
    ok, buffer = cv2.imencode(ext, pixels, params or [])
    assert ok
    return buffer.tobytes()


@pytest.fixture(scope="session")
def astronaut_png() -> bytes:
    return encoded(astronaut_bgr())


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment variables that make a subprocess see ``settings``."""
    env = dict(os.environ)
    env.update(
        AzureWebJobsStorage=settings.storage_connection_string,
        JOBS_QUEUE=settings.jobs_queue,
        WEBHOOKS_QUEUE=settings.webhooks_queue,
        JOBS_TABLE=settings.jobs_table,
        UPLOADS_CONTAINER=settings.uploads_container,
        RESULTS_CONTAINER=settings.results_container,
        WEIGHTS_DIR=str(settings.weights_dir),
        STANDIN_WEIGHTS="true" if settings.standin_weights else "false",
        ENGINE_THREADS=str(settings.engine_threads),
        JOB_LEASE_SECONDS=str(settings.lease_seconds),
        WORKER_POLL_SECONDS=str(settings.worker_poll_seconds),
        RATE_LIMIT_PER_MINUTE=str(settings.rate_limit_per_minute),
        RATE_LIMIT_BURST=str(settings.rate_limit_burst),
        RATE_LIMIT_READS_PER_MINUTE=str(settings.rate_limit_reads_per_minute),
        RATE_LIMIT_READS_BURST=str(settings.rate_limit_reads_burst),
        RATE_LIMIT_TABLE=settings.rate_limit_table,
        API_KEYS_TABLE=settings.api_keys_table,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class LiveStack:
    """The service as the run command starts it: `python -m processing serve` and
    `python -m processing worker` as real processes against the test Azurite."""

    def __init__(self, settings: Settings, log_dir: Path, *, python: str = sys.executable, wrapper: tuple[str, ...] = (),
                 **extra_env: str):
        self.settings = settings
        self.port = free_port()
        self.env = env_for(settings, **extra_env)
        self.log_dir = log_dir
        self.python = python  # another venv's interpreter: tests/integration/test_runtime_alone.py
        self.wrapper = wrapper  # a command the processes run under (e.g. setpriv dropping capabilities)
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            return subprocess.Popen([*self.wrapper, self.python, "-m", "processing", *args], cwd=ROOT, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_api(self) -> None:
        self.api = self._spawn("api", "serve", "--port", str(self.port))
        wait_for_port(self.port, timeout=60, process=self.api, log=self.log_dir / "api.log")

    def start_worker(self) -> subprocess.Popen:
        worker = self._spawn(f"worker{len(self.workers)}", "worker")
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        stop_processes([self.api, *self.workers])


@pytest.fixture
def live_stack(settings, storage, tmp_path):
    """API + one worker process. Tests may start more workers or kill them."""
    stack = LiveStack(settings, tmp_path)
    stack.start_api()
    stack.start_worker()
    yield stack
    stack.stop()


def wait_for_status(base_url: str, job_id: str, statuses=("succeeded", "failed"), timeout: float = 180.0) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{base_url}/api/jobs/{job_id}", timeout=10).json()
        if body["status"] in statuses:
            return body
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} still {body['status']} after {timeout}s")
