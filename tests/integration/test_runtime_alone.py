"""The container's situation, reproduced: the API, the worker and the Functions entry points
from a venv holding the run-time requirements only (.venv-runtime: no torch, torchvision,
basicsr, gfpgan, facexlib or onnx, as the image's final stage), reading a model store the
process cannot write, with no checkpoints anywhere. Every option runs (the first job, the
models and upscalers, framing, colour and texture, aligned faces, detection alone and then
the chosen faces, a colour-managed upload), and so do the Functions entry points as the host
calls them; nothing is exported or written to the store. One running stack serves every
case (the Functions call runs beside it, on a queue of its own), so it costs one start.

A build-time package imported on any of these paths fails the tests even where the import
is caught: each process sees a tripwire module under each such name (PYTHONPATH), which
records who imported it and then raises as the missing package would.

In the image the store belongs to root and the service runs as uid 10001. Here, when the
tests run as root (CI), the store is given to another user and the service runs as root
without the capabilities that bypass file permissions (setpriv), which is the same
situation; otherwise the store is simply read-only to the user running the tests."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import httpx
import pytest

from processing.storage import Storage
from tests.conftest import (
    ROOT,
    LiveStack,
    astronaut_bgr,
    encoded,
    env_for,
    isolated_settings,
    stop_processes,
    unique_name,
    wait_for_status,
)
from tests.integration.test_choose_faces import three_faces, which_face
from tests.integration.test_color_profiles import carries_only_srgb
from tests.integration.test_color_profiles import upload as tagged_upload

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



def as_the_host_delivers_script() -> str:
    """The Functions app in one run-time process, called as the host calls it: a submission
    through the HTTP function (the ASGI app), the queue message read as it is stored and
    handed to ``restore_job`` as the Python worker builds it (the host base64-decodes the
    body and sends it as a string datum with the Id and DequeueCount trigger metadata; see
    tests/integration/test_function_app.py's as_the_host_delivers), then the job read back
    through the HTTP function. Prints what it saw as one JSON line."""
    return (
        "import asyncio, base64, json, sys, types\n"
        "from azure.functions import HttpRequest, meta\n"
        "from azure.functions.queue import QueueMessageInConverter\n"
        "from azure.storage.queue import QueueClient\n"
        "from urllib3 import encode_multipart_formdata\n"
        "import function_app\n"
        "from processing.config import get_settings\n"
        "functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}\n"
        "loop = asyncio.new_event_loop()\n"
        "context = types.SimpleNamespace(invocation_id='runtime-alone', function_name='http_app_func',\n"
        "    function_directory='.', trace_context=None, retry_context=None, thread_local_storage=None)\n"
        "def http(method, path, body=b'', headers=None):\n"
        "    request = HttpRequest(method, 'http://localhost' + path, headers=headers or {}, body=body)\n"
        "    response = loop.run_until_complete(functions['http_app_func'](request, context))\n"
        "    return response.status_code, json.loads(response.get_body())\n"
        "def run():\n"
        "    photo = open(sys.argv[1], 'rb').read()\n"
        "    body, content_type = encode_multipart_formdata({'file': ('photo.png', photo, 'image/png'),\n"
        "                                                    **json.loads(sys.argv[2])})\n"
        "    status, job = http('POST', '/api/jobs', body, {'Content-Type': content_type})\n"
        "    if status != 202:\n"
        "        return {'status': status, 'job': job}\n"
        "    settings = get_settings()\n"
        "    wire = QueueClient.from_connection_string(settings.storage_connection_string, settings.jobs_queue)\n"
        "    (stored,) = wire.receive_messages(max_messages=1, visibility_timeout=120)\n"
        "    message = QueueMessageInConverter.decode(\n"
        "        meta.Datum(base64.b64decode(stored.content).decode('utf-8'), 'string'),\n"
        "        trigger_metadata={'Id': meta.Datum(stored.id, 'string'),\n"
        "                          'DequeueCount': meta.Datum(str(stored.dequeue_count), 'json')})\n"
        "    try:\n"
        "        functions['restore_job'](message)\n"
        "        wire.delete_message(stored)  # it returned: the host deletes the message\n"
        "        raised = None\n"
        "    except Exception as error:  # the host would log it and deliver the message again\n"
        "        raised = repr(error)\n"
        "    status, final = http('GET', '/api/jobs/' + job['id'])\n"
        "    return {'status': status, 'job': final, 'raised': raised}\n"
        "try:\n"
        "    outcome = run()\n"
        f"    outcome['loaded'] = [m for m in {BUILD_ONLY!r} if m in sys.modules]\n"
        "    outcome['functions'] = sorted(functions)\n"
        "    print(json.dumps(outcome))\n"
        "finally:  # the ASGI lifespan's shutdown, on its loop, as the host ends it (else exit waits on it)\n"
        "    if function_app.app.startup_task_done:\n"
        "        loop.run_until_complete(function_app.app.middleware.notify_shutdown())\n"
        "        function_app.app.startup_task_done = False\n"
    )


def tripwire(directory: Path) -> Path:
    """A module per build-time name that records its importer and raises as if absent."""
    marks = directory / "imported.txt"
    marks.write_text("")
    for name in BUILD_ONLY:
        (directory / f"{name}.py").write_text(
            "import os, traceback\n"
            f"with open({str(marks)!r}, 'a') as marks:\n"
            f"    marks.write(f'--- {name} imported in pid {{os.getpid()}}\\n' + ''.join(traceback.format_stack()))\n"
            f"raise ModuleNotFoundError({name!r} + ' is a build-time package: the run time must not import it',"
            f" name={name!r})\n")
    return marks


def grey(pixels):
    return cv2.cvtColor(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


PHOTO = encoded(astronaut_bgr())
# Each case: an upload and its options, all through the one API and worker.
CASES = {
    "the first job, the defaults": (PHOTO, {}),
    "model 1.3, box mask, strength, jpeg": (PHOTO, {"model": "1.3", "upscale": "3", "blend_mask": "box",
                                                     "strength": "0.5", "output_format": "jpeg"}),
    "framing and preprocessing, webp": (PHOTO, {"only_center_face": "true", "crop": "64,32,448,448", "rotate": "90",
                                                "max_side": "400", "denoise": "true", "auto_contrast": "true",
                                                "white_balance": "true", "output_format": "webp"}),
    "realesrgan background": (encoded(astronaut_bgr()[::2, ::2]), {"background": "realesrgan", "upscale": "2"}),
    "aligned": (encoded(astronaut_bgr()[40:340, 150:450]), {"aligned": "true"}),
    "color and texture": (encoded(grey(astronaut_bgr())), {"color": "keep", "texture": "0.4", "upscale": "1",
                                                           "blend_mask": "box"}),
    "detect_only": (encoded(three_faces()), {"detect_only": "true"}),
}


@dataclass
class Ran:
    finals: dict[str, dict]
    chosen: dict
    functions: dict
    icc: dict
    results: dict[str, bytes]
    logs: str
    imported: str
    store_before: dict
    store_after: dict
    store_mode: int


@pytest.fixture(scope="module")
def ran(azurite, standin_weights, read_only_store, tmp_path_factory) -> Ran:
    """Every case, once: the API and a worker from .venv-runtime (under the wrapper) on the
    read-only store, and beside them the Functions app in a run-time process of its own."""
    settings = isolated_settings(azurite, standin_weights, rate_limit_per_minute=0, rate_limit_reads_per_minute=0,
                                 rate_limit_table=unique_name("limits"), api_keys_table=unique_name("keys"))
    functions_settings = replace(settings, jobs_queue=unique_name("functions-"))
    for each in (settings, functions_settings):
        Storage(each).ensure_resources()
    work = tmp_path_factory.mktemp("runtime-alone")
    home, wires = work / "home", work / "tripwire"
    home.mkdir()
    wires.mkdir()
    imported = tripwire(wires)
    isolation = dict(MODELS_DIR=str(read_only_store), WEIGHTS_DIR="/nonexistent", HOME=str(home),
                     PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(wires))
    before = snapshot(read_only_store)
    stack = LiveStack(settings, work, python=str(RUNTIME_PYTHON), wrapper=WRAPPER, **isolation)
    photo = work / "functions.png"
    photo.write_bytes(PHOTO)
    icc_photo, icc_name = tagged_upload("Display P3")
    functions = None
    functions_log = open(work / "functions.log", "w")
    try:
        stack.start_api()
        stack.start_worker()
        # The Functions app, on its own queue so the polling worker leaves its message alone.
        functions = subprocess.Popen(
            [*WRAPPER, str(RUNTIME_PYTHON), "-c", as_the_host_delivers_script(), str(photo),
             json.dumps({"color": "keep", "texture": "0.3", "upscale": "1"})],
            cwd=ROOT, env=env_for(functions_settings, **isolation), stdout=subprocess.PIPE,
            stderr=functions_log, text=True, start_new_session=True)

        def submit(data: bytes, options: dict, name: str = "photo.png") -> str:
            response = httpx.post(f"{stack.url}/api/jobs", files={"file": (name, data)}, data=options, timeout=30)
            assert response.status_code == 202, response.text
            return response.json()["id"]

        ids = {case: submit(data, options) for case, (data, options) in CASES.items()}
        icc_id = submit(icc_photo, {"upscale": "1", "blend_mask": "box"}, icc_name)
        finals = {case: wait_for_status(stack.url, job_id, timeout=600) for case, job_id in ids.items()}
        detection = finals["detect_only"]
        keep = [i for i, face in enumerate(detection["faces"] or []) if which_face(face["box"]) != 1]
        response = httpx.post(f"{stack.url}/api/jobs/{detection['id']}/restore",
                              data={"faces": ",".join(map(str, keep)), "upscale": "1", "blend_mask": "box"}, timeout=30)
        chosen = wait_for_status(stack.url, response.json()["id"], timeout=600) if response.status_code == 202 \
            else {"status": response.status_code, "error": response.text}
        icc_final = wait_for_status(stack.url, icc_id, timeout=600)
        results = {case: httpx.get(f"{stack.url}{final['links']['result']}", timeout=30).content
                   for case, final in [*finals.items(), ("chosen", chosen), ("icc", icc_final)]
                   if final["status"] == "succeeded" and final["links"]["result"]}
        out, _ = functions.communicate(timeout=300)
        called = json.loads(out.strip().splitlines()[-1]) if functions.returncode == 0 else \
            {"exit": functions.returncode, "log": (work / "functions.log").read_text()[-4000:]}
    finally:
        stack.stop()
        stop_processes([functions])
        functions_log.close()
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(work.glob("*.log")))
    return Ran(finals, chosen, called, icc_final, results, logs, imported.read_text(),
               before, snapshot(read_only_store), stat.S_IMODE(read_only_store.stat().st_mode))


@pytest.mark.parametrize("case", list(CASES))
def test_every_option_runs_with_the_runtime_alone_on_a_read_only_store(ran, case):
    final = ran.finals[case]
    assert final["status"] == "succeeded", (final.get("error"), ran.logs[-6000:])


def test_each_option_did_its_work(ran):
    finals = ran.finals
    assert finals["realesrgan background"]["timings"]["background"] > 0
    assert finals["model 1.3, box mask, strength, jpeg"]["options"]["model"] == "1.3"
    assert ran.results["model 1.3, box mask, strength, jpeg"].startswith(b"\xff\xd8")
    assert ran.results["framing and preprocessing, webp"][8:12] == b"WEBP"
    assert ran.results["the first job, the defaults"].startswith(b"\x89PNG")
    colour = finals["color and texture"]
    assert colour["tone"] == "monochrome" and colour["timings"]["texture"] > 0 and colour["timings"]["tone"] > 0
    assert finals["detect_only"]["result"] is None and "restore" not in finals["detect_only"]["timings"]


def test_chosen_faces_restored_from_a_detection(ran):
    chosen = ran.chosen
    assert chosen["status"] == "succeeded" and chosen["face_count"] == 2, (chosen, ran.logs[-6000:])
    assert sorted(which_face(face["box"]) for face in chosen["faces"]) == [0, 2]


def test_a_colour_managed_upload(ran):
    assert ran.icc["status"] == "succeeded" and ran.icc["color_profile"] == "Display P3", ran.icc
    carries_only_srgb(ran.results["icc"])


def test_the_functions_entry_points_run_a_job_as_the_host_calls_them(ran):
    called = ran.functions
    assert called.get("functions") == ["deliver_webhook", "fail_poisoned_job", "http_app_func", "purge_expired_jobs", "restore_job"], called
    assert called["raised"] is None, called
    assert called["status"] == 200 and called["job"]["status"] == "succeeded", called["job"]
    assert called["job"]["face_count"] == 1 and called["job"]["timings"]["texture"] > 0
    assert called["loaded"] == []


def test_no_build_package_imported_nothing_exported_and_the_store_untouched(ran):
    assert ran.imported == "", ran.imported[-6000:]
    assert "models loaded in" in ran.logs
    assert "export" not in ran.logs.lower() and "Traceback" not in ran.logs, ran.logs[-6000:]
    assert ran.store_after == ran.store_before
    assert ran.store_mode == 0o555
