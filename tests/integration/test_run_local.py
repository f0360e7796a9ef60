"""The README's run command as a user runs it: ./scripts/run-local.sh starts Azurite, the worker
and the API; stopped with SIGTERM (or Ctrl-C), or when one of its processes dies, it stops
everything it started, and no API is left answering 503s against a dead Azurite."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from processing.config import azurite_connection_string
from tests.conftest import ROOT, free_port, wait_for_port

pytestmark = pytest.mark.slow


def session_processes(session: int) -> dict[int, str]:
    """pid -> command line of every live process in the session."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == session and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
    return found


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting until {what}")


@pytest.fixture
def run_local(standin_weights, tmp_path):
    """The script in a session of its own, on free ports, with the test's stand-in weights."""
    ports = {"PORT": free_port(), "AZURITE_BLOB_PORT": free_port(), "AZURITE_QUEUE_PORT": free_port(),
             "AZURITE_TABLE_PORT": free_port()}
    env = dict(os.environ, **{name: str(port) for name, port in ports.items()},
               AzureWebJobsStorage=azurite_connection_string("127.0.0.1", ports["AZURITE_BLOB_PORT"],
                                                             ports["AZURITE_QUEUE_PORT"], ports["AZURITE_TABLE_PORT"]),
               AZURITE_DIR=str(tmp_path / "azurite"), WEIGHTS_DIR=str(standin_weights), STANDIN_WEIGHTS="true",
               ENGINE_THREADS="2")
    log = open(tmp_path / "run-local.log", "wb")
    script = subprocess.Popen(["./scripts/run-local.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for_port(ports["PORT"], timeout=180, process=script, log=tmp_path / "run-local.log")
        yield script, ports, tmp_path / "run-local.log"
    finally:
        try:
            os.killpg(script.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        script.wait(10)
        log.close()


def processes_named(session: int, words: str) -> list[int]:
    return [pid for pid, command in session_processes(session).items() if words in command]


def test_sigterm_stops_everything_it_started(run_local):
    script, ports, log = run_local
    url = f"http://127.0.0.1:{ports['PORT']}"
    wait_until(lambda: httpx.get(f"{url}/api/health", timeout=5).status_code == 200, 60, "the service is healthy")
    started = session_processes(script.pid)
    assert any("processing serve" in c for c in started.values()) and any("processing worker" in c for c in started.values())
    assert any("azurite" in c for c in started.values())

    script.send_signal(signal.SIGTERM)  # to the script alone, as a service manager or `kill` would
    assert script.wait(30) == 143, log.read_text()[-2000:]
    wait_until(lambda: not session_processes(script.pid), 20, "every process it started has ended")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/api/health", timeout=2)


def test_a_dying_worker_stops_the_rest(run_local):
    script, ports, log = run_local
    wait_until(lambda: processes_named(script.pid, "processing worker"), 30, "the worker runs")
    (worker,) = processes_named(script.pid, "processing worker")
    os.kill(worker, signal.SIGKILL)
    script.wait(30)
    assert "run: worker stopped" in log.read_text(), log.read_text()[-2000:]
    wait_until(lambda: not session_processes(script.pid), 20, "every process it started has ended")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{ports['PORT']}/api/health", timeout=2)
