"""GFPGAN face restoration: pixels in, pixels out.

The pipeline is the one ``GFPGANer.enhance`` runs (detect 5 landmarks with RetinaFace,
warp each face onto the FFHQ template, restore it with GFPGANv1Clean, blend it back with
a ParseNet-derived soft mask), reorganised for a small CPU machine:

- the networks run as ONNX exports made at build time (store.py) on OpenVINO by default,
  or ONNX Runtime (leaner); the process never imports torch. The build's torch backend
  (processing/checkpoints/torch_backend.py) runs the upstream modules behind the same interface,
  as the reference the tests compare with;
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

import functools
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from .detectors import (FACE_SIZE, FACE_TEMPLATE, Detector, Face, HaarStandInDetector, RetinaFaceDetector, SecondPass,
                        center_face, chosen_faces)
from .memory import release_heap
from .networks import OnnxBackend, gfpgan_noise
from .runtimes import Plan, Runtime, computing, plan
from .stages import Observer, Stages
from .store import GFPGAN_ROLES, ModelsError, ModelStore
from .texture import add_texture
from .tone import COLOUR
from .tone import analyse as analyse_tone
from .upsampler import TiledUpsampler

_BLEND_ROWS = 256

# Grey GFPGAN's helper fills outside the photo when a face touches its edge.
BORDER_GREY = (135, 133, 132)
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
    # auto: monochrome and toned photos keep their tone (tone.py); keep: always take the
    # photo's tone; restore: GFPGAN's colours as they come.
    color: str = "auto"
    # 0-1: how much of the original face's fine detail and grain comes back (texture.py).
    texture: float = 0.0
    # auto: the second detection pass (detectors.SecondPass) runs where its plan says; off: never.
    small_faces: str = "auto"
    # Restore only the detected faces these boxes (x0, y0, x1, y1, input pixels) point at.
    face_boxes: tuple[tuple[float, float, float, float], ...] | None = None
    # auto: the engine's precision (ENGINE_PRECISION); f32: every network in f32 for this job.
    precision: str = "auto"


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
    tone: str = ""  # monochrome | toned | colour, as read from the photo ("" with color=restore)
    precision: str = ""  # what the networks ran in (f32 | bf16), as the runtime reports it; "" if none ran


def _covered_rect(matrix: np.ndarray, size: int, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The output rectangle a ``size`` square touches under ``matrix`` (face -> output),
    widened by ``margin`` face pixels for interpolation support, clipped to the frame."""
    lo, hi = -margin, size + margin
    corners = np.array([[lo, lo, 1], [hi, lo, 1], [lo, hi, 1], [hi, hi, 1]]) @ matrix.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


class Backend(Protocol):
    """Where the networks come from: the exported models on a runtime (networks.OnnxBackend),
    or the upstream torch modules (the build's reference backend)."""

    name: str
    standin: bool

    def versions(self) -> list[str]: ...
    def has_background(self) -> bool: ...
    def restorer(self, version: str) -> Callable[[np.ndarray, Sequence[np.ndarray]], np.ndarray]: ...
    def parser(self): ...
    def detector(self): ...
    def background(self) -> Callable[[np.ndarray], np.ndarray]: ...
    def precision_for(self, asked: str | None) -> str: ...


def _in_asked_precision(method):
    """An engine entry point whose networks compute in the precision its options ask for; a
    restore's result says what they ran in."""

    @functools.wraps(method)
    def in_precision(self, image, options=RestoreOptions(), *args, **kwargs):
        with computing(options.precision) as computed:
            result = method(self, image, options, *args, **kwargs)
        if isinstance(result, RestoreResult):
            result.precision = computed.precision
        return result

    return in_precision


class Engine:
    """Owns the networks (loaded once per process, reused by every job) and runs restore()."""

    def __init__(
        self,
        backend: Backend,
        *,
        detect_max_side: int = 840,
        detect_second_pass_max_side: int = 2520,
        models: Sequence[str] = ("1.4",),
        allow_standin: bool = False,
        threads: int = 0,
    ):
        self.backend = backend
        self.standin = backend.standin
        if self.standin and not allow_standin:
            raise ModelsError(
                "the models are stand-ins (random parameters, meaningless output); "
                "set STANDIN_WEIGHTS=true to run with them knowingly"
            )
        cv2.setNumThreads(threads or os.cpu_count() or 1)
        self._restorers: dict[str, Callable] = {}
        self._background: TiledUpsampler | None = None
        self._load_lock = threading.Lock()
        for model in models:
            self._restorer(model)
        self.parser = backend.parser()
        self.retinaface = RetinaFaceDetector(backend.detector(), detect_max_side)
        self.detector: Detector = HaarStandInDetector(detect_max_side) if self.standin else self.retinaface
        self.second_pass = SecondPass(detect_second_pass_max_side)  # around whichever detector runs
        release_heap()

    @classmethod
    def open(cls, models_dir: Path, *, runtime: str = "openvino", threads: int = 0, precision: str = "auto",
             **options) -> "Engine":
        """The engine on the exported models in ``models_dir``, in the precision ``precision``
        (ENGINE_PRECISION: auto | f32 | bf16) resolves to on this CPU."""
        chosen = plan(runtime, precision)
        engine = cls(OnnxBackend(ModelStore(models_dir), threads, Runtime(runtime, chosen.precision)), threads=threads,
                     **options)
        engine.plan = chosen
        return engine

    @classmethod
    def from_settings(cls, settings) -> "Engine":
        return cls.open(
            settings.models_dir,
            runtime=settings.engine_backend,
            threads=settings.engine_threads,
            detect_max_side=settings.detect_max_side,
            detect_second_pass_max_side=settings.detect_second_pass_max_side,
            allow_standin=settings.standin_weights,
            precision=settings.engine_precision,
        )

    plan: Plan | None = None  # how the precision was chosen (None: a backend given directly)

    def __str__(self) -> str:
        why = f" ({self.plan.describe()})" if self.plan is not None else ""
        return (f"{self.backend.name}, {self.precision_for('auto')}{why}, models "
                f"{', '.join(sorted(self._restorers))}{', stand-ins' if self.standin else ''}")

    def precision_for(self, asked: str = "auto") -> str:
        """What the networks compiled for a job asking ``asked`` (auto | f32) compute in, as
        the runtime reports them ("" if none is compiled for it)."""
        return self.backend.precision_for(asked)

    def background_upsampler(self) -> TiledUpsampler:
        """Real-ESRGAN x2, loaded on first use (most jobs never ask for it)."""
        with self._load_lock:
            if self._background is None:
                if not self.backend.has_background():
                    raise ModelsError("the Real-ESRGAN background model is not installed")
                self._background = TiledUpsampler(self.backend.background())
            return self._background

    def has_background_upsampler(self) -> bool:
        return self.backend.has_background()

    def available_models(self) -> list[str]:
        return self.backend.versions()

    def _restorer(self, model: str) -> Callable:
        with self._load_lock:
            if model not in self._restorers:
                if model not in GFPGAN_ROLES:
                    raise ValueError(f"unknown model {model!r}")
                self._restorers[model] = self.backend.restorer(model)
            return self._restorers[model]

    # -- the pipeline -------------------------------------------------------------

    @_in_asked_precision
    def detect(self, image: np.ndarray, options: RestoreOptions, stage: Stages | None = None,
               progress: Progress = _no_progress) -> list[Face]:
        """The detector's faces, and the second pass's where it runs (timed as ``detect_pass2``)."""
        stage = stage or Stages()
        stage.timings.setdefault("detect_pass2", 0.0)
        faces = self.detector.detect(image)
        tiling = None if options.small_faces == "off" else self.second_pass.plan(
            self.detector, image.shape, faces, options.max_faces)
        if tiling is not None:
            progress("detecting small faces", 0.07)
            with stage("detect_pass2", tiles=len(tiling.origins)):
                faces = self.second_pass.run(self.detector, image, tiling, faces)
            release_heap()  # its larger copy and tiles' scratch, before the faces are restored
        if options.face_boxes is not None:
            faces = chosen_faces(faces, options.face_boxes)
        elif options.only_center_face and faces:
            faces = [center_face(faces, image.shape[1], image.shape[0])]
        return faces[: options.max_faces]

    @_in_asked_precision
    def restore(
        self,
        image: np.ndarray,
        options: RestoreOptions = RestoreOptions(),
        progress: Progress = _no_progress,
        *,
        faces: Sequence[Face] | None = None,
        observe: Observer | None = None,
    ) -> RestoreResult:
        """Restore every face in a BGR uint8 image. ``faces`` pins the landmarks (tests,
        benchmarks); otherwise the detector finds them. ``observe(stage, attributes)``, a
        context manager, sees each stage as it runs (the worker traces them)."""
        if not (64 <= options.parse_size <= FACE_SIZE and options.parse_size % 16 == 0):
            raise ValueError("parse_size must be a multiple of 16 between 64 and 512")
        stage = Stages(observe, "align", "restore", "parse")
        restorer = self._restorer(options.model)
        tone = None
        if options.color != "restore":
            with stage("tone"):
                tone = analyse_tone(image)

        def finish(crop: np.ndarray, after: np.ndarray, index: int) -> np.ndarray:
            """The restored face with the original's texture and the photo's tone, as asked."""
            if options.texture > 0:
                with stage("texture", face=index):
                    after = add_texture(after, crop, options.texture)
            if tone is not None and (options.color == "keep" or tone.kind != COLOUR):
                with stage("tone", face=index):
                    after = tone.keeps(after)
            return after

        if options.aligned:
            result = self._restore_aligned(image, restorer, options, progress, stage, finish)
            result.tone = tone.kind if tone else ""
            return result

        progress("detecting", 0.05)
        with stage("detect"):
            found = list(faces) if faces is not None else self.detect(image, options, stage, progress)

        restored: list[RestoredFace] = []
        matrices = []
        for index, face in enumerate(found):
            progress(f"restoring face {index + 1}/{len(found)}", 0.1 + 0.7 * index / max(1, len(found)))
            with stage("align", face=index):
                matrix = cv2.estimateAffinePartial2D(face.landmarks, FACE_TEMPLATE, method=cv2.LMEDS)[0]
                crop = cv2.warpAffine(image, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT,
                                      borderValue=BORDER_GREY)
            with stage("restore", span="restore face", face=index, model=options.model):
                after = restorer(crop, gfpgan_noise(options.noise_seed + index))
            restored.append(RestoredFace(face, crop, finish(crop, after, index)))
            matrices.append(matrix)

        progress("compositing", 0.82)
        output = self._paste(image, restored, matrices, options, stage)
        for item in restored:
            item.after = self._apply_strength(item.before, item.after, options.strength)
        release_heap()
        return RestoreResult(output, restored, stage.timings, tone.kind if tone else "")

    def _restore_aligned(self, image, restorer, options, progress, stage: Stages, finish) -> RestoreResult:
        progress("restoring face 1/1", 0.1)
        with stage("align", face=0):
            crop = cv2.resize(image, (FACE_SIZE, FACE_SIZE))
        with stage("restore", span="restore face", face=0, model=options.model):
            restored = restorer(crop, gfpgan_noise(options.noise_seed))
        after = self._apply_strength(crop, finish(crop, restored, 0), options.strength)
        h, w = image.shape[:2]
        face = Face((0.0, 0.0, float(w), float(h)), 1.0, FACE_TEMPLATE * [w / FACE_SIZE, h / FACE_SIZE])
        return RestoreResult(after, [RestoredFace(face, crop, after)], stage.timings)

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

    def _paste(self, image, restored: list[RestoredFace], matrices, options: RestoreOptions, stage: Stages) -> np.ndarray:
        # Masks first: the parser's scratch memory is released before the (large) upscaled
        # output exists, so the two never add up.
        masks = [None] * len(restored)
        if options.blend_mask == "parse" and options.strength > 0:
            with stage("parse"):
                masks = [self.face_mask(item.after, options.parse_size) for item in restored]
        height, width = image.shape[:2]
        scale = options.upscale
        out_w, out_h = int(width * scale), int(height * scale)
        background = image
        if options.background == "realesrgan":
            # As GFPGANer with a bg_upsampler: Real-ESRGAN's x2, then Lanczos to the exact size.
            with stage("background"):
                background = self.background_upsampler().upscale(image)
        with stage("upscale"):
            output = cv2.resize(background, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
        del background
        with stage("paste"):
            for item, matrix, mask_face in zip(restored, matrices, masks):
                if options.strength > 0:
                    self._paste_one(output, item.after, matrix, mask_face, options)
        return output

    def _paste_one(self, output: np.ndarray, after: np.ndarray, matrix, mask_face, options: RestoreOptions) -> None:
        scale = options.upscale
        out_h, out_w = output.shape[:2]
        inverse = cv2.invertAffineTransform(matrix) * scale
        if scale > 1:
            inverse[:, 2] += 0.5 * scale  # GFPGAN's sub-pixel correction for upscaled output
        x0, y0, x1, y1 = _covered_rect(inverse, FACE_SIZE, 3.0, out_w, out_h)
        if x1 <= x0 or y1 <= y0:
            return
        local = inverse.copy()
        local[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        face = cv2.warpAffine(after, local, size)
        if options.blend_mask == "parse":
            # facexlib passes flags=3 (INTER_AREA), which warpAffine treats as bilinear:
            # no overshoot, so the mask stays in [0, 1] and the blend in [0, 255].
            mask = cv2.warpAffine(mask_face, local, size, flags=cv2.INTER_LINEAR).astype(np.float32)
            inside = None
        else:
            mask, inside = self._box_mask(local, size, scale)
        self._blend(output[y0:y1, x0:x1], face, mask, inside, np.float32(min(1.0, options.strength)))

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
