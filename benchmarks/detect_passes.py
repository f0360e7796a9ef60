"""What the second detection pass costs, in one command.

    .venv/bin/python -m benchmarks.detect_passes [--repeats 3] [--threads 2] [--second-sides 2520]

Two 4000x3000 JPEGs (benchmarks/inputs.py): the 4-face photo of engine_vs_stock, and a group
photo of astronaut faces at four sizes (inputs.GROUP_12MP). On each, with each second-pass
limit (DETECT_SECOND_PASS_MAX_SIDE):

- RetinaFace-ResNet50 on ``--runtime`` (OpenVINO by default): the first pass (the 840 px
  copy) and the second pass forced on (the tiling it would use when the first pass finds
  nothing), median seconds of ``--repeats`` runs after one untimed run. With stand-in weights
  the network's cost is real but its faces are not, so whether the pass would run on a real
  photo is not measured here, only what it costs when it does.
- the Haar stand-in on the same pixels: the whole rule as the engine runs it (first pass,
  plan, second pass when the plan says so) and which of the placed faces each pass found.

With ``--job``, instead: what the pass adds to a whole job's peak memory. Two fresh processes,
as a worker: load every network, detect on the 4-face photo (one with the second pass forced
on, at the first of ``--second-sides``), restore its 4 faces on pinned landmarks; each one's
peak RSS.

Prints a table and writes benchmarks/results/detect_passes.json (``--job``: detect_passes_job.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.engine_vs_stock import _cpu, machine  # noqa: E402  (after the path insert)
from processing.config import Settings  # noqa: E402
from processing.engine.memory import release_heap  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "detect_passes.json"
JOB_RESULTS = ROOT / "benchmarks" / "results" / "detect_passes_job.json"
DEFAULT_WEIGHTS = ROOT / ".cache" / "standin-weights"


def timed(repeats: int, run) -> tuple[dict, object]:
    """Median wall and process CPU seconds of ``repeats`` calls after one untimed call (CPU
    time is what contention on a shared machine disturbs least), and the last result."""
    result = run()
    wall, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), _cpu()
        result = run()
        wall.append(time.perf_counter() - started)
        cpu.append(_cpu() - cpu_started)
    return {"wall": round(statistics.median(wall), 3), "cpu": round(statistics.median(cpu), 3)}, result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident after giving freed heap back (as the engine does after the second pass):
    what a pass leaves behind while the faces are restored."""
    release_heap()
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def found_where(placements, first, both) -> list[str]:
    """For each placed face: "pass1", "pass2" or "-" (its crop holds no detected face's centre)."""
    def inside(face, x, y, side):
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        return x <= cx <= x + side and y <= cy <= y + side

    return ["pass1" if any(inside(f, *p) for f in first) else "pass2" if any(inside(f, *p) for f in both) else "-"
            for p in placements]


def measure(args) -> dict:
    import cv2

    from benchmarks.inputs import FOUR_FACES_12MP, GROUP_12MP, faces_on_coffee
    from processing.engine.detectors import HaarStandInDetector, RetinaFaceDetector, SecondPass
    from processing.engine.networks import OnnxBackend
    from processing.engine.store import ModelStore

    cv2.setNumThreads(args.threads)
    max_side = Settings().detect_max_side
    retinaface = RetinaFaceDetector(OnnxBackend(ModelStore(args.weights / "onnx"), args.threads, args.runtime).detector(), max_side)
    haar = HaarStandInDetector(max_side)
    photos = {}
    for name, placements in (("4faces-12mp", FOUR_FACES_12MP), ("group-12mp", GROUP_12MP)):
        pixels, _ = faces_on_coffee(placements)
        ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 92])  # as a job receives it
        photos[name] = (cv2.imdecode(jpeg, cv2.IMREAD_COLOR), placements)

    rows = []
    for name, (image, placements) in photos.items():
        first_seconds, _ = timed(args.repeats, lambda: retinaface.detect(image))
        rss_after_first = {"peak": round(peak_rss_mb()), "now": round(rss_mb())}
        haar_first_seconds, haar_first = timed(args.repeats, lambda: haar.detect(image))
        for side in args.second_sides:
            second = SecondPass(side)
            row = {"photo": name, "size": f"{image.shape[1]}x{image.shape[0]}", "second_side": side,
                   "retinaface": {"pass1": first_seconds}, "haar": {"pass1": haar_first_seconds}}
            tiling = second.plan(retinaface, image.shape, [])  # as when the first pass finds nothing
            if tiling is not None:
                seconds, _ = timed(args.repeats, lambda: second.run(retinaface, image, tiling, []))
                row["retinaface"].update(pass2=seconds, tiles=len(tiling.origins),
                                         tile=list(tiling.tile), copy=list(tiling.size), overlap=tiling.overlap,
                                         smallest_face_px={"pass1": round(retinaface.min_face(image.shape)),
                                                           "pass2": round(retinaface.MIN_FACE / tiling.scale)},
                                         rss_mb={"after_pass1": rss_after_first,
                                                 "after_pass2": {"peak": round(peak_rss_mb()), "now": round(rss_mb())}})
            haar_tiling = second.plan(haar, image.shape, haar_first)
            row["haar"]["runs"] = haar_tiling is not None
            both = haar_first
            if haar_tiling is not None:
                seconds, both = timed(args.repeats, lambda: second.run(haar, image, haar_tiling, haar_first))
                row["haar"].update(pass2=seconds, tiles=len(haar_tiling.origins))
            where = found_where(placements, haar_first, both)
            row["haar"]["faces"] = {"placed": len(placements), "pass1": where.count("pass1"), "pass2": where.count("pass2"),
                                    "others": len(both) - where.count("pass1") - where.count("pass2")}
            rows.append(row)
            print(f"  {name} second side {side}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return {"command": " ".join(["python", "-m", "benchmarks.detect_passes", *sys.argv[1:]]), "machine": machine(),
            "avx": cpu_flags(), "load_average": list(os.getloadavg()), "runtime": args.runtime, "threads": args.threads,
            "repeats": args.repeats, "detect_max_side": max_side, "rows": rows}


def job_child(args) -> dict:
    """One worker-like process (see --job); its detect seconds, total seconds and peak RSS."""
    import numpy as np

    from benchmarks.inputs import FOUR_FACES_12MP, faces_on_coffee
    from processing.engine.detectors import Face
    from processing.engine.pipeline import Engine, RestoreOptions

    engine = Engine.open(args.weights / "onnx", runtime=args.runtime, threads=args.threads, allow_standin=True,
                         detect_second_pass_max_side=args.second_sides[0])
    pixels, landmarks = faces_on_coffee(FOUR_FACES_12MP)
    started = time.perf_counter()
    faces = engine.retinaface.detect(pixels)
    if args.job_child == "pass2":
        tiling = engine.second_pass.plan(engine.retinaface, pixels.shape, [])
        engine.second_pass.run(engine.retinaface, pixels, tiling, faces)
        release_heap()  # as Engine.detect does after it
    detect = time.perf_counter() - started
    pinned = [Face((*m.min(axis=0), *m.max(axis=0)), 1.0, m) for m in (np.asarray(l, np.float64) for l in landmarks)]
    engine.restore(pixels, RestoreOptions(), faces=pinned)
    return {"side": args.job_child, "detect": round(detect, 2), "total": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(peak_rss_mb())}


def job(args) -> dict:
    sides = []
    for side in ("pass1", "pass2"):
        command = [sys.executable, "-m", "benchmarks.detect_passes", "--job-child", side, "--weights", str(args.weights),
                   "--runtime", args.runtime, "--threads", str(args.threads), "--second-sides", str(args.second_sides[0])]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        sides.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {sides[-1]}", file=sys.stderr, flush=True)
    return {"command": " ".join(["python", "-m", "benchmarks.detect_passes", *sys.argv[1:]]), "machine": machine(),
            "load_average": list(os.getloadavg()), "second_side": args.second_sides[0], "sides": sides}


def cpu_flags() -> str:
    """What `grep -o 'avx[^ ]*' /proc/cpuinfo | sort -u` prints, on one line."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return ""
    return " ".join(sorted({f for f in flags if f.startswith("avx")}))


def markdown(summary: dict) -> str:
    def took(seconds: dict) -> str:
        return f"{seconds['wall']:.2f} s ({seconds['cpu']:.2f} s CPU)"

    header = ("| photo | second-pass side | RetinaFace pass 1 | RetinaFace pass 2 | tiles (size, overlap) | smallest face, pass 1 → 2 "
              "| RSS after pass 1 → 2 | Haar: pass 2 runs? | Haar pass 1 / pass 2 | placed faces Haar found in pass 1 / pass 2 (others) |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in summary["rows"]:
        r, h, faces = row["retinaface"], row["haar"], row["haar"]["faces"]
        tiles = f"{r['tiles']} ({r['tile'][0]}×{r['tile'][1]}, {r['overlap']} px)" if "pass2" in r else "—"
        floors = f"{r['smallest_face_px']['pass1']} → {r['smallest_face_px']['pass2']} px" if "pass2" in r else "—"
        rss = f"{r['rss_mb']['after_pass1']['now']} → {r['rss_mb']['after_pass2']['now']} MB" if "pass2" in r else "—"
        lines.append(f"| {row['photo']} | {row['second_side']} | {took(r['pass1'])} | {took(r['pass2']) if 'pass2' in r else 'does not run'} "
                     f"| {tiles} | {floors} | {rss} | {'yes' if h['runs'] else 'no'} | {took(h['pass1'])} / {took(h['pass2']) if h['runs'] else '—'} "
                     f"| {faces['pass1']} / {faces['pass2']} of {faces['placed']} ({faces['others']}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights directory with its onnx/ store (default: the stand-ins)")
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--second-sides", type=int, nargs="+", default=[Settings().detect_second_pass_max_side])
    parser.add_argument("--job", action="store_true", help="a whole job's peak RSS with and without the second pass")
    parser.add_argument("--no-save", action="store_true", help="do not overwrite the results in benchmarks/results/")
    parser.add_argument("--job-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.weights = args.weights.resolve()
    if args.job_child:
        print(json.dumps(job_child(args)))
        return 0
    summary, results = (job(args), JOB_RESULTS) if args.job else (measure(args), RESULTS)
    if not args.no_save:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["sides"], indent=1) if args.job else markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
