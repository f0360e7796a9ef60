"""The processes the README's run command starts, end to end over real HTTP."""

import json
from pathlib import Path

import httpx

from tests.conftest import wait_for_status


def test_curl_like_submission_succeeds(live_stack, astronaut_png):
    response = httpx.post(f"{live_stack.url}/api/jobs", files={"file": ("me.png", astronaut_png)},
                          data={"blend_mask": "box"}, timeout=30)
    assert response.status_code == 202, response.text
    final = wait_for_status(live_stack.url, response.json()["id"])
    assert final["status"] == "succeeded", live_stack.logs()
    result = httpx.get(f"{live_stack.url}{final['links']['result']}", timeout=30)
    assert result.status_code == 200 and result.content.startswith(b"\x89PNG")
    page = httpx.get(f"{live_stack.url}/", timeout=10)
    assert page.status_code == 200 and "<title>Face restoration</title>" in page.text  # its behaviour: tests/browser


def test_worker_refuses_to_start_without_models(settings, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT, env_for

    empty = tmp_path / "no-weights"
    empty.mkdir()
    run = subprocess.run([sys.executable, "-m", "processing", "worker", "--once"], cwd=ROOT,
                         env=env_for(settings, WEIGHTS_DIR=str(empty)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "models.json is missing" in run.stderr and "python -m processing.checkpoints export" in run.stderr


def test_worker_refuses_a_damaged_model(settings, standin_models, tmp_path):
    """A model file cut short (a broken copy, a full disk) stops the worker at start, naming
    the file, instead of failing every job."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT, env_for

    damaged = tmp_path / "models"
    shutil.copytree(standin_models, damaged, copy_function=lambda src, dst: Path(dst).symlink_to(src))
    parser = json.loads((damaged / "models.json").read_text())["networks"]["parser"]["file"]
    (damaged / parser).unlink()
    (damaged / parser).write_bytes((standin_models / parser).read_bytes()[:1000])
    run = subprocess.run([sys.executable, "-m", "processing", "worker", "--once"], cwd=ROOT,
                         env=env_for(settings, MODELS_DIR=str(damaged)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert f"parser: {parser} is 1000 bytes" in run.stderr


def test_worker_refuses_standin_weights_unless_asked(settings):
    import subprocess
    import sys

    from tests.conftest import ROOT, env_for

    run = subprocess.run([sys.executable, "-m", "processing", "worker", "--once"], cwd=ROOT,
                         env=env_for(settings, STANDIN_WEIGHTS="false"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "stand-in" in run.stderr
