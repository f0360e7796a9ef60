"""GFPGAN face restoration: pixels in, pixels out.

The pipeline is the one ``GFPGANer.enhance`` runs (detect 5 landmarks with RetinaFace,
warp each face onto the FFHQ template, restore it with GFPGANv1Clean, blend it back with
a ParseNet-derived soft mask), reorganised for a small CPU machine:

- the networks run as ONNX exports (made once per weight file, cached on disk) on
  OpenVINO by default, or ONNX Runtime (``backend="onnxruntime"``, leaner); the serving
  process never imports torch. The torch backend runs the upstream modules directly and
  computes the same thing;
- the detector sees a copy whose longer side is at most ``detect_max_side``; its cost
  grows with pixel count, and faces in a phone photo are far larger than it needs;
- paste-back works on the rectangle each face covers instead of full-frame float64
  images, so a 48-megapixel result never exists as floats;
- GFPGAN's decoder noise is drawn from a per-face seed and fed in, so results are
  repeatable and can be compared with the stock pipeline given the same noise.

On the same landmarks and noise the output equals the stock pipeline's to within
rounding (benchmarks/, tests/engine/). It knows nothing of storage, HTTP or Functions.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from .weights import (BACKGROUND_FILE, DETECTOR_FILE, GFPGAN_FILES, PARSER_FILE, WeightsError, check, is_standin_dir,
                      require_weights)

log = logging.getLogger(__name__)

BACKENDS = ("openvino", "onnxruntime", "torch")
_BLEND_ROWS = 256

FACE_SIZE = 512
# FFHQ 5-point template (eyes, nose tip, mouth corners) in a 512x512 face, as facexlib uses.
FACE_TEMPLATE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]]
)
# Grey GFPGAN's helper fills outside the photo when a face touches its edge.
BORDER_GREY = (135, 133, 132)
DETECTION_THRESHOLD = 0.97  # what GFPGANer uses
MIN_EYE_DISTANCE = 5.0  # pixels; smaller detections are side views or specks
# facexlib's MASK_COLORMAP: which ParseNet classes the blend mask keeps (255) or drops (0).
PARSE_KEEP = np.array([0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0], np.float64)

Progress = Callable[[str, float], None]


def _no_progress(stage: str, fraction: float) -> None:
    pass


@dataclass(frozen=True)
class RestoreOptions:
    model: str = "1.4"
    upscale: int = 2
    only_center_face: bool = False
    aligned: bool = False  # the input is already a face aligned to the FFHQ template
    strength: float = 1.0  # 0 keeps the original face, 1 is GFPGAN's full restoration
    blend_mask: str = "parse"  # parse (as GFPGAN) | box (a feathered square, skips ParseNet)
    max_faces: int = 10
    noise_seed: int = 0  # GFPGAN injects random noise; a fixed seed makes results repeatable
    # Side of the face ParseNet sees for the paste-back mask. 512 is GFPGAN's (exact);
    # smaller is cheaper and changes the mask (BENCHMARKS.md has the measured difference).
    parse_size: int = FACE_SIZE
    # How the whole photo is enlarged under the faces: lanczos (as GFPGAN without a
    # background upsampler) or realesrgan (Real-ESRGAN x2 in tiles; slow on a CPU).
    background: str = "lanczos"


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in input pixels
    score: float
    landmarks: np.ndarray  # 5 x 2, input pixels


@dataclass
class RestoredFace:
    face: Face
    before: np.ndarray  # the aligned 512x512 crop of the input
    after: np.ndarray  # GFPGAN's 512x512 output (strength applied)


@dataclass
class RestoreResult:
    image: np.ndarray
    faces: list[RestoredFace]
    timings: dict[str, float] = field(default_factory=dict)


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


def _downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    longest = max(image.shape[:2])
    if not max_side or longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


class RetinaFaceDetector:
    name = "retinaface-resnet50"

    def __init__(self, net, max_side: int):
        self.net = net
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Face]:
        small, scale = _downscaled(image, self.max_side)
        rows = self.net.detect_faces(small, DETECTION_THRESHOLD)
        faces = []
        for row in rows:  # x0 y0 x1 y1 score, then 5 (x, y) landmarks
            landmarks = np.asarray(row[5:15], np.float64).reshape(5, 2) / scale
            if np.linalg.norm(landmarks[0] - landmarks[1]) < MIN_EYE_DISTANCE:
                continue
            faces.append(Face(tuple(float(v) / scale for v in row[:4]), float(row[4]), landmarks))
        return faces


class HaarStandInDetector:
    """Stand-in mode only. A RetinaFace with random parameters "finds" thousands of
    arbitrary faces, so stand-in mode locates faces with OpenCV's bundled Haar cascade
    and places the 5 landmarks where the FFHQ template puts them inside that box."""

    name = "opencv-haar (stand-in)"
    # Where a Haar face box sits inside the 512 template crop (measured on FFHQ-aligned faces).
    _BOX_IN_TEMPLATE = np.array([112.0, 150.0, 288.0, 288.0])

    def __init__(self, max_side: int):
        self.max_side = max_side or 1024
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        self._lock = threading.Lock()  # CascadeClassifier is not thread-safe

    def detect(self, image: np.ndarray) -> list[Face]:
        small, scale = _downscaled(image, self.max_side)
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        min_side = max(24, min(grey.shape[:2]) // 12)
        with self._lock:
            boxes = self._cascade.detectMultiScale(grey, 1.1, 6, minSize=(min_side, min_side))
        faces = []
        x_off, y_off, span, _ = self._BOX_IN_TEMPLATE
        for x, y, w, h in sorted((tuple(b) for b in boxes), key=lambda b: -b[2] * b[3]):
            template = (FACE_TEMPLATE - [x_off, y_off]) / span
            landmarks = (np.array([x, y]) + template * [w, h]) / scale
            box = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
            faces.append(Face(box, 1.0, landmarks))
        return faces


def _center_face(faces: Sequence[Face], width: int, height: int) -> Face:
    centre = np.array([width / 2, height / 2])
    return min(faces, key=lambda f: np.linalg.norm([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] - centre))


def _covered_rect(matrix: np.ndarray, size: int, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The output rectangle a ``size`` square touches under ``matrix`` (face -> output),
    widened by ``margin`` face pixels for interpolation support, clipped to the frame."""
    lo, hi = -margin, size + margin
    corners = np.array([[lo, lo, 1], [hi, lo, 1], [lo, hi, 1], [hi, hi, 1]]) @ matrix.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


# -- backends: the three networks behind one small interface each ----------------------
#
# restorer(crop_bgr, noise) -> restored 512x512 BGR uint8
# parser.labels(face_bgr) -> HxW ParseNet class indices for a square BGR face
# detector net .detect_faces(image_bgr, threshold) -> rows as facexlib's RetinaFace returns


class _TorchBackend:
    """The upstream torch modules, run directly (imports torch)."""

    name = "torch"

    def __init__(self, weights_dir: Path, threads: int):
        import torch

        from . import models

        if threads:
            torch.set_num_threads(threads)
        self.torch, self.models, self.weights_dir = torch, models, weights_dir
        self.threads = torch.get_num_threads()

    def restorer(self, weight_name: str):
        torch, models = self.torch, self.models
        from .onnx_runtime import to_image, to_input

        net = models.load_gfpgan(self.weights_dir / weight_name)
        lock = threading.Lock()  # forward_with_noise wraps the decoder for the call

        def run(crop: np.ndarray, noise) -> np.ndarray:
            with lock, torch.inference_mode():
                return to_image(models.forward_with_noise(net, torch.from_numpy(to_input(crop)), noise).numpy())

        return run

    def parser(self):
        torch = self.torch
        from .onnx_runtime import to_input

        net = self.models.load_parser(self.weights_dir / PARSER_FILE)

        class Parser:
            @staticmethod
            def labels(face: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return net(torch.from_numpy(to_input(face)))[0].argmax(dim=1)[0].numpy()

        return Parser()

    def detector(self):
        torch = self.torch
        net = self.models.load_detector(self.weights_dir / DETECTOR_FILE)

        class Detector:
            @staticmethod
            def detect_faces(image: np.ndarray, threshold: float) -> np.ndarray:
                with torch.inference_mode():
                    return net.detect_faces(image, threshold)

        return Detector()


class _OnnxBackend:
    """ONNX exports cached next to the weights, each network run by ONNX Runtime or
    OpenVINO as onnx_runtime.BACKEND_RUNTIMES says; no torch in this process."""

    def __init__(self, weights_dir: Path, threads: int, cache_dir: Path | None, name: str = "openvino"):
        from . import onnx_runtime

        self.name = name
        self.runtimes = onnx_runtime.BACKEND_RUNTIMES[name]
        self.ort, self.weights_dir, self.threads = onnx_runtime, weights_dir, threads
        self.cache_dir = self._usable_cache(Path(cache_dir) if cache_dir else onnx_runtime.default_cache_dir(weights_dir))

    @staticmethod
    def _usable_cache(preferred: Path) -> Path:
        try:
            preferred.mkdir(parents=True, exist_ok=True)
            if os.access(preferred, os.W_OK):
                return preferred
        except OSError:
            pass
        # A read-only weights directory whose exports were not baked in: export once per
        # process into a temporary directory (the Docker build should run the export).
        fallback = Path(tempfile.gettempdir()) / "face-restore-onnx"
        log.warning("ONNX cache %s is not writable; using %s", preferred, fallback)
        return fallback

    def _path(self, weight_name: str) -> Path:
        path = self.ort.cached_path(self.weights_dir, self.cache_dir, weight_name)
        if not path.is_file():
            self.ort.ensure_exported(self.weights_dir, self.cache_dir, [weight_name])
        return path

    def prepare(self, weight_names: Sequence[str]) -> None:
        """Export everything missing in one child process (one torch start, not three)."""
        self.ort.ensure_exported(self.weights_dir, self.cache_dir, list(weight_names))

    def restorer(self, weight_name: str):
        return self.ort.OnnxRestorer(self._path(weight_name), self.threads, self.runtimes["gfpgan"])

    def parser(self):
        return self.ort.OnnxParser(self._path(PARSER_FILE), self.threads, self.runtimes["parser"])

    def detector(self):
        return self.ort.OnnxRetinaFace(self._path(DETECTOR_FILE), self.threads, self.runtimes["detector"])


def _glibc_trim():
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return lambda: None
    return lambda: trim(0)


# Give freed heap pages back to the system. Loading the networks and each job's
# temporaries leave hundreds of MB free but resident in glibc's heap otherwise.
_release_heap = _glibc_trim()


def gfpgan_noise(seed: int) -> list[np.ndarray]:
    """GFPGAN's decoder noise for one face: 15 standard-normal maps from numpy's PCG64
    seeded with ``seed`` (the same function models.gfpgan_noise, without importing torch)."""
    rng = np.random.default_rng(seed)
    shapes = [(1, 1, 4, 4)] + [(1, 1, 2**res, 2**res) for res in range(3, 10) for _ in range(2)]
    return [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]


class Engine:
    """Owns the networks (loaded once per process, reused by every job) and runs restore()."""

    def __init__(
        self,
        weights_dir: Path,
        *,
        threads: int = 0,
        detect_max_side: int = 840,
        models: Sequence[str] = ("1.4",),
        allow_standin: bool = False,
        backend: str = "openvino",
        onnx_cache_dir: Path | None = None,
    ):
        self.weights_dir = Path(weights_dir)
        self.standin = is_standin_dir(self.weights_dir)
        if self.standin and not allow_standin:
            raise WeightsError(
                f"{self.weights_dir} holds stand-in weights (random parameters, meaningless output); "
                "set STANDIN_WEIGHTS=true to run with them knowingly"
            )
        if backend not in BACKENDS:
            raise ValueError(f"unknown engine backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        require_weights(self.weights_dir, models)
        if backend != "torch":
            self.backend = _OnnxBackend(self.weights_dir, threads, onnx_cache_dir, backend)
            self.backend.prepare([DETECTOR_FILE, PARSER_FILE, *(GFPGAN_FILES[m] for m in models)])
        else:
            self.backend = _TorchBackend(self.weights_dir, threads)
        cv2.setNumThreads(threads or os.cpu_count() or 1)
        self._restorers: dict[str, Callable] = {}
        self._background = None
        self._load_lock = threading.Lock()
        for model in models:
            self._restorer(model)
        self.parser = self.backend.parser()
        self.retinaface = RetinaFaceDetector(self.backend.detector(), detect_max_side)
        self.detector: Detector = HaarStandInDetector(detect_max_side) if self.standin else self.retinaface
        _release_heap()

    @classmethod
    def from_settings(cls, settings) -> "Engine":
        return cls(
            settings.weights_dir,
            threads=settings.torch_threads,
            detect_max_side=settings.detect_max_side,
            allow_standin=settings.standin_weights,
            backend=settings.engine_backend,
            onnx_cache_dir=Path(settings.onnx_cache_dir) if settings.onnx_cache_dir else None,
        )

    def background_upsampler(self):
        """Real-ESRGAN x2, loaded on first use (it brings torch into the process, which the
        default ONNX runtimes do not need)."""
        with self._load_lock:
            if self._background is None:
                from .background import RealESRGANUpsampler

                statuses = {s.name: s for s in check(self.weights_dir)}
                status = statuses.get(BACKGROUND_FILE)
                if status is None or not status.ok:
                    raise WeightsError(f"{BACKGROUND_FILE} is not installed (`weights fetch --all`)")
                self._background = RealESRGANUpsampler(self.weights_dir / BACKGROUND_FILE)
            return self._background

    def has_background_upsampler(self) -> bool:
        return (self.weights_dir / BACKGROUND_FILE).is_file()

    def available_models(self) -> list[str]:
        return [m for m, name in GFPGAN_FILES.items() if (self.weights_dir / name).is_file()]

    def _restorer(self, model: str) -> Callable:
        with self._load_lock:
            if model not in self._restorers:
                if model not in GFPGAN_FILES:
                    raise ValueError(f"unknown model {model!r}")
                require_weights(self.weights_dir, (model,))
                self._restorers[model] = self.backend.restorer(GFPGAN_FILES[model])
            return self._restorers[model]

    # -- the pipeline -------------------------------------------------------------

    def detect(self, image: np.ndarray, options: RestoreOptions) -> list[Face]:
        faces = self.detector.detect(image)
        if options.only_center_face and faces:
            faces = [_center_face(faces, image.shape[1], image.shape[0])]
        return faces[: options.max_faces]

    def restore(
        self,
        image: np.ndarray,
        options: RestoreOptions = RestoreOptions(),
        progress: Progress = _no_progress,
        *,
        faces: Sequence[Face] | None = None,
    ) -> RestoreResult:
        """Restore every face in a BGR uint8 image. ``faces`` pins the landmarks (tests,
        benchmarks); otherwise the detector finds them."""
        if not (64 <= options.parse_size <= FACE_SIZE and options.parse_size % 16 == 0):
            raise ValueError("parse_size must be a multiple of 16 between 64 and 512")
        timings: dict[str, float] = {}
        restorer = self._restorer(options.model)
        if options.aligned:
            return self._restore_aligned(image, restorer, options, progress, timings)

        progress("detecting", 0.05)
        started = time.perf_counter()
        found = list(faces) if faces is not None else self.detect(image, options)
        timings["detect"] = time.perf_counter() - started

        restored: list[RestoredFace] = []
        matrices = []
        timings["align"] = timings["restore"] = 0.0
        for index, face in enumerate(found):
            progress(f"restoring face {index + 1}/{len(found)}", 0.1 + 0.7 * index / max(1, len(found)))
            started = time.perf_counter()
            matrix = cv2.estimateAffinePartial2D(face.landmarks, FACE_TEMPLATE, method=cv2.LMEDS)[0]
            crop = cv2.warpAffine(image, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_GREY)
            timings["align"] += time.perf_counter() - started
            started = time.perf_counter()
            after = restorer(crop, gfpgan_noise(options.noise_seed + index))
            timings["restore"] += time.perf_counter() - started
            restored.append(RestoredFace(face, crop, after))
            matrices.append(matrix)

        progress("compositing", 0.82)
        output = self._paste(image, restored, matrices, options, timings)
        for item in restored:
            item.after = self._apply_strength(item.before, item.after, options.strength)
        _release_heap()
        return RestoreResult(output, restored, timings)

    def _restore_aligned(self, image, restorer, options, progress, timings) -> RestoreResult:
        progress("restoring face 1/1", 0.1)
        started = time.perf_counter()
        crop = cv2.resize(image, (FACE_SIZE, FACE_SIZE))
        timings["align"] = time.perf_counter() - started
        started = time.perf_counter()
        after = self._apply_strength(crop, restorer(crop, gfpgan_noise(options.noise_seed)), options.strength)
        timings["restore"] = time.perf_counter() - started
        h, w = image.shape[:2]
        face = Face((0.0, 0.0, float(w), float(h)), 1.0, FACE_TEMPLATE * [w / FACE_SIZE, h / FACE_SIZE])
        return RestoreResult(after, [RestoredFace(face, crop, after)], timings)

    @staticmethod
    def _apply_strength(before: np.ndarray, after: np.ndarray, strength: float) -> np.ndarray:
        if strength >= 1.0:
            return after
        mixed = before.astype(np.float32) * (1.0 - strength) + after.astype(np.float32) * strength
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)

    def face_mask(self, restored_face: np.ndarray, parse_size: int = FACE_SIZE) -> np.ndarray:
        """GFPGAN's paste-back mask: ParseNet's face classes, blurred twice, borders cleared.
        With ``parse_size`` < 512 ParseNet sees a downscaled face and its 0/255 mask is
        scaled back up before the blur (cheaper, not GFPGAN's exact mask)."""
        if parse_size == FACE_SIZE:
            mask = PARSE_KEEP[self.parser.labels(restored_face)]
        else:
            small = cv2.resize(restored_face, (parse_size, parse_size), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(PARSE_KEEP[self.parser.labels(small)], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        edge = 10
        mask[:edge, :] = mask[-edge:, :] = 0
        mask[:, :edge] = mask[:, -edge:] = 0
        return mask / 255.0

    def _paste(self, image, restored: list[RestoredFace], matrices, options: RestoreOptions, timings) -> np.ndarray:
        # Masks first: the parser's scratch memory is released before the (large) upscaled
        # output exists, so the two never add up.
        masks = [None] * len(restored)
        timings["parse"] = 0.0
        if options.blend_mask == "parse" and options.strength > 0:
            started = time.perf_counter()
            masks = [self.face_mask(item.after, options.parse_size) for item in restored]
            timings["parse"] = time.perf_counter() - started
        started = time.perf_counter()
        height, width = image.shape[:2]
        scale = options.upscale
        out_w, out_h = int(width * scale), int(height * scale)
        background = image
        if options.background == "realesrgan":
            # As GFPGANer with a bg_upsampler: Real-ESRGAN's x2, then Lanczos to the exact size.
            background = self.background_upsampler().upscale(image)
            timings["background"] = time.perf_counter() - started
            started = time.perf_counter()
        output = cv2.resize(background, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
        del background
        timings["upscale"] = time.perf_counter() - started
        timings["paste"] = 0.0
        for item, matrix, mask_face in zip(restored, matrices, masks):
            inverse = cv2.invertAffineTransform(matrix) * scale
            if scale > 1:
                inverse[:, 2] += 0.5 * scale  # GFPGAN's sub-pixel correction for upscaled output
            if options.strength <= 0:
                continue
            started = time.perf_counter()
            x0, y0, x1, y1 = _covered_rect(inverse, FACE_SIZE, 3.0, out_w, out_h)
            if x1 <= x0 or y1 <= y0:
                continue
            local = inverse.copy()
            local[:, 2] -= (x0, y0)
            size = (x1 - x0, y1 - y0)
            face = cv2.warpAffine(item.after, local, size)
            if options.blend_mask == "parse":
                # facexlib passes flags=3 (INTER_AREA), which warpAffine treats as bilinear:
                # no overshoot, so the mask stays in [0, 1] and the blend in [0, 255].
                mask = cv2.warpAffine(mask_face, local, size, flags=cv2.INTER_LINEAR).astype(np.float32)
                inside = None
            else:
                mask, inside = self._box_mask(local, size, scale)
            self._blend(output[y0:y1, x0:x1], face, mask, inside, np.float32(min(1.0, options.strength)))
            timings["paste"] += time.perf_counter() - started
        return output

    @staticmethod
    def _blend(region: np.ndarray, face: np.ndarray, mask: np.ndarray, inside, strength: np.float32) -> np.ndarray:
        """region = mask * face + (1 - mask) * region, in float32 strips of rows so a large
        face never needs more than a few MB of floats (GFPGAN blends the whole frame in float64)."""
        for top in range(0, region.shape[0], _BLEND_ROWS):
            rows = slice(top, top + _BLEND_ROWS)
            m = mask[rows, :, None] * strength
            f = face[rows].astype(np.float32)
            if inside is not None:  # the box mask's face is cut by the eroded square, as GFPGAN does
                f *= inside[rows, :, None]
            r = region[rows].astype(np.float32)
            region[rows] = (m * f + (1.0 - m) * r).astype(np.uint8)
        return region

    @staticmethod
    def _box_mask(local: np.ndarray, size: tuple[int, int], scale: int) -> tuple[np.ndarray, np.ndarray]:
        """GFPGAN's mask when parsing is off: the warped square eroded by the upscale (which
        also cuts the face), then eroded again and feathered in proportion to the face's
        area. Returns (soft mask, eroded square)."""
        square = np.ones((FACE_SIZE, FACE_SIZE), np.float32)
        inside = cv2.warpAffine(square, local, size)
        inside = cv2.erode(inside, np.ones((int(2 * scale), int(2 * scale)), np.uint8))
        edge = int(math.sqrt(float(inside.sum()))) // 20
        if not edge:
            return inside, inside
        centre = cv2.erode(inside, np.ones((edge * 2, edge * 2), np.uint8))
        return cv2.GaussianBlur(centre, (edge * 2 + 1, edge * 2 + 1), 0), inside
