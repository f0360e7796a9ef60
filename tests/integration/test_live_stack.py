"""The processes the README's run command starts, end to end over real HTTP."""

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
    assert page.status_code in (200, 404)  # the page is checked by the browser tests


def test_worker_refuses_to_start_without_weights(settings, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT, env_for

    empty = tmp_path / "no-weights"
    empty.mkdir()
    run = subprocess.run([sys.executable, "-m", "processing", "worker", "--once"], cwd=ROOT,
                         env=env_for(settings, WEIGHTS_DIR=str(empty)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "weights" in run.stderr and "missing" in run.stderr and "weights fetch" in run.stderr


def test_worker_refuses_standin_weights_unless_asked(settings):
    import subprocess
    import sys

    from tests.conftest import ROOT, env_for

    run = subprocess.run([sys.executable, "-m", "processing", "worker", "--once"], cwd=ROOT,
                         env=env_for(settings, STANDIN_WEIGHTS="false"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "stand-in" in run.stderr
