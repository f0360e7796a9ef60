"""What the engine tests share: comparison helpers, the stock GFPGAN pipeline on the
stand-in weights, and stand-in networks whose outputs are controlled so that a comparison
with the stock pipeline means something.

The stand-in RetinaFace's random heads report saturated scores (ties at 1.0) and boxes
hundreds of anchors wide, and the stand-in ParseNet labels nearly every pixel with a class
the blend mask keeps (a full mask: the paste-back then never shows the mask's shape). The
fixtures below change a few head parameters, identically in facexlib's torch module (the
one the stock pipeline runs) and in a copy of the exported graph (the one our engine runs),
so both sides still hold the same weights. The graphs are the fp32-weights export, as upstream's
modules hold fp32 weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from processing.engine.detectors import Face, HaarStandInDetector
from processing.engine.store import DETECTOR, PARSER, ModelStore
from tests.conftest import astronaut_bgr


@pytest.fixture(scope="session")
def astronaut_face() -> tuple[np.ndarray, np.ndarray]:
    """The 512x512 astronaut and its face's 5 landmarks (Haar box + FFHQ template)."""
    image = astronaut_bgr()
    faces = HaarStandInDetector(max_side=512).detect(image)
    assert faces, "the Haar cascade should find the astronaut's face"
    return image, faces[0].landmarks


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def pinned(landmarks: np.ndarray) -> Face:
    landmarks = np.asarray(landmarks, np.float64)
    return Face((*landmarks.min(axis=0), *landmarks.max(axis=0)), 1.0, landmarks)


def same_weights_edit(module, exported: Path, target: Path, new_value: Callable, prefix: str = "") -> Path:
    """Change parameters of the torch ``module`` and of a copy of its export (written to
    ``target``) alike. ``new_value(name, array)`` gives a parameter's new value, or None to
    keep it; the export names the module's parameter ``prefix + name``. Each changed
    parameter is first checked to hold the same value on both sides."""
    import onnx
    import torch
    from onnx import numpy_helper

    params = dict(module.named_parameters())
    graph = onnx.load(exported)
    changed = 0
    for initializer in graph.graph.initializer:
        name = initializer.name.removeprefix(prefix)
        if name not in params:
            continue
        old = numpy_helper.to_array(initializer)
        new = new_value(name, old)
        if new is None:
            continue
        np.testing.assert_array_equal(old, params[name].detach().numpy())
        new = np.ascontiguousarray(new, np.float32)
        initializer.CopyFrom(numpy_helper.from_array(new, initializer.name))
        params[name].data = torch.from_numpy(new.copy())
        changed += 1
    assert changed, "no parameter was changed"
    onnx.save(graph, target)
    return target


def stock_pipeline(weights_dir: Path, workdir: Path):
    """GFPGANer as the official script builds it (benchmarks/stock.py) on ``weights_dir``,
    fed our decoder noise and pinned landmarks."""
    from benchmarks.stock import StockPipeline, prepare_workdir

    prepare_workdir(workdir, weights_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # GFPGANer finds the detector and parser in ./gfpgan/weights
        return StockPipeline(weights_dir, threads=2, run_detector=False)


def restore_stock(stock, data: bytes, landmarks, upscale: int = 2, blend_mask: str = "parse"):
    """An encoded photo through the stock pipeline (decoded with IMREAD_COLOR, as
    inference_gfpgan.py does) on the given landmarks: the output and the restored faces."""
    helper = stock.restorer.face_helper
    helper.set_upscale_factor(upscale)
    helper.use_parse = blend_mask == "parse"  # GFPGANer's square mask when parsing is off
    try:
        output, _, _ = stock.run(data, landmarks, aligned=False, noise_seed=0)
    finally:
        helper.set_upscale_factor(2)
        helper.use_parse = True
    return output, list(helper.restored_faces)


@pytest.fixture(scope="session")
def stock(standin_weights, tmp_path_factory):
    """The stock pipeline on the stand-in weights."""
    return stock_pipeline(standin_weights, tmp_path_factory.mktemp("stock"))


# The stand-in RetinaFace's heads, scaled: class logits from hundreds to a few units (scores
# spread below 1, about 40 anchors of 3400 above GFPGAN's 0.97 on a 330x241 photo), box
# offsets from ~30 to ~1.5 (box sides within a few anchor sizes instead of exp(30) of them),
# landmark offsets so small that eye distances fall either side of the 5 px filter.
DETECTOR_HEAD_SCALES = {"ClassHead": 1 / 30, "BboxHead": 1 / 20, "LandmarkHead": 1 / 100}


@pytest.fixture(scope="session")
def scored_detector(stock, standin_models_fp32, tmp_path_factory) -> Path:
    """The stand-in RetinaFace with its heads scaled (DETECTOR_HEAD_SCALES) in the stock
    pipeline's facexlib module and in an exported graph, whose path this returns."""

    def scaled(name, array):
        head = name.split(".")[0]
        return array * np.float32(DETECTOR_HEAD_SCALES[head]) if head in DETECTOR_HEAD_SCALES else None

    target = tmp_path_factory.mktemp("scored") / "detector.onnx"
    return same_weights_edit(stock.restorer.face_helper.face_det, ModelStore(standin_models_fp32).path(DETECTOR), target,
                             scaled)


# ParseNet's classes that win most of a stand-in restored face are kept by the blend mask.
# Its output layer, amplified (so the image, not the bias, decides) and with the rows of
# class 0 (background, dropped) and class 15 (kept) swapped, labels large connected regions
# background: a mask with holes and edges, neither empty nor full.
SWAPPED_CLASSES = [0, 15]
PARSER_GAIN = 30.0


@pytest.fixture(scope="session")
def structured_parser(stock, standin_models_fp32, tmp_path_factory) -> Path:
    """The stand-in ParseNet with a structured mask, in the stock pipeline's module and in
    an exported graph, whose path this returns."""

    def swapped(name, array):
        if not name.startswith("out_mask_conv."):
            return None
        array = array * np.float32(PARSER_GAIN) if name.endswith("weight") else array.copy()
        array[SWAPPED_CLASSES] = array[SWAPPED_CLASSES[::-1]]
        return array

    target = tmp_path_factory.mktemp("structured") / "parser.onnx"
    return same_weights_edit(stock.restorer.face_helper.face_parse, ModelStore(standin_models_fp32).path(PARSER), target,
                             swapped, prefix="net.")


def stock_landmarks(stock, image: np.ndarray) -> list[np.ndarray]:
    """The landmarks GFPGANer's own detection gives ``image``: FaceRestoreHelper's
    get_face_landmarks_5 as ``enhance`` calls it (StockPipeline replaces it on its instance
    to pin landmarks, so the class's method is called here)."""
    import torch
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    helper = stock.restorer.face_helper
    helper.clean_all()
    helper.read_image(image)
    with torch.no_grad():
        FaceRestoreHelper.get_face_landmarks_5(helper, only_center_face=False, eye_dist_threshold=5)
    found = [np.array(marks, np.float64) for marks in helper.all_landmarks_5]
    helper.clean_all()
    return found
