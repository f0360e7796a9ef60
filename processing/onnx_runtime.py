"""The three networks on ONNX Runtime, without torch in the serving process.

Exported once per weight file (``python -m processing.onnx_runtime export``, the Docker
build, or the first engine start) into a cache directory next to the weights; each file's
name carries the SHA-256 of the checkpoint it came from and the export format version, so
a changed checkpoint or exporter never reuses a stale graph. The export needs torch and
the upstream classes; it runs in a child process so the serving process never imports
torch (importing it costs several hundred MB of resident memory).

What runs here computes what the torch modules compute (opset 17, legacy exporter):
- GFPGANv1Clean with its decoder noise as 15 inputs (see ``models.gfpgan_noise``);
- ParseNet's parsing logits, any square input size;
- RetinaFace-ResNet50 on any input size, with facexlib's ``detect_faces`` pre- and
  post-processing re-done in numpy (priors, box/landmark decoding, NMS).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from math import ceil
from pathlib import Path
from typing import Sequence

import numpy as np

from .weights import DETECTOR_FILE, GFPGAN_FILES, PARSER_FILE, expected_files

log = logging.getLogger(__name__)

OPSET = 17
# Bump when an export wrapper or its inputs/outputs change: cached files are keyed by it.
EXPORT_FORMAT = 1

# ONNX Runtime graph optimisation per network, chosen by measurement (BENCHMARKS.md):
# "all" adds blocked-layout (NCHWc) convolutions, which took the same CPU time here but
# keep a second, reordered copy of every convolution's weights (+140 MB for the detector,
# +140 MB for GFPGAN) and add reorder buffers around ParseNet's 512x512x128 activations.
OPTIMIZATION = {"gfpgan": "extended", "parser": "extended", "detector": "extended"}


class OnnxUnavailable(RuntimeError):
    pass


def _ort():
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - requirements pin it
        raise OnnxUnavailable("onnxruntime is not installed; install requirements.txt or use the torch backend") from error
    return onnxruntime


# -- the cache -----------------------------------------------------------------------


def _kind(weight_name: str) -> str:
    if weight_name in GFPGAN_FILES.values():
        return "gfpgan"
    if weight_name == PARSER_FILE:
        return "parser"
    if weight_name == DETECTOR_FILE:
        return "detector"
    raise ValueError(f"no ONNX export for {weight_name}")


def cached_name(weight_name: str, sha256: str) -> str:
    return f"{Path(weight_name).stem}.{sha256[:16]}.opset{OPSET}.v{EXPORT_FORMAT}.onnx"


def cached_path(weights_dir: Path, cache_dir: Path, weight_name: str) -> Path:
    """Where the export of ``weight_name`` lives. The key is the SHA-256 the weights
    manifest publishes, which ``weights.require_weights`` has checked the file against."""
    sha = expected_files(weights_dir)[weight_name][1]
    return cache_dir / cached_name(weight_name, sha)


def export(weight_path: Path, target: Path) -> None:
    """Export one checkpoint to ``target`` (atomically). Needs torch."""
    import torch

    from . import models
    from .engine import gfpgan_noise

    kind = _kind(weight_path.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "gfpgan":
                module = models.NoiseFedGFPGAN(models.load_gfpgan(weight_path))
                noise = [torch.from_numpy(n) for n in gfpgan_noise(0)]
                names = [f"noise{i}" for i in range(len(noise))]
                args, inputs, outputs, axes = (torch.zeros(1, 3, 512, 512), *noise), ["input", *names], ["output"], None
            elif kind == "parser":
                module = models.ParsingOnly(models.load_parser(weight_path))
                args, inputs, outputs = (torch.zeros(1, 3, 512, 512),), ["input"], ["parsing"]
                axes = {"input": {2: "height", 3: "width"}, "parsing": {2: "height", 3: "width"}}
            else:
                module = models.load_detector(weight_path)
                args, inputs, outputs = (torch.zeros(1, 3, 640, 640),), ["input"], ["loc", "conf", "landmarks"]
                axes = {"input": {2: "height", 3: "width"}, **{name: {1: "anchors"} for name in outputs}}
            torch.onnx.export(
                module.eval(), args, str(tmp), input_names=inputs, output_names=outputs,
                dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_exported(weights_dir: Path, cache_dir: Path, weight_names: Sequence[str], *, in_subprocess: bool = True) -> dict[str, Path]:
    """The cached export of each file, exporting the missing ones (in a child process
    unless told otherwise, so this process stays free of torch)."""
    paths = {name: cached_path(weights_dir, cache_dir, name) for name in weight_names}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        log.info("exporting %s to ONNX in %s (once per weight file)", ", ".join(missing), cache_dir)
        if in_subprocess:
            command = [sys.executable, "-m", "processing.onnx_runtime", "export", "--weights-dir", str(weights_dir),
                       "--cache-dir", str(cache_dir), "--files", *missing]
            done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"ONNX export failed ({done.returncode}): {done.stderr[-2000:]}")
        else:
            for name in missing:
                export(weights_dir / name, paths[name])
    return paths


# -- sessions ------------------------------------------------------------------------

_allocator_lock = threading.Lock()
_shared_allocator = False


def _register_shared_allocator(ort) -> None:
    """One arena for every session in the process. The networks run one after another,
    so the process needs the largest one's scratch memory, not the sum of all three."""
    global _shared_allocator
    with _allocator_lock:
        if _shared_allocator:
            return
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # max_mem 0 (no limit), extend by what is requested (not by powers of two), defaults otherwise.
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
        _shared_allocator = True


def session(path: Path, threads: int = 0, optimization: str = "extended"):
    ort = _ort()
    _register_shared_allocator(ort)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    # Memory patterns pre-plan one block per input shape: faster for a fixed shape, but
    # the planned block for ParseNet was ~2.5 GB. The shared arena reuses freed chunks.
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def to_input(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 HxWx3 -> RGB float32 1x3xHxW in [-1, 1], as GFPGAN and ParseNet expect."""
    rgb = image_bgr[:, :, ::-1].astype(np.float32)
    rgb /= np.float32(255.0)
    rgb -= np.float32(0.5)
    rgb /= np.float32(0.5)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]


def to_image(output: np.ndarray) -> np.ndarray:
    """As basicsr.tensor2img(min_max=(-1, 1)): clamp, map to [0, 1], round, RGB -> BGR uint8."""
    rgb = np.clip(output[0], -1.0, 1.0).transpose(1, 2, 0)
    rgb = (rgb + np.float32(1.0)) / np.float32(2.0)
    return (rgb[:, :, ::-1] * np.float32(255.0)).round().astype(np.uint8)


class _OrtRunner:
    def __init__(self, path: Path, threads: int, optimization: str):
        self.session = session(path, threads, optimization)
        self.input_names = [i.name for i in self.session.get_inputs()]
        # Hand the arena's free chunks back after every call: the three networks run one
        # after another, and without this each one's scratch stays resident for the life
        # of the worker while the next one (and the paste-back) grows the process further.
        self.run_options = _ort().RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feed, self.run_options)


_ov_lock = threading.Lock()
_ov_core = None


def _openvino():
    global _ov_core
    with _ov_lock:
        if _ov_core is None:
            try:
                import openvino
            except ImportError as error:  # pragma: no cover - requirements pin it
                raise OnnxUnavailable("openvino is not installed; install requirements.txt or use ENGINE_BACKEND=onnx") from error
            _ov_core = openvino.Core()
        return _ov_core


class _OpenVinoRunner:
    """OpenVINO's CPU plugin on the same ONNX file. Inference precision is pinned to f32:
    on CPUs with bf16 support the plugin would otherwise default to bf16. Scratch memory
    is released after each call, since the three networks never run at the same time."""

    def __init__(self, path: Path, threads: int, optimization: str = ""):
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = _openvino().compile_model(str(path), "CPU", config)
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self._lock = threading.Lock()

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            request = self.compiled.create_infer_request()
            results = request.infer(feed)
            outputs = [np.array(results[port], copy=True) for port in self.compiled.outputs]
            del request, results
            self.compiled.release_memory()
        return outputs


RUNTIMES = {"onnxruntime": _OrtRunner, "openvino": _OpenVinoRunner}

# Which runtime runs which network, per engine backend (BENCHMARKS.md has the numbers).
# "openvino" (the default) was 20-30% faster than ONNX Runtime on all three networks on 2
# cores; it keeps GFPGAN's weights twice (about +350 MB resident), which still leaves a
# worker under 2 GB on a 12-megapixel photo. "onnxruntime" is the lean choice (about
# 450 MB less at peak) for a tighter memory limit.
BACKEND_RUNTIMES = {
    "openvino": {"gfpgan": "openvino", "parser": "openvino", "detector": "openvino"},
    "onnxruntime": {"gfpgan": "onnxruntime", "parser": "onnxruntime", "detector": "onnxruntime"},
}


def runner(path: Path, threads: int, runtime: str, kind: str):
    return RUNTIMES[runtime](path, threads, OPTIMIZATION[kind])


class OnnxRestorer:
    def __init__(self, path: Path, threads: int = 0, runtime: str = "onnxruntime"):
        self.run = runner(path, threads, runtime, "gfpgan")
        self.noise_names = [name for name in self.run.input_names if name.startswith("noise")]

    def __call__(self, crop_bgr: np.ndarray, noise: Sequence[np.ndarray]) -> np.ndarray:
        feed = {"input": to_input(crop_bgr), **dict(zip(self.noise_names, noise))}
        return to_image(self.run(feed)[0])


class OnnxParser:
    def __init__(self, path: Path, threads: int = 0, runtime: str = "onnxruntime"):
        self.run = runner(path, threads, runtime, "parser")

    def labels(self, face_bgr: np.ndarray) -> np.ndarray:
        logits = self.run({"input": to_input(face_bgr)})[0]
        return logits[0].argmax(axis=0)


# RetinaFace-ResNet50's configuration in facexlib (generate_config("resnet50")).
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_STEPS = (8, 16, 32)
_VARIANCE = (0.1, 0.2)
_MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


def priors(height: int, width: int) -> np.ndarray:
    """facexlib's PriorBox(image_size=(height, width)).forward(), vectorised: per feature
    map, row-major positions, each with its anchor sizes, as (cx, cy, w, h) float32."""
    parts = []
    for step, sizes in zip(_STEPS, _MIN_SIZES):
        rows, cols = ceil(height / step), ceil(width / step)
        cy = (np.arange(rows) + 0.5) * step / height
        cx = (np.arange(cols) + 0.5) * step / width
        anchors = np.empty((rows, cols, len(sizes), 4), np.float64)
        anchors[..., 0] = cx[None, :, None]
        anchors[..., 1] = cy[:, None, None]
        anchors[..., 2] = np.array(sizes, np.float64) / width
        anchors[..., 3] = np.array(sizes, np.float64) / height
        parts.append(anchors.reshape(-1, 4))
    return np.concatenate(parts).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS as torchvision.ops.nms: drop boxes whose IoU with a kept one exceeds
    ``threshold``; returns kept indices, highest score first."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]))
        h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[~(iou > threshold)]  # as torchvision: a NaN overlap (empty boxes) suppresses nothing
    return np.asarray(keep, dtype=np.int64)


class OnnxRetinaFace:
    """facexlib's RetinaFace.detect_faces (use_origin_size=True) with the network on ONNX
    Runtime or OpenVINO."""

    def __init__(self, path: Path, threads: int = 0, runtime: str = "onnxruntime"):
        self.run = runner(path, threads, runtime, "detector")
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def _priors_for(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        if key not in self._priors:
            self._priors = {key: priors(height, width)}  # keep only the latest size
        return self._priors[key]

    def detect_faces(self, image_bgr: np.ndarray, conf_threshold: float = 0.8, nms_threshold: float = 0.4) -> np.ndarray:
        height, width = image_bgr.shape[:2]
        inputs = (image_bgr.astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)[None]
        loc, conf, landmarks = self.run({"input": np.ascontiguousarray(inputs)})
        return decode_detections(loc, conf, landmarks, self._priors_for(height, width), height, width, conf_threshold, nms_threshold)


def decode_detections(loc, conf, landmarks, anchors, height, width, conf_threshold=0.8, nms_threshold=0.4) -> np.ndarray:
    """RetinaFace's raw outputs -> rows (x0, y0, x1, y1, score, 5 x (x, y)), best first, as
    facexlib's detect_faces (use_origin_size=True): decode, threshold, sort, NMS
    (``nms_threshold=None`` skips the NMS)."""
    centre, size = anchors[:, :2], anchors[:, 2:]
    loc, landmarks = loc[0], landmarks[0]
    scores = conf[0][:, 1]
    chosen = np.flatnonzero(scores > conf_threshold)
    if chosen.size == 0:
        return np.zeros((0, 15), np.float32)
    centre, size, loc, landmarks, scores = centre[chosen], size[chosen], loc[chosen], landmarks[chosen], scores[chosen]
    v0, v1 = np.float32(_VARIANCE[0]), np.float32(_VARIANCE[1])
    boxes = np.concatenate((centre + loc[:, :2] * v0 * size, size * np.exp(loc[:, 2:] * v1)), axis=1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    boxes *= np.array([width, height] * 2, np.float32)
    points = np.concatenate([centre + landmarks[:, 2 * k: 2 * k + 2] * v0 * size for k in range(5)], axis=1)
    points *= np.array([width, height] * 5, np.float32)
    order = np.argsort(-scores, kind="stable")
    boxes, points, scores = boxes[order], points[order], scores[order]
    rows = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
    keep = nms(rows[:, :4], rows[:, 4], nms_threshold) if nms_threshold is not None else slice(None)
    return np.concatenate((rows[keep], points[keep]), axis=1)


# -- command line ------------------------------------------------------------------------


def default_cache_dir(weights_dir: Path) -> Path:
    return Path(weights_dir) / "onnx"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processing.onnx_runtime", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("export", help="export the networks in a weights directory to ONNX (cached by SHA-256)")
    run.add_argument("--weights-dir", type=Path, required=True)
    run.add_argument("--cache-dir", type=Path, help="default: WEIGHTS_DIR/onnx")
    run.add_argument("--models", default="1.4,1.3", help="GFPGAN versions to export (default 1.4,1.3; those present)")
    run.add_argument("--files", nargs="*", help=argparse.SUPPRESS)  # exact files (used by ensure_exported)
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir(args.weights_dir)
    if args.files:
        names = list(args.files)
    else:
        names = [DETECTOR_FILE, PARSER_FILE]
        names += [GFPGAN_FILES[m] for m in args.models.split(",") if (args.weights_dir / GFPGAN_FILES[m.strip()]).is_file()]
    from .weights import require_weights

    require_weights(args.weights_dir, [m for m, name in GFPGAN_FILES.items() if name in names])
    for name in names:
        target = cached_path(args.weights_dir, cache_dir, name)
        if target.is_file():
            print(f"ok      {target} (cached)")
            continue
        export(args.weights_dir / name, target)
        print(f"export  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
