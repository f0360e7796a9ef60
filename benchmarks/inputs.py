"""The benchmark's inputs, built from skimage's astronaut, with pinned landmarks.

Stand-in detectors find arbitrary faces (a random RetinaFace reports thousands), so each
case carries the 5 landmarks both pipelines must use. They come from the Haar stand-in
detector on the 512x512 astronaut (the FFHQ template placed in its face box) and are
carried through every resize and placement below, so they are exact for the pixels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    file: str  # encoded input, relative to the inputs directory
    landmarks: list  # one 5x2 list per face, input pixels ([] for an aligned face)
    aligned: bool = False

    @property
    def faces(self) -> int:
        return 1 if self.aligned else len(self.landmarks)


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def astronaut_landmarks() -> np.ndarray:
    from processing.engine.detectors import HaarStandInDetector

    image = astronaut_bgr()
    faces = HaarStandInDetector(max_side=max(image.shape[:2])).detect(image)
    if not faces:
        raise RuntimeError("the Haar cascade found no face in the astronaut photo")
    return faces[0].landmarks  # the largest


def _encode(path: Path, pixels: np.ndarray) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else []
    ok, data = cv2.imencode(path.suffix, pixels, params)
    assert ok
    path.write_bytes(data.tobytes())


# (x, y, size) of each square face crop on the 4000x3000 canvas.
FOUR_FACES_12MP = [(300, 250, 1100), (2300, 300, 900), (500, 1700, 1000), (2500, 1600, 1300)]
# A group photo at several scales: two large faces in front, rows of smaller ones behind
# (crops of 300 and 200 px: the Haar box is about half the crop), and a row of 120 px crops
# whose faces are too small for either pass at the default settings.
GROUP_12MP = (
    [(600 + 1500 * i, 2200, 560) for i in range(2)]
    + [(250 + 900 * i, 1500, 300) for i in range(4)]
    + [(150 + 800 * i, 900, 200) for i in range(5)]
    + [(400 + 700 * i, 300, 120) for i in range(5)]
)


def faces_on_coffee(placements, size: tuple[int, int] = (4000, 3000)) -> tuple[np.ndarray, list]:
    """The astronaut's face, cropped square (4.2 eye spans) and scaled to each (x, y, side) in
    ``placements``, on skimage's coffee photo scaled to ``size``; and each face's 5 landmarks
    (the Haar stand-in's on the astronaut, carried through crop, scale and placement)."""
    from skimage import data

    source = astronaut_bgr()
    marks = astronaut_landmarks()
    canvas = cv2.resize(cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), size, interpolation=cv2.INTER_CUBIC)
    eye_span = marks[1, 0] - marks[0, 0]
    centre = marks.mean(axis=0)
    side = int(round(eye_span * 4.2))
    left = int(np.clip(round(centre[0] - side / 2), 0, source.shape[1] - side))
    top = int(np.clip(round(centre[1] - side / 2), 0, source.shape[0] - side))
    crop = source[top: top + side, left: left + side]
    landmarks_all = []
    for x, y, size in placements:
        scale = size / side
        canvas[y: y + size, x: x + size] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
        # Pixel centres: x_out + 0.5 = (x_in + 0.5) * scale.
        landmarks_all.append((((marks - [left, top]) + 0.5) * scale - 0.5 + [x, y]).tolist())
    return canvas, landmarks_all


def build(directory: Path) -> list[Case]:
    """Write every case's input under ``directory`` and return the cases."""
    directory.mkdir(parents=True, exist_ok=True)
    source = astronaut_bgr()
    marks = astronaut_landmarks()
    cases = []

    for side in (1024, 2048):
        scale = side / source.shape[1]
        image = cv2.resize(source, (side, side), interpolation=cv2.INTER_LANCZOS4)
        name = f"1face-{side}"
        _encode(directory / f"{name}.jpg", image)
        # Pixel centres: x_out + 0.5 = (x_in + 0.5) * scale.
        landmarks = (marks + 0.5) * scale - 0.5
        cases.append(Case(name, f"1 face, {side}x{side} JPEG", f"{name}.jpg", [landmarks.tolist()]))

    # Four faces in a 12-megapixel photo: face crops of the astronaut, scaled to four
    # sizes, placed on coffee cup pixels scaled to 4000x3000.
    canvas, landmarks_all = faces_on_coffee(FOUR_FACES_12MP)
    _encode(directory / "4faces-12mp.jpg", canvas)
    cases.append(Case("4faces-12mp", "4 faces, 4000x3000 JPEG", "4faces-12mp.jpg", landmarks_all))

    # An aligned face: the astronaut warped onto the FFHQ template, as GFPGAN's aligned mode expects.
    from processing.engine.detectors import FACE_SIZE, FACE_TEMPLATE

    matrix = cv2.estimateAffinePartial2D(marks, FACE_TEMPLATE, method=cv2.LMEDS)[0]
    aligned = cv2.warpAffine(source, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT, borderValue=(135, 133, 132))
    _encode(directory / "aligned-512.png", aligned)
    cases.append(Case("aligned-512", "aligned 512x512 face, PNG", "aligned-512.png", [], aligned=True))

    (directory / "cases.json").write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return cases


def load(directory: Path) -> list[Case]:
    return [Case(**c) for c in json.loads((directory / "cases.json").read_text())]
