"""Our engine against the stock GFPGAN pipeline, side by side, in one command.

    .venv/bin/python -m benchmarks.engine_vs_stock [--repeats 3] [--threads 2]

Same inputs (benchmarks/inputs.py), same weights, same pinned landmarks, same GFPGAN
noise. Every measurement runs in a fresh child process (one per side, case and repeat,
stock and ours alternating), so each peak RSS is that of one worker that loaded its
models and processed that photo. Each child runs the photo ``--warmup`` times before the
timed run (first-call allocations and kernel selection are not what a long-lived worker
pays per job); model loading is reported separately. Prints per-stage medians, total
wall time, process CPU time, peak RSS, the stock/ours ratios and the PSNR of our output
against stock's, and writes everything to benchmarks/results/engine_vs_stock.json.

Variants of our engine (``--variants``) measure the levers one at a time:
  onnxruntime / torch   our pipeline on that backend ("ours" is the default, OpenVINO)
  detect1024 / detect640 / detect512 / detect0   detection downscale limit (0: full size;
                        "ours" uses the product default, DETECT_MAX_SIDE=840)
  parse256 / parse384   ParseNet on a downscaled face (changes the mask)
  box          the feathered square mask (skips ParseNet; changes the mask)
  threads1     one thread
  f32 / bf16   ENGINE_PRECISION pinned ("ours" is the default, auto); where the CPU runs bf16
               natively, the one of the two that "ours" is not is always added, and every side
               gets its PSNR against the f32 side too
  fp32store    the model store with fp32 weights (``--fp32-models``, exported there if missing, as
               ``python -m processing.checkpoints export --fp32-weights`` does; "ours" runs the default,
               fp16-stored one)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processing.config import Settings  # noqa: E402  (after the path insert)

STAGES = ("decode", "detect", "align", "restore", "parse", "paste", "encode")
RESULTS = ROOT / "benchmarks" / "results" / "engine_vs_stock.json"
DEFAULT_WEIGHTS = ROOT / ".cache" / "standin-weights"


# -- one measurement, in a child process ----------------------------------------------------


def _variant_settings(variant: str, threads: int) -> dict:
    settings = {"backend": "openvino", "detect_max_side": Settings().detect_max_side, "parse_size": 512,
                "blend_mask": "parse", "threads": threads, "precision": "auto", "store": "onnx"}
    if variant in ("f32", "bf16"):
        settings["precision"] = variant
    elif variant == "fp32store":
        settings["store"] = "fp32"
    elif variant in ("torch", "openvino", "onnxruntime"):
        settings["backend"] = variant
    elif variant.startswith("detect"):
        settings["detect_max_side"] = int(variant.removeprefix("detect"))
    elif variant.startswith("parse"):
        settings["parse_size"] = int(variant.removeprefix("parse"))
    elif variant == "box":
        settings["blend_mask"] = "box"
    elif variant == "threads1":
        settings["threads"] = 1
    elif variant != "ours":
        raise SystemExit(f"unknown variant {variant}")
    return settings


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def child(args) -> dict:
    from benchmarks.inputs import load

    case = next(c for c in load(args.inputs) if c.name == args.case)
    data = (args.inputs / case.file).read_bytes()
    weights_dir = args.weights.resolve()
    if args.side == "stock":
        from benchmarks.stock import StockPipeline, chdir_prepared

        chdir_prepared(args.workdir, weights_dir)
        started = time.perf_counter()
        pipeline = StockPipeline(weights_dir, threads=args.threads)
        load_seconds = time.perf_counter() - started

        def once():
            image, png, timings = pipeline.run(data, case.landmarks, case.aligned)
            return png, timings
    else:
        import numpy as np

        from processing.engine.detectors import Face
        from processing.engine.pipeline import Engine, RestoreOptions
        from processing.images import codec as images

        settings = _variant_settings(args.side, args.threads)
        started = time.perf_counter()
        options = dict(threads=settings["threads"], detect_max_side=settings["detect_max_side"], allow_standin=True)
        if settings["backend"] == "torch":
            from processing.checkpoints.torch_backend import TorchBackend

            engine = Engine(TorchBackend(weights_dir, settings["threads"]), **options)
        else:
            models = args.fp32_models if settings["store"] == "fp32" else weights_dir / "onnx"
            engine = Engine.open(models, runtime=settings["backend"], precision=settings["precision"], **options)
        load_seconds = time.perf_counter() - started
        options = RestoreOptions(aligned=case.aligned, parse_size=settings["parse_size"], blend_mask=settings["blend_mask"])
        pinned = []
        for marks in case.landmarks:
            marks = np.asarray(marks, np.float64)
            pinned.append(Face((*marks.min(axis=0), *marks.max(axis=0)), 1.0, marks))

        def once():
            timings = {}
            started = time.perf_counter()
            pixels = images.decode(data, 10**9).pixels
            timings["decode"] = time.perf_counter() - started
            if not case.aligned:
                started = time.perf_counter()
                engine.retinaface.detect(pixels)  # the real detector's cost; its (stand-in) faces are not used
                timings["detect"] = time.perf_counter() - started
            result = engine.restore(pixels, options, faces=pinned)
            for name in ("align", "restore", "parse"):
                timings[name] = result.timings.get(name, 0.0)
            timings["paste"] = result.timings.get("upscale", 0.0) + result.timings.get("paste", 0.0)
            started = time.perf_counter()
            png = images.encode(result.image, "png")
            timings["encode"] = time.perf_counter() - started
            return png, timings

    for _ in range(args.warmup):
        once()
    cpu, started = _cpu(), time.perf_counter()
    png, timings = once()
    timings["total"] = time.perf_counter() - started
    timings["cpu"] = _cpu() - cpu
    if args.save:
        Path(args.save).write_bytes(png)
    return {
        "side": args.side, "case": case.name, "load": load_seconds, "timings": timings,
        "precision": "f32" if args.side == "stock" else engine.precision_for("auto"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# -- the orchestrator -----------------------------------------------------------------------


def machine() -> dict:
    info = {"python": platform.python_version(), "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Flags"):
                info[key.strip()] = value.strip() if key.strip() != "Flags" else " ".join(
                    f for f in value.split() if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                                                      "amx_tile", "amx_bf16"))
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["RAM GB"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    try:
        import onnxruntime
        import torch

        info["torch"], info["onnxruntime"] = torch.__version__, onnxruntime.__version__
    except ImportError:
        pass
    from processing.engine.runtimes import plan

    info["openvino precision"] = plan("openvino", "auto").describe()
    info["load_average"] = list(os.getloadavg())
    return info


def precision_sides(variants: list[str]) -> list[str]:
    """Where the CPU runs bf16 natively: the precision the default ("ours") does not run, so
    f32 and bf16 are always measured side by side."""
    from processing.engine.runtimes import plan

    chosen = plan("openvino", "auto")
    if not chosen.native_bf16:
        return []
    other = "f32" if chosen.precision == "bf16" else "bf16"
    return [] if other in variants else [other]


def psnr(a, b) -> float:
    import numpy as np

    if a.shape != b.shape:
        return float("nan")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def spawn(side: str, case: str, args, inputs: Path, workdir: Path, save: Path | None) -> dict:
    command = [sys.executable, "-m", "benchmarks.engine_vs_stock", "--child", side, "--case", case,
               "--inputs", str(inputs), "--workdir", str(workdir), "--weights", str(args.weights),
               "--fp32-models", str(args.fp32_models),
               "--threads", str(args.threads), "--warmup", str(args.warmup)]
    if save:
        command += ["--save", str(save)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{side} on {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def orchestrate(args) -> int:
    from benchmarks import inputs
    from processing.checkpoints import weights
    from processing.checkpoints.export import export_store
    from processing.checkpoints.standin import build_standin

    if not (weights.is_standin_dir(args.weights) or (args.weights / "GFPGANv1.4.pth").is_file()):
        print(f"building stand-in weights in {args.weights}", file=sys.stderr)
        build_standin(args.weights)
    started = time.perf_counter()
    export_store(args.weights, args.weights / "onnx", log=lambda line: None)
    export_seconds = time.perf_counter() - started
    if "fp32store" in args.variants:
        export_store(args.weights, args.fp32_models, log=lambda line: None, weights="fp32")

    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    cases = [c for c in inputs.build(scratch / "inputs") if not args.cases or c.name in args.cases]
    sides = ["stock", "ours", *args.variants, *precision_sides(args.variants)]
    runs: dict[tuple[str, str], list[dict]] = {}
    outputs: dict[tuple[str, str], Path] = {}
    summary = {"machine": machine(), "command": " ".join(["python", "-m", "benchmarks.engine_vs_stock", *sys.argv[1:]]),
               "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
               "weights": "stand-in" if weights.is_standin_dir(args.weights) else "official",
               "onnx_export_seconds_if_missing": round(export_seconds, 1), "cases": {}}
    for case in cases:
        for repeat in range(args.repeats):
            order = sides if repeat % 2 == 0 else sides[::-1]
            for side in order:
                save = scratch / f"{case.name}-{side}.png"
                result = spawn(side, case.name, args, scratch / "inputs", scratch / "work", save if repeat == 0 else None)
                if repeat == 0:
                    outputs[(case.name, side)] = save
                runs.setdefault((case.name, side), []).append(result)
                print(f"  {case.name:12} {side:10} #{repeat + 1}: {result['timings']['total']:6.2f} s wall, "
                      f"{result['timings']['cpu']:6.2f} s cpu, {result['peak_rss_mb']:6.0f} MB", file=sys.stderr, flush=True)
        summary["cases"][case.name] = case_entry(case, sides, runs, outputs)
        summary["load_average_after"] = list(os.getloadavg())
        if not args.no_save:  # after every case: a run cut short keeps what it measured
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(summary, indent=1))
    shutil.rmtree(scratch, ignore_errors=True)
    print(markdown(summary))
    return 0


def case_entry(case, sides: list[str], runs: dict, outputs: dict) -> dict:
    """One case's sides: medians, peak RSS, ratios to stock, PSNR against stock and against f32."""
    import cv2

    stock_image = cv2.imread(str(outputs[(case.name, "stock")]))
    # The f32 side of our engine (the default where it runs f32): what bf16 is measured against.
    f32_side = next((side for side in sides if side != "stock" and runs[(case.name, side)][0]["precision"] == "f32"
                     and _variant_settings(side, 1)["store"] == "onnx"
                     and _variant_settings(side, 1)["backend"] == "openvino"), "ours")
    f32_image = cv2.imread(str(outputs[(case.name, f32_side)]))
    entry = {"description": case.description, "faces": case.faces, "f32_side": f32_side, "sides": {}}
    for side in sides:
        results = runs[(case.name, side)]
        med = lambda key: statistics.median(r["timings"].get(key, 0.0) for r in results)  # noqa: E731
        image = cv2.imread(str(outputs[(case.name, side)]))
        entry["sides"][side] = {
            "stages": {stage: round(med(stage), 3) for stage in STAGES},
            "total": round(med("total"), 2),
            "totals": [round(r["timings"]["total"], 2) for r in results],
            "cpu": round(med("cpu"), 2),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results)),
            "load": round(statistics.median(r["load"] for r in results), 2),
            "psnr_vs_stock": round(psnr(image, stock_image), 2),
            "psnr_vs_f32": round(psnr(image, f32_image), 2),
            "precision": results[0]["precision"],
        }
    stock = entry["sides"]["stock"]
    for side in sides[1:]:
        entry["sides"][side]["ratio_wall"] = round(stock["total"] / entry["sides"][side]["total"], 2)
        entry["sides"][side]["ratio_cpu"] = round(stock["cpu"] / entry["sides"][side]["cpu"], 2)
    return entry


def markdown(summary: dict) -> str:
    lines = []
    header = ("| case | side | precision | " + " | ".join(STAGES) +
              " | total wall (runs) | CPU | peak RSS | stock/ours wall | stock/ours CPU | PSNR vs stock | PSNR vs f32 |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for name, entry in summary["cases"].items():
        for side, s in entry["sides"].items():
            stages = " | ".join(f"{s['stages'][stage]:.2f}" for stage in STAGES)
            ratio = f"**{s['ratio_wall']:.2f}×**" if "ratio_wall" in s else "—"
            ratio_cpu = f"{s['ratio_cpu']:.2f}×" if "ratio_cpu" in s else "—"
            quality = "—" if side == "stock" else _db(s["psnr_vs_stock"])
            against_f32 = "—" if side in ("stock", entry.get("f32_side")) else _db(s.get("psnr_vs_f32", float("nan")))
            runs = ", ".join(f"{t:.1f}" for t in s["totals"])
            lines.append(f"| {name} | {side} | {s.get('precision', 'f32')} | {stages} | {s['total']:.2f} s ({runs}) | "
                         f"{s['cpu']:.1f} s | {s['peak_rss_mb']} MB | {ratio} | {ratio_cpu} | {quality} | {against_f32} |")
    return "\n".join(lines)


def _db(value: float) -> str:
    return "identical" if value == float("inf") else f"{value:.1f} dB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights directory (default: the stand-ins)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="*", help="subset of 1face-1024 1face-2048 4faces-12mp aligned-512")
    parser.add_argument("--variants", nargs="*", default=[], help="extra variants of our engine (see above)")
    parser.add_argument("--fp32-models", type=Path, help="a model store with fp32 weights, for the fp32store "
                        "variant (default: WEIGHTS/onnx-fp32, exported there if missing)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes (default: %(default)s)")
    parser.add_argument("--no-save", action="store_true", help="write no JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.weights = args.weights.resolve()
    args.fp32_models = (args.fp32_models or args.weights / "onnx-fp32").resolve()
    if args.child:
        args.side = args.child
        print(json.dumps(child(args)))
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
