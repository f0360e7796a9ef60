"""The restorer, the face parser and the background upsampler at run time: each an exported
graph on a runner (runtimes.py) with the pre- and post-processing its upstream code does
in torch, re-done in numpy so that it computes the same thing.

- GFPGANv1Clean, with its decoder noise as 15 inputs (``gfpgan_noise``);
- ParseNet's parsing logits, any square input size;
- Real-ESRGAN x2 (RRDBNet), any even input size, run in tiles (upsampler.py).

The detector is in retinaface.py. ``OnnxBackend`` hands all four to the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .retinaface import RetinaFaceNet
from .runtimes import F32, Runtime, runner
from .store import BACKGROUND, DETECTOR, GFPGAN_ROLES, PARSER, ModelStore


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


def gfpgan_noise(seed: int) -> list[np.ndarray]:
    """GFPGAN's decoder noise for one face: 15 standard-normal maps from numpy's PCG64
    seeded with ``seed``. Upstream draws it inside the forward from torch's generator;
    here it is an input, so results repeat and the stock pipeline can be handed the same
    numbers when outputs are compared."""
    rng = np.random.default_rng(seed)
    shapes = [(1, 1, 4, 4)] + [(1, 1, 2**res, 2**res) for res in range(3, 10) for _ in range(2)]
    return [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]


class GfpganRestorer:
    """crop (512x512 BGR uint8), noise -> restored 512x512 BGR uint8."""

    def __init__(self, path: Path, threads: int = 0, runtime: "str | Runtime" = "openvino"):
        self.run = runner(path, threads, runtime)
        self.noise_names = [name for name in self.run.input_names if name.startswith("noise")]

    def __call__(self, crop_bgr: np.ndarray, noise: Sequence[np.ndarray]) -> np.ndarray:
        feed = {"input": to_input(crop_bgr), **dict(zip(self.noise_names, noise))}
        return to_image(self.run(feed)[0])


class ParseNetParser:
    def __init__(self, path: Path, threads: int = 0, runtime: "str | Runtime" = "openvino"):
        self.run = runner(path, threads, runtime)

    def labels(self, face_bgr: np.ndarray) -> np.ndarray:
        """HxW ParseNet class indices for a square BGR face."""
        logits = self.run({"input": to_input(face_bgr)})[0]
        return logits[0].argmax(axis=0)


class RealEsrganNet:
    """One tile: RGB float32 1x3xHxW in [0, 1] (even sides) -> 1x3x2Hx2W, as RRDBNet's forward."""

    def __init__(self, path: Path, threads: int = 0, runtime: "str | Runtime" = "openvino"):
        self.run = runner(path, threads, runtime)

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        return self.run({"input": tile})[0]


class OnnxBackend:
    """The networks of a model store on one runtime (ENGINE_BACKEND), in one precision
    (``Runtime.precision``, resolved from ENGINE_PRECISION by ``runtimes.plan``)."""

    def __init__(self, store: ModelStore, threads: int = 0, runtime: "str | Runtime" = "openvino"):
        self.runtime = Runtime(runtime) if isinstance(runtime, str) else runtime
        self.store, self.threads, self.name = store, threads, self.runtime.name
        self._made: list = []

    def _made_with(self, network):
        self._made.append(network.run)
        return network

    def precision_for(self, asked: str | None) -> str:
        """What the networks compiled so far for a job asking ``asked`` ("f32", or None/"auto"
        for the engine's own) compute in, as the runtime reports them; "" if none is."""
        asked = F32 if asked == F32 else None
        return "+".join(sorted({precision for run in self._made if (precision := run.ran(asked))}))

    @property
    def standin(self) -> bool:
        return self.store.standin

    def versions(self) -> list[str]:
        return self.store.gfpgan_versions()

    def has_background(self) -> bool:
        return self.store.has(BACKGROUND)

    def restorer(self, version: str):
        return self._made_with(GfpganRestorer(self.store.path(GFPGAN_ROLES[version]), self.threads, self.runtime))

    def parser(self):
        return self._made_with(ParseNetParser(self.store.path(PARSER), self.threads, self.runtime))

    def detector(self):
        return self._made_with(RetinaFaceNet(self.store.path(DETECTOR), self.threads, self.runtime))

    def background(self):
        return self._made_with(RealEsrganNet(self.store.path(BACKGROUND), self.threads, self.runtime))
