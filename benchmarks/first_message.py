"""A new Functions instance's first message: what it costs when the engine is loaded as the
host starts the worker process (function_app imported) against when the first message
creates it.

    .venv/bin/python -m benchmarks.first_message [--repeats 3]

Starts Azurite (free ports) and, per repeat and case, a fresh Python process that does what
the host's worker process does: imports function_app (with the settings of a stand-in store,
ENGINE_THREADS=2), then calls its functions as the host does (tests/integration/
test_function_app.py): the HTTP function for a submission (the 512² one-face astronaut,
upscale 1, box blend) and the queue trigger with the message it enqueued. Measured in that
process: import → app built; the submission; the first message's delivery → return (the job
ran to succeeded), then a second submission and message; its RSS.

Cases, interleaved in each repeat:
- ``at first message``: AzureWebJobs.restore_job.Disabled=true, so the import loads nothing
  and the first message creates the engine (how every instance behaved before);
- ``at start, message after the load``: the default; the message is delivered once the
  start-up load is done (a queue that was empty, or a host whose own start took longer);
- ``at start, message at once``: the default, the message delivered the moment the import
  returns (the worst case for it: the message waits for what is left of the load).

Writes benchmarks/results/first_message.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "first_message.json"
CASES = {"at first message": "first", "at start, message after the load": "after", "at start, message at once": "at-once"}


def rss_mb(kind: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(case: str) -> dict:
    """One instance's start and its first two messages, in this (fresh) process."""
    import asyncio

    started = time.perf_counter()
    import function_app
    from processing import wiring

    functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
    imported = time.perf_counter() - started
    rss_imported = rss_mb()

    import azure.functions as func
    import httpx
    from azure.functions.queue import QueueMessage

    from benchmarks.inputs import astronaut_bgr
    from tests.conftest import encoded

    photo = encoded(astronaut_bgr())
    loop = asyncio.new_event_loop()

    submitted: list[str] = []

    def submit() -> float:
        built = httpx.Request("POST", "http://localhost/api/jobs", files={"file": ("me.png", photo, "image/png")},
                              data={"upscale": "1", "blend_mask": "box"})
        request = func.HttpRequest("POST", str(built.url), headers=dict(built.headers), body=built.read())
        context = type("Context", (), {"invocation_id": "bench", "function_name": "http_app_func", "trace_context": None,
                                       "retry_context": None, "thread_local_storage": None, "function_directory": "."})()
        t = time.perf_counter()
        response = loop.run_until_complete(functions["http_app_func"](request, context))
        took = time.perf_counter() - t
        assert response.status_code == 202, response.get_body()
        submitted.append(json.loads(response.get_body())["id"])
        return took

    def deliver() -> float:
        queue = wiring.storage().jobs_queue
        message = next(iter(queue.receive_messages(max_messages=1, visibility_timeout=120)))
        t = time.perf_counter()
        functions["restore_job"](QueueMessage(id=message.id, body=message.content, dequeue_count=1))
        took = time.perf_counter() - t
        queue.delete_message(message)
        return took

    loading = wiring.preload_engine()
    submit_first = submit()
    load_wait = 0.0
    if case == "after":
        t = time.perf_counter()
        loading.join()
        load_wait = time.perf_counter() - t
    first = deliver()
    submit_second = submit()
    second = deliver()
    app = function_app.app
    if app.startup_task_done:  # the ASGI lifespan's shutdown, on its loop (else its __del__ waits on another)
        loop.run_until_complete(app.middleware.notify_shutdown())
        app.startup_task_done = False
    statuses = [wiring.job_service().jobs.get(job_id).status for job_id in submitted]
    assert statuses == ["succeeded", "succeeded"], statuses
    return {"import": imported, "rss_after_import_mb": rss_imported, "submit_first": submit_first,
            "load_wait_after_submit": load_wait, "first_message": first, "submit_second": submit_second,
            "second_message": second, "peak_rss_mb": rss_mb("VmHWM")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=list(CASES.values()), help=argparse.SUPPRESS)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        try:
            print("RESULT " + json.dumps(child(args.child)), flush=True)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        os._exit(0)  # measured and said: no teardown of the engine, the clients or the ASGI app to wait for

    from benchmarks.local import scratch_azurite, standin_store
    from processing.storage import Storage
    from tests.conftest import env_for, isolated_settings

    weights_dir = standin_store()
    scratch, azurite = scratch_azurite("first-message-")
    rows: dict[str, list[dict]] = {name: [] for name in CASES}
    try:
        settings = isolated_settings(azurite, weights_dir).with_changes(engine_threads=args.threads,
                                                                        rate_limit_per_minute=0.0)
        Storage(settings).ensure_resources()
        for repeat in range(args.repeats + 1):  # the first round is untimed: the store into the page cache
            for name, case in CASES.items():
                env = env_for(settings, **({"AzureWebJobs.restore_job.Disabled": "true"} if case == "first" else {}))
                run = subprocess.run([sys.executable, "-m", "benchmarks.first_message", "--child", case], cwd=ROOT,
                                     env=env, capture_output=True, text=True, timeout=600)
                line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
                if line is None:
                    raise RuntimeError(f"{name}: no result\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
                row = {**json.loads(line[7:]), "load_average": os.getloadavg()[0]}
                if repeat:
                    rows[name].append(row)
                print(f"[{repeat}] {name}: first message {row['first_message']:.2f} s, second "
                      f"{row['second_message']:.2f} s, import {row['import']:.2f} s", flush=True)
    finally:
        azurite.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    result = {name: {key: {"median": statistics.median(r[key] for r in runs), "min": min(r[key] for r in runs),
                           "max": max(r[key] for r in runs)} for key in runs[0]} for name, runs in rows.items()}
    print(json.dumps(result, indent=1))
    if not args.no_save:
        RESULTS.write_text(json.dumps({"repeats": args.repeats, "threads": args.threads, "cases": result,
                                       "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
