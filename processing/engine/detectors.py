"""Finding faces: RetinaFace on a downscaled copy (the service's detector), and the Haar
cascade that stands in for it when the weights are stand-ins. Both give each face a box, a
score and the 5 landmarks (eyes, nose tip, mouth corners) in input pixels.

The second pass (``SecondPass``) wraps whichever of the two runs: when a large photo's
faces came out near the smallest size the detector sees on its copy (or none came out),
it detects again on overlapping tiles of a larger copy and merges what it finds with the
first pass's faces."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from math import ceil, sqrt
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
    max_side: int  # the longer side of the copy it detects on (0: the image itself)

    def detect(self, image: np.ndarray) -> list[Face]: ...

    def min_face(self, shape: Sequence[int]) -> float:
        """The smallest face side it finds in an image of ``shape``, in that image's pixels."""
        ...


def scale_for(shape: Sequence[int], max_side: int) -> float:
    """The scale of a copy of an image of ``shape`` whose longer side is at most ``max_side``
    (0: no limit)."""
    longest = max(shape[:2])
    return 1.0 if not max_side or longest <= max_side else max_side / longest


def scaled_size(shape: Sequence[int], scale: float) -> tuple[int, int]:
    """(width, height) of an image of ``shape`` scaled by ``scale``."""
    return max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale))


def downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most ``max_side`` (0: no limit), and its scale."""
    scale = scale_for(image.shape, max_side)
    if scale == 1.0:
        return image, 1.0
    return cv2.resize(image, scaled_size(image.shape, scale), interpolation=cv2.INTER_AREA), scale


class RetinaFaceDetector:
    """``net.detect_faces`` (facexlib's contract: rows of box, score, 5 landmarks, best first)
    on a copy at most ``max_side`` pixels, mapped back to input pixels."""

    name = "retinaface-resnet50"
    # Its smallest anchor (retinaface._MIN_SIZES), in pixels of the copy it sees.
    MIN_FACE = 16.0

    def __init__(self, net, max_side: int):
        self.net = net
        self.max_side = max_side

    def min_face(self, shape: Sequence[int]) -> float:
        return self.MIN_FACE / scale_for(shape, self.max_side)

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

    @staticmethod
    def _min_side(width: int, height: int) -> int:
        """The smallest box it looks for on the copy: 1/12 of its shorter side, at least 24."""
        return max(24, min(width, height) // 12)

    def min_face(self, shape: Sequence[int]) -> float:
        scale = scale_for(shape, self.max_side)
        return self._min_side(*scaled_size(shape, scale)) / scale

    def detect(self, image: np.ndarray) -> list[Face]:
        small, scale = downscaled(image, self.max_side)
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        min_side = self._min_side(grey.shape[1], grey.shape[0])
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


# -- the second pass: small faces in large photos ----------------------------------------

# It runs when the smallest face the first pass found is under this many times the smallest
# face the detector finds on its copy (or it found none): in a group photo, the faces it did
# not see are likely smaller still. It answers for faces up to that size (its tiles overlap
# by that much on the larger copy); larger ones were the first pass's to find.
SMALL_FACE_BAND = 2.0
# ... and only when it sees at least this many times finer than the first pass did.
MIN_GAIN = 2.0
# Two boxes are one face when their IoU is above this (RetinaFace's own NMS threshold), or
# when the centre of the smaller lies inside the larger.
DUPLICATE_IOU = 0.4
# A box this close to a tile edge inside the copy is a face the tile cuts: dropped, since the
# overlap puts every face the pass answers for whole inside some tile.
CUT_EDGE = 1.0


def box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def face_side(box: Sequence[float]) -> float:
    """A box's size as one length: the side of the square of the same area."""
    return sqrt(box_area(box))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def centre_inside(inner: Sequence[float], outer: Sequence[float]) -> bool:
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


def duplicates(a: Sequence[float], b: Sequence[float], limit: float = DUPLICATE_IOU) -> bool:
    """Whether boxes ``a`` and ``b`` (x0, y0, x1, y1) are one face."""
    if iou(a, b) > limit:
        return True
    small, large = (a, b) if box_area(a) <= box_area(b) else (b, a)
    return centre_inside(small, large)


def merged(kept: Sequence[Face], found: Sequence[Face]) -> list[Face]:
    """``kept`` (the first pass's faces) as they are, then each of ``found``, best score
    first (the larger on a tie), unless it duplicates a face already in; best score first."""
    faces = list(kept)
    for face in sorted(found, key=lambda f: (-f.score, -face_side(f.box))):
        if not any(duplicates(face.box, other.box) for other in faces):
            faces.append(face)
    return sorted(faces, key=lambda f: -f.score)


def axis_tiles(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """Cover ``length`` pixels with the fewest tiles of at most ``tile`` that overlap by at
    least ``overlap``: all of one size (the smallest that does it), the last flush with the
    end. Returns (tile size, starts)."""
    if length <= tile:
        return length, [0]
    count = ceil((length - overlap) / (tile - overlap))
    size = ceil((length + (count - 1) * overlap) / count)
    return size, [min(i * (size - overlap), length - size) for i in range(count)]


@dataclass(frozen=True)
class Tiling:
    """Where the second pass looks: tiles of a copy of the input at ``scale``."""

    scale: float  # input -> copy
    size: tuple[int, int]  # the copy's (width, height)
    tile: tuple[int, int]  # every tile's (width, height)
    overlap: int  # at least this many copy pixels between neighbours
    origins: tuple[tuple[int, int], ...]  # each tile's (x, y) on the copy, row by row

    def cuts(self, box: Sequence[float], origin: tuple[int, int]) -> bool:
        """Whether a box found in the tile at ``origin`` (tile pixels) reaches one of the
        tile's edges inside the copy (an edge of the copy cuts nothing)."""
        for lo, hi, start, tile, full in ((box[0], box[2], origin[0], self.tile[0], self.size[0]),
                                          (box[1], box[3], origin[1], self.tile[1], self.size[1])):
            if (start > 0 and lo < CUT_EDGE) or (start + tile < full and hi > tile - CUT_EDGE):
                return True
        return False

    def to_input(self, face: Face, origin: tuple[int, int]) -> Face:
        """A face found in the tile at ``origin``, in input pixels."""
        x, y = origin
        box = (face.box[0] + x, face.box[1] + y, face.box[2] + x, face.box[3] + y)
        return Face(tuple(v / self.scale for v in box), face.score, (face.landmarks + [x, y]) / self.scale)


@dataclass(frozen=True)
class SecondPass:
    """Small faces in large photos, around whichever single-pass ``Detector`` runs.

    ``plan`` decides from the first pass's faces whether to look again (see SMALL_FACE_BAND
    and MIN_GAIN) and where: a copy whose longer side is at most ``max_side`` (0: never),
    cut into tiles of at most the detector's own ``max_side``, so it sees each tile as it is.
    ``run`` detects on each tile, drops faces a tile cuts, maps the rest to input pixels and
    merges them with the first pass's faces (``merged``). The engine runs the two (it times
    the second and reports it)."""

    max_side: int

    def plan(self, detector: Detector, shape: Sequence[int], faces: Sequence[Face], limit: int | None = None) -> Tiling | None:
        if not self.max_side or not detector.max_side or (limit is not None and len(faces) >= limit):
            return None
        floor = detector.min_face(shape)  # input pixels
        if faces and min(face_side(f.box) for f in faces) >= SMALL_FACE_BAND * floor:
            return None
        scale = scale_for(shape, self.max_side)
        width, height = scaled_size(shape, scale)
        overlap = min(ceil(SMALL_FACE_BAND * floor * scale), detector.max_side // 2)
        tile_w, xs = axis_tiles(width, detector.max_side, overlap)
        tile_h, ys = axis_tiles(height, detector.max_side, overlap)
        if detector.min_face((tile_h, tile_w)) / scale > floor / MIN_GAIN:
            return None
        return Tiling(scale, (width, height), (tile_w, tile_h), overlap, tuple((x, y) for y in ys for x in xs))

    def run(self, detector: Detector, image: np.ndarray, tiling: Tiling, faces: Sequence[Face]) -> list[Face]:
        copy = image if tiling.scale == 1.0 else cv2.resize(image, tiling.size, interpolation=cv2.INTER_AREA)
        width, height = tiling.tile
        found = []
        for x, y in tiling.origins:
            for face in detector.detect(np.ascontiguousarray(copy[y: y + height, x: x + width])):
                if not tiling.cuts(face.box, (x, y)):
                    found.append(tiling.to_input(face, (x, y)))
        return merged(faces, found)


def center_face(faces: Sequence[Face], width: int, height: int) -> Face:
    centre = np.array([width / 2, height / 2])
    return min(faces, key=lambda f: np.linalg.norm([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] - centre))


# A box chooses the detected face it overlaps most, if they overlap this much (IoU), or if
# the face's centre lies inside it: a hand-drawn box is rarely tight.
CHOSEN_IOU = 0.3


def chosen_faces(faces: Sequence[Face], boxes: Sequence[Sequence[float]]) -> list[Face]:
    """The detected faces the caller's boxes point at, in the boxes' order, each at most once."""
    chosen: list[Face] = []
    for box in boxes:
        def fit(face: Face) -> float:
            return max(iou(face.box, box), 1.0 if centre_inside(face.box, box) else 0.0)

        candidates = [face for face in faces if all(face is not c for c in chosen) and fit(face) >= CHOSEN_IOU]
        if candidates:
            chosen.append(max(candidates, key=lambda face: (iou(face.box, box), face.score)))
    return chosen
