"""Cold start: what a new worker instance pays before it can take a job, now and before the split.

    .venv/bin/python -m benchmarks.cold_start [--repeats 3] [--skip-sizes] [--no-save]

"Now" is this checkout; "before" is commit 065d324 (main before the run time was split
from the build: torch, torchvision and the upstream GFPGAN packages in requirements.txt,
ONNX exports made by the worker itself when its cache was missing or not writable).
Everything is measured on this machine in one run, the sides interleaved in every repeat:

1. Sizes (skipped with --skip-sizes). A fresh temporary venv of requirements.txt against
   a fresh venv of 065d324's requirements.txt, both with the Dockerfile's pip, setuptools
   and wheel pins, measured with ``du -sm`` and then deleted. The old set pinned
   torch==2.14.1 / torchvision==0.29.1, which its image installed as CPU wheels from the
   PyTorch CPU index; here the only CPU build is torch 2.13.0+cpu (``--old-torch``), so
   the old venv gets that and torchvision 0.28.0 (the release paired with torch 2.13), then
   basicsr 1.4.2 (an sdist) with --no-build-isolation (its build would otherwise pull a
   second torch), then the rest of the old requirements with their dependencies, as the
   old image did. Also the model store the image ships (models.json's .onnx files) against
   what the old image carried (the four checkpoints plus their v1 exports).
2. Now: ``python -m processing worker`` from .venv-runtime (requirements.txt only, as the
   image's final stage), ENGINE_BACKEND=openvino and onnxruntime, on a copy of the stand-in
   model store it cannot write (files 0444, directories 0555, owned by nobody; as root the
   processes run under setpriv without the capabilities that bypass file permissions,
   as tests/integration/test_runtime_alone.py does), against an Azurite started here.
   start -> ready: from spawning the process to its "polling queue" line; the worker's own
   "models loaded in" figure; the import time of the worker's modules and of the runtime
   library, measured in a separate process. Then, as soon as the worker is ready, two
   512x512 one-face jobs through the API (the first pays whatever is left of the start),
   each timed from just before the POST to the first poll that sees "succeeded".
3. Before: 065d324 checked out in a temporary git worktree, its worker run with .venv
   (it needs torch), stand-in checkpoints and their v1 exports, its own settings
   (WEIGHTS_DIR, TORCH_THREADS, STANDIN_WEIGHTS; ONNX_CACHE_DIR unset = WEIGHTS_DIR/onnx):
   (a) the directory writable, the exports used as they are; (b) the same files in a
   directory it cannot write (the container's situation), where it exported again into a
   fresh $TMPDIR at every start.
4. OpenVINO's compiled-model cache, which the engine has no setting for: Engine.open on the
   read-only store from .venv-runtime with the shared openvino.Core given
   ``CACHE_DIR`` (empty: compile and write the cache; filled: load from it) or not.

Each measured start is a fresh process. The code is byte-compiled first (compileall, as
both images do; the venvs' packages were compiled by pip) and one untimed start per side
reads the model files into the page cache, so every timed start reads the models from
memory, as a worker does when its image is already on the node. Results: medians, min-max over the
repeats, all raw rows in benchmarks/results/cold_start.json, the table in cold_start.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OLD = "065d324"
RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"  # with --skip-sizes; otherwise a fresh venv
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
BUILD_PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = ROOT / "benchmarks" / "results" / "cold_start.json"
BACKENDS = ("openvino", "onnxruntime")
# The Dockerfile's (now and at 065d324) pins of the installers themselves.
INSTALLERS = ("pip==26.3", "setuptools==84.2.1", "wheel==0.48.0")
OLD_CHECKPOINTS = ("GFPGANv1.4.pth", "GFPGANv1.3.pth", "detection_Resnet50_Final.pth", "parsing_parsenet.pth")
# As root, the service runs under setpriv without the capabilities that bypass file permissions,
# on files owned by nobody: it cannot write them, as the image's uid 10001 cannot.
from tests.integration.test_runtime_alone import AS_ROOT, NOBODY, WRAPPER  # noqa: E402
READY = "polling queue"
LOADED = re.compile(r"models loaded in ([0-9.]+)s")

# What `python -m processing worker` imports before it polls (cmd_worker, wiring, the engine)
# and the runtime library, timed apart from the interpreter's own start.
IMPORT_PROBE = """
import json, sys, time
started = time.perf_counter()
import processing.__main__, processing.wiring, processing.worker, processing.engine.pipeline
service = time.perf_counter()
__import__(sys.argv[1])
done = time.perf_counter()
print(json.dumps({"service_modules": service - started, "runtime_library": done - service}))
"""

# The engine's own model load (Engine.open, as the worker's), with or without OpenVINO's cache.
OV_CACHE_PROBE = """
import json, os, resource, sys, time
store, cache, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
started = time.perf_counter()
from processing.engine import runtimes
from processing.engine.pipeline import Engine
core = runtimes._openvino()  # the engine's shared Core (importing openvino), on every side
if cache:
    core.set_property({"CACHE_DIR": cache})
imported = time.perf_counter()
Engine.open(store, runtime="openvino", threads=threads, allow_standin=True)
done = time.perf_counter()
print(json.dumps({"import": imported - started, "load": done - imported,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def du_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "runs": [round(v, 3) for v in values]}


# -- sizes ----------------------------------------------------------------------------------


def _pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-qq", *args], check=True)


def _largest_packages(venv: Path, count: int = 8) -> dict[str, int]:
    site = next((venv / "lib").glob("python*/site-packages"))
    sizes = {entry.name: du_mb(entry) for entry in site.iterdir() if not entry.name.endswith((".dist-info", ".pth"))}
    return dict(sorted(sizes.items(), key=lambda item: -item[1])[:count])


def _measured_venv(venv: Path, started: float) -> dict:
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, check=True).stdout
    packages = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    cuda = sorted(name for name in packages if name.startswith("nvidia-"))
    if cuda:
        raise RuntimeError(f"CUDA libraries in {venv}: {cuda}")
    return {"mb": du_mb(venv), "packages": len(packages), "install_seconds": round(time.perf_counter() - started),
            "largest_mb": _largest_packages(venv), "versions": {k: packages[k] for k in ("torch", "torchvision") if k in packages}}


def fresh_runtime_venv(scratch: Path) -> tuple[Path, dict]:
    """A fresh venv of requirements.txt, installed as the image's base stage does; measured,
    and kept for the timed runs (so they run exactly what was measured)."""
    venv = scratch / "venv-now"
    started = time.perf_counter()
    log("sizes: installing requirements.txt into a fresh venv")
    subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True)
    _pip(venv, "--upgrade", *INSTALLERS)
    _pip(venv, "-r", str(ROOT / "requirements.txt"))
    return venv, _measured_venv(venv, started)


def old_venv_size(scratch: Path, old_torch: str, old_torchvision: str) -> dict:
    """A fresh venv of 065d324's requirements.txt, installed as its image did; measured, deleted."""
    venv = scratch / "venv-old"
    old_requirements = scratch / "requirements-old.txt"
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD}:requirements.txt"], capture_output=True, text=True,
                          check=True).stdout
    pinned = {"torch": old_torch, "torchvision": old_torchvision}
    lines = [pinned.get(line.split("==")[0], line) if "==" in line else line for line in text.splitlines()]
    old_requirements.write_text("\n".join(lines) + "\n")
    log(f"sizes: installing {OLD}'s requirements.txt into a fresh venv ({old_torch}, {old_torchvision})")
    started = time.perf_counter()
    subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True)
    _pip(venv, "--upgrade", *INSTALLERS)
    _pip(venv, old_torch, old_torchvision)
    basicsr = next(line for line in lines if line.startswith("basicsr=="))
    _pip(venv, "--no-build-isolation", basicsr)
    _pip(venv, "-r", str(old_requirements))
    measured = {**_measured_venv(venv, started), "requirements": lines}
    shutil.rmtree(venv)
    return measured


def store_sizes(standin: Path) -> dict:
    """The model store the image ships now, against the old image's /opt/weights: the four
    checkpoints (its build fetched without --all) and their v1 exports."""
    from processing.checkpoints.weights import OFFICIAL_WEIGHTS
    from processing.engine.store import ModelStore

    store = ModelStore(standin / "onnx")
    onnx = {n.role: n.size for n in store.networks.values()}
    old_exports = {p.name: p.stat().st_size for p in (standin / "onnx").glob("*.v1.onnx")}
    old_checkpoints = {name: (standin / name).stat().st_size for name in OLD_CHECKPOINTS}
    official = {w.name: w.size for w in OFFICIAL_WEIGHTS}
    mb = 1 << 20
    return {
        "store_now_mb": round(sum(onnx.values()) / mb), "store_now_files": onnx,
        "store_now_without_background_mb": round((sum(onnx.values()) - onnx.get("background", 0)) / mb),
        "old_weights_mb": round((sum(old_checkpoints.values()) + sum(old_exports.values())) / mb),
        "old_checkpoints_mb": round(sum(old_checkpoints.values()) / mb), "old_exports_mb": round(sum(old_exports.values()) / mb),
        "official_checkpoints_mb": round(sum(official[name] for name in OLD_CHECKPOINTS) / mb),
        "official_background_checkpoint_mb": round(sum(s for n, s in official.items() if n not in OLD_CHECKPOINTS) / mb),
    }


# -- copies the service cannot write ----------------------------------------------------------


def read_only(directory: Path) -> Path:
    """As the image holds it: files 0444, directories 0555, owned by nobody when we are root."""
    for path in sorted(directory.rglob("*"), reverse=True) + [directory]:
        path.chmod(0o444 if path.is_file() else 0o555)
        if AS_ROOT:
            os.chown(path, NOBODY, NOBODY)
    return directory


def writable_again(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


def copy_store(standin: Path, target: Path) -> Path:
    """The files the image's /opt/models holds: models.json and the .onnx files it names."""
    from processing.engine.store import MANIFEST, ModelStore

    target.mkdir(parents=True)
    source = standin / "onnx"
    for name in [MANIFEST, *(n.file for n in ModelStore(source).networks.values())]:
        shutil.copy2(source / name, target / name)
    return target


def copy_old_weights(standin: Path, target: Path) -> Path:
    """The old image's /opt/weights: the checkpoints, their manifest and verified stamps, and
    the v1 exports in onnx/ (mtimes kept, so the stamps match and nothing is re-hashed)."""
    (target / "onnx").mkdir(parents=True)
    for name in [*OLD_CHECKPOINTS, "STANDIN-WEIGHTS.json", ".verified.json"]:
        shutil.copy2(standin / name, target / name)
    for path in (standin / "onnx").glob("*.v1.onnx"):
        shutil.copy2(path, target / "onnx" / path.name)
    return target


# -- starting a worker --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of the children it has waited for (an export),
    which contention from other work disturbs much less than wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def wait_for_ready(process: subprocess.Popen, log_file: Path, started: float, timeout: float = 600.0) -> dict:
    """Seconds from ``started`` to the worker's "polling queue" line, the CPU time it took, and
    its "models loaded" figure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_file.read_text(errors="replace") if log_file.is_file() else ""
        if READY in text:
            ready = time.perf_counter() - started
            cpu = cpu_seconds(process.pid)
            loaded = LOADED.search(text)
            return {"ready": ready, "ready_cpu": cpu, "models_loaded": float(loaded.group(1)) if loaded else None,
                    "log": text[-3000:]}
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited ({process.returncode}) before it was ready:\n{text[-3000:]}")
        time.sleep(0.01)
    raise TimeoutError(f"no {READY!r} line after {timeout} s:\n{text[-3000:]}")


def job_row(latency: float, body: dict) -> dict:
    from benchmarks.service_overhead import ENGINE_STAGES, _seconds

    timings = body["timings"]
    return {"latency": latency, "engine": sum(timings.get(stage, 0.0) for stage in ENGINE_STAGES),
            "worker_total": timings.get("total"), "queue_wait": _seconds(body["created_at"], body["started_at"]),
            "faces": body.get("face_count"), "timings": timings}


class Bench:
    def __init__(self, scratch: Path, azurite, threads: int, python: Path):
        self.scratch, self.azurite, self.threads = scratch, azurite, threads
        self.python = str(python)  # the run-time venv's interpreter
        self.home = scratch / "home"
        self.home.mkdir()
        self.runs = 0

    def settings(self):
        from tests.conftest import STANDIN_DIR, isolated_settings, unique_name

        return isolated_settings(self.azurite, STANDIN_DIR, rate_limit_per_minute=0, rate_limit_reads_per_minute=0,
                                 rate_limit_table=unique_name("limits"), api_keys_table=unique_name("keys"))

    def logs(self) -> Path:
        self.runs += 1
        directory = self.scratch / "logs" / f"run{self.runs}"
        directory.mkdir(parents=True)
        return directory

    # now ------------------------------------------------------------------------------------

    def now(self, store: Path, backend: str, photo: bytes) -> dict:
        """The current worker from the run-time venv on the read-only store, then two jobs."""
        import httpx

        from benchmarks.service_overhead import run_job, vm_hwm_mb
        from tests.conftest import LiveStack

        load = load_average()
        stack = LiveStack(self.settings(), self.logs(), python=self.python, wrapper=WRAPPER,
                          MODELS_DIR=str(store), WEIGHTS_DIR="/nonexistent", HOME=str(self.home), ENGINE_BACKEND=backend,
                          PYTHONDONTWRITEBYTECODE="1",
                          ENGINE_THREADS=str(self.threads))
        try:
            stack.start_api()
            started = time.perf_counter()
            worker = stack.start_worker()
            row = wait_for_ready(worker, stack.log_dir / "worker0.log", started)
            rss_ready = vm_hwm_mb(worker.pid)
            with httpx.Client(timeout=120) as client:
                first = job_row(*run_job(client, stack.url, photo, "astronaut.png", "image/png"))
                second = job_row(*run_job(client, stack.url, photo, "astronaut.png", "image/png"))
            rss_jobs = vm_hwm_mb(worker.pid)
            tail = (stack.log_dir / "worker0.log").read_text(errors="replace")
        except Exception as error:
            raise RuntimeError(f"now-{backend}: {error}\n{stack.logs()}") from error
        finally:
            stack.stop()
        if "export" in tail.lower():
            raise RuntimeError(f"the worker exported something:\n{tail[-3000:]}")
        return {"side": f"now-{backend}", "load_before": load, "ready": row["ready"], "ready_cpu": row["ready_cpu"],
                "models_loaded": row["models_loaded"], "peak_rss_ready_mb": rss_ready, "peak_rss_after_jobs_mb": rss_jobs, "first_job": first, "second_job": second}

    def imports(self, backend: str) -> dict:
        """The interpreter alone, then the worker's modules and the runtime library, in one fresh process each."""
        env = {**os.environ, "HOME": str(self.home)}
        started = time.perf_counter()
        subprocess.run([*WRAPPER, self.python, "-c", "pass"], cwd=ROOT, env=env, check=True)
        interpreter = time.perf_counter() - started
        out = subprocess.run([*WRAPPER, self.python, "-c", IMPORT_PROBE, backend], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout
        return {"side": f"imports-{backend}", "interpreter": interpreter, **json.loads(out)}

    # before ---------------------------------------------------------------------------------

    def old(self, checkout: Path, weights: Path, case: str) -> dict:
        """065d324's worker from .venv on its weights directory (writable or not)."""
        from tests.conftest import env_for, stop_processes

        logs = self.logs()
        tmp = self.scratch / f"tmp{self.runs}"  # the container's /tmp: empty at every start
        tmp.mkdir()
        settings = self.settings()
        env = env_for(settings, WEIGHTS_DIR=str(weights), TORCH_THREADS=str(self.threads), ENGINE_BACKEND="openvino",
                      STANDIN_WEIGHTS="true", HOME=str(self.home), TMPDIR=str(tmp))
        env.pop("ONNX_CACHE_DIR", None)
        env.pop("MODELS_DIR", None)
        load = load_average()
        wrapper = WRAPPER if case == "unwritable" else ()
        log_file = logs / "worker.log"
        with open(log_file, "ab") as out:
            started = time.perf_counter()
            worker = subprocess.Popen([*wrapper, str(BUILD_PYTHON), "-m", "processing", "worker"], cwd=checkout, env=env,
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            row = wait_for_ready(worker, log_file, started)
        finally:
            stop_processes([worker])
        exported = "exporting" in row["log"]
        if exported != (case == "unwritable"):
            raise RuntimeError(f"old worker, {case}: exported={exported}, not what this case is about:\n{row['log']}")
        shutil.rmtree(tmp, ignore_errors=True)
        return {"side": f"old-{case}", "load_before": load, "ready": row["ready"], "ready_cpu": row["ready_cpu"],
                "models_loaded": row["models_loaded"], "exported": exported}

    # OpenVINO's cache -----------------------------------------------------------------------

    def ov_cache(self, store: Path, mode: str, cache: Path | None) -> dict:
        env = {**os.environ, "HOME": str(self.home)}
        started = time.perf_counter()
        out = subprocess.run([self.python, "-c", OV_CACHE_PROBE, str(store), str(cache or ""), str(self.threads)],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
        row = {"side": f"ov-cache-{mode}", "process": time.perf_counter() - started, **json.loads(out.splitlines()[-1])}
        if cache is not None:
            row["cache_mb"] = du_mb(cache)
        return row


# -- the whole run ------------------------------------------------------------------------------


def aggregate(rows: list[dict]) -> dict:
    sides: dict[str, list[dict]] = {}
    for row in rows:
        sides.setdefault(row["side"], []).append(row)
    out = {}
    for side, items in sides.items():
        metrics: dict[str, list[float]] = {}
        for item in items:
            for key, value in item.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "load_before":
                    metrics.setdefault(key, []).append(value)
                elif isinstance(value, dict):  # a job
                    for sub in ("latency", "engine", "worker_total", "queue_wait"):
                        if isinstance(value.get(sub), (int, float)):
                            metrics.setdefault(f"{key}.{sub}", []).append(value[sub])
        out[side] = {key: summary(values) for key, values in metrics.items()}
        loads = [item["load_before"] for item in items if "load_before" in item]
        if loads:
            out[side]["load_before_max"] = max(loads)
    return out


COLUMNS = {"now-openvino": "now: openvino", "now-onnxruntime": "now: onnxruntime",
           "old-writable": f"before ({OLD}): exports usable", "old-unwritable": "before: exports unwritable"}
# label, side prefix ("imports-": the import probe of that backend), metrics, unit
ROWS = (
    ('start → ready (spawn → "polling queue")', "", ("ready",), " s"),
    ('of which the worker\'s "models loaded in"', "", ("models_loaded",), " s"),
    ("CPU time to ready (user + system, with waited-for children)", "", ("ready_cpu",), " s"),
    ("interpreter / worker modules / runtime library import (apart)", "imports-",
     ("interpreter", "service_modules", "runtime_library"), " s"),
    ("worker peak RSS at ready / after the two jobs", "", ("peak_rss_ready_mb", "peak_rss_after_jobs_mb"), " MB"),
    ("first job: submit → succeeded", "", ("first_job.latency",), " s"),
    ("first job: engine stages / worker total", "", ("first_job.engine", "first_job.worker_total"), " s"),
    ("second job: submit → succeeded", "", ("second_job.latency",), " s"),
    ("second job: engine stages / worker total", "", ("second_job.engine", "second_job.worker_total"), " s"),
)
CACHE_ROWS = (("none", "no cache"), ("cold", "cache empty (compile + write)"), ("warm", "cache filled"))


def table(result: dict) -> str:
    agg = result["summary"]

    def cell(side: str, keys, unit: str) -> str:
        digits = 0 if unit == " MB" else 2
        values = [agg.get(side, {}).get(key) for key in keys]
        return " / ".join(f"{v['median']:.{digits}f}{unit} ({v['min']:.{digits}f}–{v['max']:.{digits}f})"
                          for v in values if v)

    lines = [f"| measure | {' | '.join(COLUMNS.values())} |", "|---|" + "---|" * len(COLUMNS)]
    for label, prefix, keys, unit in ROWS:
        sides = [prefix + side.split("-", 1)[1] if prefix else side for side in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cell(side, keys, unit) for side in sides) + " |")
    sizes = result.get("sizes", {})
    if "venvs" in sizes:
        now, old = sizes["venvs"]["now"], sizes["venvs"]["old"]
        lines.append(f"| fresh run-time venv (du -sm) | {now['mb']} MB ({now['packages']} packages) | same venv "
                     f"| {old['mb']} MB ({old['packages']} packages, torch {old['versions'].get('torch')}) | same venv |")
    if "store" in sizes:
        store = sizes["store"]
        lines.append(f"| models in the image | {store['store_now_mb']} MB (.onnx store) | same store | {store['old_weights_mb']} MB "
                     f"({store['old_checkpoints_mb']} .pth + {store['old_exports_mb']} v1 .onnx) | same files |")
    lines += ["", "| OpenVINO model load (Engine.open) | time | process peak RSS | cache on disk |", "|---|---|---|---|"]
    for mode, label in CACHE_ROWS:
        side = f"ov-cache-{mode}"
        if side in agg:
            lines.append(f"| {label} | {cell(side, ('load',), ' s')} | {cell(side, ('peak_rss_mb',), ' MB')} "
                         f"| {cell(side, ('cache_mb',), ' MB') or '—'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="ENGINE_THREADS (TORCH_THREADS for the old code)")
    parser.add_argument("--skip-sizes", action="store_true", help="no fresh venvs (the slow part: several minutes)")
    parser.add_argument("--skip-old", action="store_true", help="no runs of 065d324's worker")
    parser.add_argument("--skip-ov-cache", action="store_true")
    parser.add_argument("--old-torch", default="torch==2.13.0+cpu", help="what stands for the old image's CPU torch 2.14.1")
    parser.add_argument("--old-torchvision", default="torchvision==0.28.0")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    # Stopped from outside (SIGTERM, or SIGINT even when a shell started it in the background
    # with SIGINT ignored): still stop what it started and remove the venvs and the worktree.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    import cv2

    from benchmarks.engine_vs_stock import machine
    from benchmarks.inputs import astronaut_bgr
    from tests.conftest import STANDIN_DIR, Azurite, free_port

    if args.skip_sizes and not RUNTIME_PYTHON.is_file():
        raise SystemExit(f"{RUNTIME_PYTHON} is missing: scripts/setup.sh builds it")
    if not (STANDIN_DIR / "onnx" / "models.json").is_file() or not list((STANDIN_DIR / "onnx").glob("*.v1.onnx")):
        raise SystemExit(f"{STANDIN_DIR} needs the stand-in checkpoints, the exported store and the old v1 exports")
    info = machine()
    flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].splitlines()[0].split()
    info["vector flags"] = " ".join(sorted({f for f in flags if f.startswith(("avx", "amx", "fma"))}))
    result: dict = {"machine": info, "repeats": args.repeats, "threads": args.threads, "old_commit": OLD,
                    "load_at_start": load_average(), "rows": []}
    photo = cv2.imencode(".png", astronaut_bgr())[1].tobytes()  # 512x512, one face
    scratch = Path(tempfile.mkdtemp(prefix="cold-start-"))
    azurite = Azurite(scratch / "azurite", (free_port(), free_port(), free_port()))
    checkout = scratch / "old-checkout"
    stores = []
    try:
        result["sizes"] = {"store": store_sizes(STANDIN_DIR)}
        python = RUNTIME_PYTHON
        if not args.skip_sizes:
            venv, now = fresh_runtime_venv(scratch)
            python = venv / "bin" / "python"
            result["sizes"]["venvs"] = {"now": now, "old": old_venv_size(scratch, args.old_torch, args.old_torchvision)}
        result["runtime_python"] = str(python)
        azurite.start()
        bench = Bench(scratch, azurite, args.threads, python)
        store = read_only(copy_store(STANDIN_DIR, scratch / "models"))
        stores.append(store)
        plan = [lambda backend=backend: bench.now(store, backend, photo) for backend in BACKENDS]
        plan += [lambda backend=backend: bench.imports(backend) for backend in BACKENDS]
        if not args.skip_old:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(checkout), OLD], check=True)
            writable = copy_old_weights(STANDIN_DIR, scratch / "old-weights")
            unwritable = read_only(copy_old_weights(STANDIN_DIR, scratch / "old-weights-ro"))
            stores.append(unwritable)
            plan += [lambda: bench.old(checkout, writable, "writable"), lambda: bench.old(checkout, unwritable, "unwritable")]
        if not args.skip_ov_cache:
            def cache_trio() -> list[dict]:
                cache = Path(tempfile.mkdtemp(prefix="ov-cache-", dir=scratch))
                try:
                    return [bench.ov_cache(store, "none", None), bench.ov_cache(store, "cold", cache),
                            bench.ov_cache(store, "warm", cache)]
                finally:
                    shutil.rmtree(cache)
            plan.append(cache_trio)

        # Bytecode as the images have it (compileall in the Dockerfile, now and at 065d324;
        # the venvs' packages were compiled by pip), not recompiled at every start.
        subprocess.run([str(python), "-m", "compileall", "-q", "processing"], cwd=ROOT, check=True)
        if not args.skip_old:
            subprocess.run([str(BUILD_PYTHON), "-m", "compileall", "-q", "processing"], cwd=checkout, check=True)
        log("warm-up: one untimed start of each side (page cache, first-run effects)")
        warm = [bench.now(store, backend, photo) for backend in BACKENDS]
        if not args.skip_old:
            warm.append(bench.old(checkout, writable, "writable"))
        result["warmup"] = warm
        for repeat in range(args.repeats):
            for step in plan:
                rows = step()
                for row in rows if isinstance(rows, list) else [rows]:
                    row["repeat"] = repeat + 1
                    result["rows"].append(row)
                    shown = {k: round(v, 2) for k, v in row.items() if isinstance(v, float)}
                    log(f"  repeat {repeat + 1} {row['side']}: {shown}")
    finally:
        azurite.stop()
        for directory in stores:
            writable_again(directory)
        if checkout.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], check=False)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    result["load_at_end"] = load_average()
    result["summary"] = aggregate(result["rows"])
    text = table(result)
    loads = [row["load_before"] for row in result["rows"] if "load_before" in row] or [result["load_at_end"]]
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        for row in [*result["rows"], *result["warmup"]]:
            row.pop("log", None)
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
        RESULTS.with_suffix(".txt").write_text(
            f"{' '.join(sys.argv)}\nmachine: {json.dumps(info)}\n1-minute load average at start / end: "
            f"{result['load_at_start']} / {result['load_at_end']}; before each start: {min(loads)}-{max(loads)} "
            f"(this benchmark's own processes included)\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
