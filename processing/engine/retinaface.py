"""RetinaFace-ResNet50 at run time: facexlib's ``RetinaFace.detect_faces``
(use_origin_size=True) with the network exported and its pre- and post-processing
(mean subtraction, priors, box and landmark decoding, threshold, NMS) in numpy."""

from __future__ import annotations

from math import ceil
from pathlib import Path

import numpy as np

from .runtimes import runner

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


class RetinaFaceNet:
    """facexlib's RetinaFace.detect_faces (use_origin_size=True) with the network on ONNX
    Runtime or OpenVINO."""

    def __init__(self, path: Path, threads: int = 0, runtime: str = "openvino"):
        self.run = runner(path, threads, runtime)
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


