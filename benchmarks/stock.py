"""The stock pipeline, as the official inference script runs it, with stage timers.

``GFPGANer(model_path, upscale=2, arch='clean', channel_multiplier=2, bg_upsampler=None)``
and ``enhance(img, has_aligned, only_center_face=False, paste_back=True, weight=0.5)``,
with cv2 decode and encode around it (inference_gfpgan.py uses cv2.imread/imwrite).
Nothing in its math is changed; the harness only

- times its stages by wrapping the helper's methods and the two networks' forwards;
- pins the landmarks: ``get_face_landmarks_5`` still runs the real RetinaFace
  ``detect_faces`` on the full-resolution image (so its cost is measured) and then
  reports the pinned landmarks instead of what the stand-in detector found;
- hands GFPGAN's decoder the same noise our engine uses for the same face
  (``engine.networks.gfpgan_noise(seed + index)``, via ``architectures.forward_with_noise``) instead of
  letting it draw fresh noise from torch's generator, so outputs can be compared.

GFPGANer hard-codes ``model_rootpath='gfpgan/weights'`` relative to the working directory
for the detector and parser, and facexlib downloads missing files there: the caller runs
this in a scratch directory where gfpgan/weights/ holds symlinks to the weights, and
downloads are disabled outright.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from processing.checkpoints import compat  # noqa: F401  (torchvision alias, before gfpgan)


def _no_downloads() -> None:
    import facexlib.utils.misc as misc

    def refuse(url, *args, **kwargs):
        raise RuntimeError(f"the benchmark never downloads ({url}); weights must be in gfpgan/weights")

    misc.download_url_to_file = refuse


def prepare_workdir(workdir: Path, weights_dir: Path) -> None:
    from processing.checkpoints.weights import DETECTOR_FILE, PARSER_FILE

    target = workdir / "gfpgan" / "weights"
    target.mkdir(parents=True, exist_ok=True)
    for name in (DETECTOR_FILE, PARSER_FILE):
        link = target / name
        if not link.exists():
            link.symlink_to((weights_dir / name).resolve())


class StockPipeline:
    def __init__(self, weights_dir: Path, model: str = "1.4", upscale: int = 2, threads: int = 0, run_detector: bool = True):
        import torch

        from processing.checkpoints import architectures as models
        from processing.checkpoints.weights import GFPGAN_FILES

        if threads:
            torch.set_num_threads(threads)
        _no_downloads()
        if not Path("gfpgan/weights").is_dir():
            raise RuntimeError("run from a directory prepared with prepare_workdir()")
        from gfpgan import GFPGANer

        self.torch, self.models = torch, models
        self.restorer = GFPGANer(
            model_path=str(weights_dir / GFPGAN_FILES[model]), upscale=upscale, arch="clean",
            channel_multiplier=2, bg_upsampler=None,
        )
        self.timings: dict[str, float] = defaultdict(float)
        self._pinned: list[np.ndarray] = []
        self._noise: list = []
        self.run_detector = run_detector  # tests pin landmarks without paying for the forward
        self._instrument()

    def _instrument(self) -> None:
        helper = self.restorer.face_helper
        timings = self.timings
        torch = self.torch

        def timed(name, function):
            def wrapper(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    timings[name] += time.perf_counter() - started
            return wrapper

        def landmarks(only_keep_largest=False, only_center_face=False, resize=None, blur_ratio=0.01, eye_dist_threshold=None):
            started = time.perf_counter()
            if self.run_detector:
                with torch.no_grad():
                    helper.face_det.detect_faces(helper.input_img, 0.97)  # the real cost, result unused
            for marks in self._pinned:
                x0, y0 = marks.min(axis=0)
                x1, y1 = marks.max(axis=0)
                helper.all_landmarks_5.append(marks.copy())
                helper.det_faces.append(np.array([x0, y0, x1, y1, 1.0]))
            timings["detect"] += time.perf_counter() - started
            return len(helper.all_landmarks_5)

        helper.get_face_landmarks_5 = landmarks
        helper.align_warp_face = timed("align", helper.align_warp_face)
        paste = timed("paste", helper.paste_faces_to_input_image)
        helper.paste_faces_to_input_image = paste
        helper.get_inverse_affine = timed("paste", helper.get_inverse_affine)

        parser = helper.face_parse
        parse_forward = parser.forward
        parser.forward = timed("parse", parse_forward)

        net = self.restorer.gfpgan
        models = self.models
        noise = self._noise

        class WithGivenNoise(torch.nn.Module):
            """Stands in for GFPGANer.gfpgan: the same module and math, the given noise."""

            def forward(self, x, return_rgb=False, weight=0.5, **kwargs):
                started = time.perf_counter()
                try:
                    return models.forward_with_noise(net, x, noise.pop(0)), []
                finally:
                    timings["restore"] += time.perf_counter() - started

        self.restorer.gfpgan = WithGivenNoise()

    def run(self, data: bytes, landmarks: list, aligned: bool, noise_seed: int = 0) -> tuple[np.ndarray, bytes, dict]:
        """decode -> enhance -> encode, as inference_gfpgan.py; returns (image, png, timings)."""
        from processing.engine.networks import gfpgan_noise

        self.timings.clear()
        self._pinned[:] = [np.asarray(m, np.float64) for m in landmarks]
        self._noise[:] = [gfpgan_noise(noise_seed + i) for i in range(max(1, len(landmarks)))]
        started = time.perf_counter()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        self.timings["decode"] = time.perf_counter() - started
        _, restored_faces, restored = self.restorer.enhance(
            image, has_aligned=aligned, only_center_face=False, paste_back=True, weight=0.5
        )
        output = restored_faces[0] if aligned else restored
        self.timings["paste"] -= self.timings["parse"]  # parsing runs inside the paste-back
        started = time.perf_counter()
        ok, encoded = cv2.imencode(".png", output)
        assert ok
        self.timings["encode"] = time.perf_counter() - started
        return output, encoded.tobytes(), dict(self.timings)


def chdir_prepared(workdir: Path, weights_dir: Path) -> None:
    prepare_workdir(workdir, weights_dir)
    os.chdir(workdir)
