"""What the service adds around the engine, on an idle local stack.

    .venv/bin/python -m benchmarks.service_overhead [--jobs 25]

Starts Azurite (node_modules/.bin/azurite, free ports), the API (`python -m processing
serve`) and one worker (`python -m processing worker`) as real processes, exactly as the
test suite's LiveStack does, with stand-in weights. Then submits jobs one at a time (each
waits for the previous to finish, so none queues behind another) and, per job, measures
from just before the POST to the first poll that sees `succeeded` (polling every 20 ms).

    overhead = observed latency - engine time (the job's own engine stage timings)

It covers the upload, validation and re-encoding, the table row and queue message, the
worker's poll interval, blob reads/writes, decode/encode, the status updates and the
client's polling granularity. Job 1 is reported apart: its worker loads the models on
first use. The later jobs show that a warm worker pays no loading cost. Finally one
12-megapixel photo with 4 faces goes through the same worker and the worker process's
peak RSS (VmHWM) is read from /proc.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENGINE_STAGES = ("detect", "align", "restore", "upscale", "parse", "paste")
RESULTS = ROOT / "benchmarks" / "results" / "service_overhead.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_job(client, url: str, data: bytes, filename: str, content_type: str) -> tuple[float, dict]:
    started = time.perf_counter()
    response = client.post(f"{url}/api/jobs", files={"file": (filename, data, content_type)})
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        body = client.get(f"{url}/api/jobs/{job_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            latency = time.perf_counter() - started
            if body["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {body['status']}: {body.get('error')}")
            return latency, body
        time.sleep(0.02)


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--poll-seconds", type=float, default=0.2, help="the worker's WORKER_POLL_SECONDS")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    import cv2
    import httpx

    from benchmarks.inputs import astronaut_bgr
    from benchmarks.inputs import build as build_inputs
    from benchmarks.local import scratch_azurite, standin_store
    from processing.config import Settings
    from tests.conftest import LiveStack, unique_name

    weights_dir = standin_store()
    scratch, azurite = scratch_azurite("service-bench-")
    settings = Settings(
        storage_connection_string=azurite.connection_string,
        jobs_queue=unique_name("jobs-"), jobs_table=unique_name("jobs"),
        uploads_container=unique_name("uploads-"), results_container=unique_name("results-"),
        weights_dir=weights_dir, standin_weights=True, engine_threads=args.threads,
        worker_poll_seconds=args.poll_seconds,
    )
    (scratch / "logs").mkdir()
    stack = LiveStack(settings, scratch / "logs", RATE_LIMIT_PER_MINUTE="0", RATE_LIMIT_READS_PER_MINUTE="0")
    photo = cv2.imencode(".png", astronaut_bgr())[1].tobytes()  # 512x512, one face
    big_inputs = build_inputs(scratch / "inputs")
    big = next(c for c in big_inputs if c.name == "4faces-12mp")
    big_data = (scratch / "inputs" / big.file).read_bytes()
    rows = []
    try:
        stack.start_api()
        worker = stack.start_worker()
        with httpx.Client(timeout=60) as client:
            for index in range(args.jobs):
                latency, body = run_job(client, stack.url, photo, "astronaut.png", "image/png")
                timings = body["timings"]
                engine = sum(timings.get(stage, 0.0) for stage in ENGINE_STAGES)
                rows.append({"job": index + 1, "latency": latency, "engine": engine, "overhead": latency - engine,
                             "worker_total": timings.get("total", 0.0), "faces": body.get("face_count"),
                             "queue_wait": _seconds(body["created_at"], body["started_at"])})
                print(f"  job {index + 1:2}: {latency:5.2f} s observed, engine {engine:5.2f} s, "
                      f"overhead {latency - engine:5.3f} s", file=sys.stderr, flush=True)
            rss_small = vm_hwm_mb(worker.pid)
            latency, body = run_job(client, stack.url, big_data, big.file, "image/jpeg")
            rss_big = vm_hwm_mb(worker.pid)
            big_row = {"latency": latency, "faces": body.get("face_count"), "timings": body["timings"],
                       "worker_peak_rss_mb": round(rss_big)}
            print(f"  12 MP photo: {latency:5.2f} s, {body.get('face_count')} faces, worker VmHWM {rss_big:.0f} MB",
                  file=sys.stderr, flush=True)
    finally:
        stack.stop()
        azurite.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    warm = rows[1:]
    overheads = [r["overhead"] for r in warm]
    summary = {
        "jobs": len(rows), "worker_poll_seconds": args.poll_seconds, "client_poll_seconds": 0.02,
        "first_job": {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[0].items()},
        "warm_jobs": {
            "overhead_p50": round(statistics.median(overheads), 3),
            "overhead_p95": round(percentile(overheads, 95), 3),
            "overhead_max": round(max(overheads), 3),
            "engine_p50": round(statistics.median(r["engine"] for r in warm), 3),
            "latency_p50": round(statistics.median(r["latency"] for r in warm), 3),
            "queue_wait_p50": round(statistics.median(r["queue_wait"] for r in warm), 3),
            "worker_non_engine_p50": round(statistics.median(r["worker_total"] - r["engine"] for r in warm), 3),
        },
        "worker_peak_rss_mb_after_small_jobs": round(rss_small),
        "photo_12mp_4faces": big_row,
    }
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({**summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


def _seconds(start: str, end: str | None) -> float:
    from datetime import datetime

    if not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


if __name__ == "__main__":
    sys.exit(main())
