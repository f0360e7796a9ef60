"""Finding faces: RetinaFace on a downscaled copy (the service's detector), and the Haar
cascade that stands in for it when the weights are stand-ins. Both give each face a box, a
score and the 5 landmarks (eyes, nose tip, mouth corners) in input pixels."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, Sequence

import cv2
import numpy as np

FACE_SIZE = 512
# FFHQ 5-point template (eyes, nose tip, mouth corners) in a 512x512 face, as facexlib uses.
FACE_TEMPLATE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]]
)
DETECTION_THRESHOLD = 0.97  # what GFPGANer uses
MIN_EYE_DISTANCE = 5.0  # pixels; smaller detections are side views or specks


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in input pixels
    score: float
    landmarks: np.ndarray  # 5 x 2, input pixels


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


def downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most ``max_side`` (0: no limit), and its scale."""
    longest = max(image.shape[:2])
    if not max_side or longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


class RetinaFaceDetector:
    """``net.detect_faces`` (facexlib's contract: rows of box, score, 5 landmarks, best first)
    on a copy at most ``max_side`` pixels, mapped back to input pixels."""

    name = "retinaface-resnet50"

    def __init__(self, net, max_side: int):
        self.net = net
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Face]:
        small, scale = downscaled(image, self.max_side)
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
        small, scale = downscaled(image, self.max_side)
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


def center_face(faces: Sequence[Face], width: int, height: int) -> Face:
    centre = np.array([width / 2, height / 2])
    return min(faces, key=lambda f: np.linalg.norm([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] - centre))


# A box chooses the detected face it overlaps most, if they overlap this much (IoU), or if
# the face's centre lies inside it: a hand-drawn box is rarely tight.
CHOSEN_IOU = 0.3


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def chosen_faces(faces: Sequence[Face], boxes: Sequence[Sequence[float]]) -> list[Face]:
    """The detected faces the caller's boxes point at, in the boxes' order, each at most once."""
    chosen: list[Face] = []
    for box in boxes:
        def fit(face: Face) -> float:
            cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
            inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
            return max(iou(face.box, box), 1.0 if inside else 0.0)

        candidates = [face for face in faces if all(face is not c for c in chosen) and fit(face) >= CHOSEN_IOU]
        if candidates:
            chosen.append(max(candidates, key=lambda face: (iou(face.box, box), face.score)))
    return chosen
