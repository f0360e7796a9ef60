"""Each network in f32 and bf16 (and f16, measured only) on OpenVINO, and on the fp16- and
fp32-stored model stores, side by side in one process:

    .venv/bin/python -m benchmarks.precision [--repeats 4] [--threads 2]

Per network (GFPGAN 1.4 on a 512² face, ParseNet on 512², RetinaFace on 840², Real-ESRGAN x2 on
a 256² tile; one fixed random input each, the stand-in exports): the fastest of ``--repeats``
calls, wall and process CPU time, the variants interleaved in every repeat; and what the
outputs differ by against f32 on the fp32 store (PSNR of the image networks' 8-bit outputs,
ParseNet's argmax agreement, RetinaFace's largest score difference). Also the CPU's flags,
what ``ENGINE_PRECISION=auto`` resolves to here, and the two stores' sizes. Writes
benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.engine_vs_stock import machine  # noqa: E402
from processing.engine.networks import gfpgan_noise  # noqa: E402
from processing.engine.runtimes import Runtime, execution_precision, plan, runner  # noqa: E402
from processing.engine.store import BACKGROUND, DETECTOR, PARSER, ModelStore  # noqa: E402

STANDIN = ROOT / ".cache" / "standin-weights"
RESULTS = ROOT / "benchmarks" / "results" / "precision.json"
NETWORKS = {"gfpgan-1.4": 512, PARSER: 512, DETECTOR: 840, BACKGROUND: 256}
# f16 is measured, not offered: OpenVINO computes in it on CPUs with AVX-512 FP16 or AMX-FP16,
# but fp16 arithmetic overflows in GFPGANv1Clean (upstream issue #50), which stand-ins cannot show.
VARIANTS = {"f32, fp32 store": ("fp32", "f32"), "f32, fp16 store": ("fp16", "f32"), "bf16, fp16 store": ("fp16", "bf16"),
            "f16, fp16 store": ("fp16", "f16")}


def _feed(role: str, side: int, names: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if role == BACKGROUND:
        return {"input": rng.uniform(0, 1, (1, 3, side, side)).astype(np.float32)}
    if role == DETECTOR:
        return {"input": rng.uniform(-120, 130, (1, 3, side, side)).astype(np.float32)}
    feed = {"input": rng.uniform(-1, 1, (1, 3, side, side)).astype(np.float32)}
    if role.startswith("gfpgan"):
        feed.update(zip([n for n in names if n.startswith("noise")], gfpgan_noise(0)))
    return feed


def _psnr(a: np.ndarray, b: np.ndarray, low: float, high: float) -> float:
    to8 = lambda x: np.round((np.clip(x, low, high) - low) / (high - low) * 255)  # noqa: E731
    mse = float(np.mean((to8(a) - to8(b)) ** 2))
    return float("inf") if mse == 0 else round(10 * np.log10(255.0**2 / mse), 1)


def _difference(role: str, out: list[np.ndarray], ref: list[np.ndarray]) -> dict:
    if role == PARSER:
        return {"argmax_agreement": round(float((out[0].argmax(1) == ref[0].argmax(1)).mean()), 4)}
    if role == DETECTOR:
        return {"max_score_difference": round(float(np.abs(out[1][..., 1] - ref[1][..., 1]).max()), 4)}
    low = 0.0 if role == BACKGROUND else -1.0
    return {"psnr_db": _psnr(out[0], ref[0], low, 1.0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    from processing.checkpoints.export import export_store

    for directory, weights in ((STANDIN / "onnx", "fp16"), (STANDIN / "onnx-fp32", "fp32")):
        export_store(STANDIN, directory, log=lambda line: None, weights=weights)  # instant when present
    stores = {"fp16": ModelStore(STANDIN / "onnx"), "fp32": ModelStore(STANDIN / "onnx-fp32")}
    summary = {"machine": machine(), "auto": plan("openvino", "auto").describe(), "threads": args.threads,
               "store_bytes": {k: sum(n.size for n in s.networks.values()) for k, s in stores.items()}, "networks": {}}
    for role, side in NETWORKS.items():
        runs = {name: runner(stores[store].path(role), args.threads, Runtime("openvino", precision))
                for name, (store, precision) in VARIANTS.items()}
        feed = _feed(role, side, next(iter(runs.values())).input_names)
        outputs = {name: run(feed) for name, run in runs.items()}  # also the warm-up
        best = {name: [float("inf"), float("inf")] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                run(feed)
                best[name][0] = min(best[name][0], time.perf_counter() - wall)
                best[name][1] = min(best[name][1], time.process_time() - cpu)
        reference = outputs["f32, fp32 store"]
        summary["networks"][role] = {
            name: {"ran": execution_precision(run.compiled().compiled), "wall_s": round(best[name][0], 3),
                   "cpu_s": round(best[name][1], 3), **_difference(role, outputs[name], reference)}
            for name, run in runs.items()}
        print(role, json.dumps(summary["networks"][role]), file=sys.stderr, flush=True)
    summary["load_average_after"] = list(os.getloadavg())
    if not args.no_save:
        RESULTS.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
