"""The reference backend: the upstream torch modules behind the engine's Backend interface.

The service never runs it (the run time has no torch); tests and benchmarks do, to show
that the exported graphs compute what upstream computes, network by network and for the
whole pipeline (``Engine(TorchBackend(weights_dir))``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from . import architectures
from .weights import BACKGROUND_FILE, DETECTOR_FILE, GFPGAN_FILES, PARSER_FILE, is_standin_dir
from ..engine.networks import to_image, to_input


class TorchBackend:
    name = "torch"

    def __init__(self, weights_dir: Path, threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.weights_dir = Path(weights_dir)
        self.standin = is_standin_dir(self.weights_dir)

    def precision_for(self, asked: str | None) -> str:
        return "f32"  # torch's CPU modules in their parameters' dtype

    def versions(self) -> list[str]:
        return [v for v, name in GFPGAN_FILES.items() if (self.weights_dir / name).is_file()]

    def has_background(self) -> bool:
        return (self.weights_dir / BACKGROUND_FILE).is_file()

    def restorer(self, version: str):
        net = architectures.load_gfpgan(self.weights_dir / GFPGAN_FILES[version])
        lock = threading.Lock()  # forward_with_noise wraps the decoder for the call

        def run(crop: np.ndarray, noise) -> np.ndarray:
            with lock, torch.inference_mode():
                return to_image(architectures.forward_with_noise(net, torch.from_numpy(to_input(crop)), noise).numpy())

        return run

    def parser(self):
        net = architectures.load_parser(self.weights_dir / PARSER_FILE)

        class Parser:
            @staticmethod
            def labels(face: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return net(torch.from_numpy(to_input(face)))[0].argmax(dim=1)[0].numpy()

        return Parser()

    def detector(self):
        net = architectures.load_detector(self.weights_dir / DETECTOR_FILE)

        class Detector:
            @staticmethod
            def detect_faces(image: np.ndarray, threshold: float) -> np.ndarray:
                with torch.inference_mode():
                    return net.detect_faces(image, threshold)

        return Detector()

    def background(self):
        net = architectures.load_realesrgan(self.weights_dir / BACKGROUND_FILE)

        def run(tile: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(tile)).numpy()

        return run
