"""The container's situation, reproduced: the API, the worker and the Functions entry points
from a venv holding the run-time requirements only (.venv-runtime: no torch, torchvision,
basicsr, gfpgan, facexlib or onnx, as the image's final stage), reading a model store the
process cannot write, with no checkpoints anywhere. Every option runs, the first job
included, and nothing is exported or written to the store.

In the image the store belongs to root and the service runs as uid 10001. Here, when the
tests run as root (CI), the store is given to another user and the service runs as root
without the capabilities that bypass file permissions (setpriv), which is the same
situation; otherwise the store is simply read-only to the user running the tests."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, LiveStack, astronaut_bgr, encoded, env_for, wait_for_status

RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"
BUILD_ONLY = ("torch", "torchvision", "basicsr", "gfpgan", "facexlib", "onnx")
NOBODY = 65534
# Root without these cannot write, chmod or chown a file it does not own.
DROP_OVERRIDES = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown", "--")



@pytest.fixture(scope="module", autouse=True)
def runtime_venv():
    # Not a skip: the README's test command builds it, and a missing one must not pass unnoticed.
    if not RUNTIME_PYTHON.is_file():
        pytest.fail(f"{RUNTIME_PYTHON} is missing: ./scripts/setup.sh builds it (./scripts/test.sh runs setup first)")


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


AS_ROOT = os.geteuid() == 0
WRAPPER = DROP_OVERRIDES if AS_ROOT else ()


@pytest.fixture(scope="module")
def read_only_store(standin_models):
    """A copy of the stand-in model store as the image holds it: files 0444 in a 0555
    directory that (when the tests run as root) belongs to another user."""
    base = Path(tempfile.mkdtemp(prefix="runtime-alone-"))
    store = base / "models"
    shutil.copytree(standin_models, store)
    for path in [*store.iterdir(), store]:
        path.chmod(0o444 if path.is_file() else 0o555)
        if AS_ROOT:
            os.chown(path, NOBODY, NOBODY)
    yield store
    store.chmod(0o755)
    shutil.rmtree(base)


def test_the_service_really_cannot_write_the_store(read_only_store):
    """The premise of the tests below: a process started as they start the service can neither
    write a file of the store, nor make it writable, nor add one."""
    probe = (f"import os, pathlib; d = pathlib.Path({str(read_only_store)!r}); f = next(d.glob('*.onnx'))\n"
             "for attempt in (lambda: f.open('ab'), lambda: f.chmod(0o644), lambda: (d / 'new').write_bytes(b'')):\n"
             "    try:\n        attempt()\n    except PermissionError:\n        continue\n"
             "    raise SystemExit('wrote to the store')\n")
    run = subprocess.run([*WRAPPER, str(RUNTIME_PYTHON), "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr + run.stdout


def test_the_runtime_venv_holds_no_build_package():
    found = subprocess.run(
        [str(RUNTIME_PYTHON), "-c", "import importlib.util as u; print(*[m for m in %r if u.find_spec(m)])" % (BUILD_ONLY,)],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert found == []


def test_functions_entry_points_import_and_index_without_build_packages(settings, storage, read_only_store):
    script = (
        "import sys, function_app\n"
        "names = sorted(f.get_function_name() for f in function_app.app.get_functions())\n"
        f"loaded = [m for m in {BUILD_ONLY!r} if m in sys.modules]\n"
        "print(names, loaded)\n"
    )
    env = env_for(settings, MODELS_DIR=str(read_only_store), WEIGHTS_DIR="/nonexistent", HOME=tempfile.gettempdir())
    run = subprocess.run([*WRAPPER, str(RUNTIME_PYTHON), "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['fail_poisoned_job', 'http_app_func', 'purge_expired_jobs', 'restore_job'] []"


def test_every_option_runs_with_the_runtime_alone_on_a_read_only_store(settings, storage, read_only_store, tmp_path):
    before = snapshot(read_only_store)
    home = Path(tempfile.mkdtemp(prefix="runtime-home-"))
    stack = LiveStack(settings, tmp_path, python=str(RUNTIME_PYTHON), wrapper=WRAPPER,
                      MODELS_DIR=str(read_only_store), WEIGHTS_DIR="/nonexistent", HOME=str(home),
                      PYTHONDONTWRITEBYTECODE="1")
    photo = encoded(astronaut_bgr())
    small = encoded(astronaut_bgr()[::2, ::2])
    jobs = [
        (photo, {}),  # the first job: the defaults
        (photo, {"model": "1.3", "upscale": "3", "blend_mask": "box", "strength": "0.5", "output_format": "jpeg"}),
        (photo, {"only_center_face": "true", "crop": "64,32,448,448", "rotate": "90", "max_side": "400",
                 "denoise": "true", "auto_contrast": "true", "white_balance": "true", "output_format": "webp"}),
        (small, {"background": "realesrgan", "upscale": "2"}),
        (encoded(astronaut_bgr()[40:340, 150:450]), {"aligned": "true"}),
    ]
    try:
        stack.start_api()
        stack.start_worker()
        ids = []
        for data, options in jobs:
            response = httpx.post(f"{stack.url}/api/jobs", files={"file": ("photo.png", data)}, data=options, timeout=30)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        finals = [wait_for_status(stack.url, job_id, timeout=300) for job_id in ids]
        for final, (_, options) in zip(finals, jobs):
            assert final["status"] == "succeeded", (options, final.get("error"), stack.logs())
        assert finals[3]["timings"]["background"] > 0
        assert finals[1]["options"]["model"] == "1.3" and finals[1]["result"]["format"] == "jpeg"
        result = httpx.get(f"{stack.url}{finals[0]['links']['result']}", timeout=30)
        assert result.status_code == 200 and result.content.startswith(b"\x89PNG")
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)
    logs = stack.logs()
    assert "models loaded in" in logs
    assert "export" not in logs.lower() and "Traceback" not in logs
    assert snapshot(read_only_store) == before
    mode = stat.S_IMODE(read_only_store.stat().st_mode)
    assert mode == 0o555
