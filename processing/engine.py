"""GFPGAN face restoration: pixels in, pixels out.

The pipeline is the one ``GFPGANer.enhance`` runs (detect 5 landmarks with RetinaFace,
warp each face onto the FFHQ template, restore it with GFPGANv1Clean, blend it back with
a ParseNet-derived soft mask), reorganised for a small CPU machine:

- the detector sees a copy whose longer side is at most ``detect_max_side``; its cost
  grows with pixel count, and faces in a phone photo are far larger than it needs;
- paste-back works on the rectangle each face covers instead of full-frame float64
  images, so a 48-megapixel result never exists as floats;
- every network runs under ``torch.inference_mode`` with the thread count set once.

On the same landmarks the output equals the stock pipeline's to within rounding (see
benchmarks/). It knows nothing of storage, HTTP or Functions.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from . import _compat  # noqa: F401  (before anything imports basicsr)
from .weights import DETECTOR_FILE, GFPGAN_FILES, PARSER_FILE, WeightsError, is_standin_dir, require_weights

import torch

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
        with torch.inference_mode():
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


def _to_tensor(face_bgr: np.ndarray) -> torch.Tensor:
    rgb = np.ascontiguousarray(face_bgr[:, :, ::-1], dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).div_(255.0).sub_(0.5).div_(0.5)


def _to_image(output: torch.Tensor) -> np.ndarray:
    # As basicsr.tensor2img(min_max=(-1, 1)): clamp, map to [0, 1], round to uint8.
    rgb = output.squeeze(0).float().clamp_(-1, 1).add_(1).div_(2).permute(1, 2, 0).numpy()
    return (rgb[:, :, ::-1] * 255.0).round().astype(np.uint8)


def _covered_rect(matrix: np.ndarray, size: int, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The output rectangle a ``size`` square touches under ``matrix`` (face -> output),
    widened by ``margin`` face pixels for interpolation support, clipped to the frame."""
    lo, hi = -margin, size + margin
    corners = np.array([[lo, lo, 1], [hi, lo, 1], [lo, hi, 1], [hi, hi, 1]]) @ matrix.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


class Engine:
    """Owns the networks (loaded once per process, reused by every job) and runs restore()."""

    def __init__(
        self,
        weights_dir: Path,
        *,
        threads: int = 0,
        detect_max_side: int = 1024,
        models: Sequence[str] = ("1.4",),
        allow_standin: bool = False,
    ):
        from . import models as nets

        self.weights_dir = Path(weights_dir)
        self.standin = is_standin_dir(self.weights_dir)
        if self.standin and not allow_standin:
            raise WeightsError(
                f"{self.weights_dir} holds stand-in weights (random parameters, meaningless output); "
                "set STANDIN_WEIGHTS=true to run with them knowingly"
            )
        require_weights(self.weights_dir, models)
        if threads:
            torch.set_num_threads(threads)
        cv2.setNumThreads(max(1, torch.get_num_threads()))
        self._nets = nets
        self._restorers: dict[str, torch.nn.Module] = {}
        self._load_lock = threading.Lock()
        for model in models:
            self._restorer(model)
        self.parser = nets.load_parser(self.weights_dir / PARSER_FILE)
        retinaface = nets.load_detector(self.weights_dir / DETECTOR_FILE)
        self.retinaface = RetinaFaceDetector(retinaface, detect_max_side)
        self.detector: Detector = HaarStandInDetector(detect_max_side) if self.standin else self.retinaface

    @classmethod
    def from_settings(cls, settings) -> "Engine":
        return cls(
            settings.weights_dir,
            threads=settings.torch_threads,
            detect_max_side=settings.detect_max_side,
            allow_standin=settings.standin_weights,
        )

    def available_models(self) -> list[str]:
        return [m for m, name in GFPGAN_FILES.items() if (self.weights_dir / name).is_file()]

    def _restorer(self, model: str) -> torch.nn.Module:
        with self._load_lock:
            if model not in self._restorers:
                if model not in GFPGAN_FILES:
                    raise ValueError(f"unknown model {model!r}")
                require_weights(self.weights_dir, (model,))
                self._restorers[model] = self._nets.load_gfpgan(self.weights_dir / GFPGAN_FILES[model])
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
        for index, face in enumerate(found):
            progress(f"restoring face {index + 1}/{len(found)}", 0.1 + 0.7 * index / max(1, len(found)))
            started = time.perf_counter()
            matrix = cv2.estimateAffinePartial2D(face.landmarks, FACE_TEMPLATE, method=cv2.LMEDS)[0]
            crop = cv2.warpAffine(image, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_GREY)
            timings["align"] = timings.get("align", 0.0) + time.perf_counter() - started
            started = time.perf_counter()
            after = self._run_restorer(restorer, crop, options.noise_seed + index)
            timings["restore"] = timings.get("restore", 0.0) + time.perf_counter() - started
            restored.append(RestoredFace(face, crop, after))
            matrices.append(matrix)

        progress("compositing", 0.82)
        output = self._paste(image, restored, matrices, options, timings)
        for item in restored:
            item.after = self._apply_strength(item.before, item.after, options.strength)
        return RestoreResult(output, restored, timings)

    def _restore_aligned(self, image, restorer, options, progress, timings) -> RestoreResult:
        progress("restoring face 1/1", 0.1)
        started = time.perf_counter()
        crop = cv2.resize(image, (FACE_SIZE, FACE_SIZE))
        after = self._apply_strength(crop, self._run_restorer(restorer, crop, options.noise_seed), options.strength)
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

    def _run_restorer(self, restorer: torch.nn.Module, crop: np.ndarray, seed: int) -> np.ndarray:
        with torch.inference_mode():
            torch.manual_seed(seed)
            return _to_image(restorer(_to_tensor(crop), return_rgb=False, weight=0.5)[0])

    def face_mask(self, restored_face: np.ndarray) -> np.ndarray:
        """GFPGAN's paste-back mask: ParseNet's face classes, blurred twice, borders cleared."""
        with torch.inference_mode():
            parsing = self.parser(_to_tensor(restored_face))[0]
        labels = parsing.argmax(dim=1).squeeze(0).numpy()
        mask = PARSE_KEEP[labels]
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        edge = 10
        mask[:edge, :] = mask[-edge:, :] = 0
        mask[:, :edge] = mask[:, -edge:] = 0
        return mask / 255.0

    def _paste(self, image, restored: list[RestoredFace], matrices, options: RestoreOptions, timings) -> np.ndarray:
        started = time.perf_counter()
        height, width = image.shape[:2]
        scale = options.upscale
        out_w, out_h = int(width * scale), int(height * scale)
        output = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
        timings["upscale"] = time.perf_counter() - started
        timings.setdefault("parse", 0.0)
        timings.setdefault("paste", 0.0)
        for item, matrix in zip(restored, matrices):
            inverse = cv2.invertAffineTransform(matrix) * scale
            if scale > 1:
                inverse[:, 2] += 0.5 * scale  # GFPGAN's sub-pixel correction for upscaled output
            if options.strength <= 0:
                continue
            started = time.perf_counter()
            if options.blend_mask == "parse":
                mask_face = self.face_mask(item.after)
                timings["parse"] += time.perf_counter() - started
                started = time.perf_counter()
            x0, y0, x1, y1 = _covered_rect(inverse, FACE_SIZE, 3.0, out_w, out_h)
            if x1 <= x0 or y1 <= y0:
                continue
            local = inverse.copy()
            local[:, 2] -= (x0, y0)
            size = (x1 - x0, y1 - y0)
            face = cv2.warpAffine(item.after, local, size).astype(np.float32)
            if options.blend_mask == "parse":
                mask = cv2.warpAffine(mask_face, local, size, flags=cv2.INTER_CUBIC).astype(np.float32)
            else:
                mask = self._box_mask(local, size, scale)
            mask = mask[:, :, None] * np.float32(min(1.0, options.strength))
            region = output[y0:y1, x0:x1].astype(np.float32)
            output[y0:y1, x0:x1] = (mask * face + (1.0 - mask) * region).astype(np.uint8)
            timings["paste"] += time.perf_counter() - started
        return output

    @staticmethod
    def _box_mask(local: np.ndarray, size: tuple[int, int], scale: int) -> np.ndarray:
        # GFPGAN's mask when parsing is off: the warped square, eroded, then feathered in
        # proportion to the face's area.
        square = np.ones((FACE_SIZE, FACE_SIZE), np.float32)
        mask = cv2.warpAffine(square, local, size)
        mask = cv2.erode(mask, np.ones((int(2 * scale), int(2 * scale)), np.uint8))
        edge = int(math.sqrt(float(mask.sum()))) // 20
        mask = cv2.erode(mask, np.ones((edge * 2, edge * 2), np.uint8)) if edge else mask
        return cv2.GaussianBlur(mask, (edge * 2 + 1, edge * 2 + 1), 0) if edge else mask
