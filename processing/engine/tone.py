"""Black-and-white and toned photos keep their tone.

GFPGAN paints skin colours into grey faces (the most common complaint about it on old
photos). The photo is read once: monochrome (no chroma anywhere), toned (sepia, cyanotype,
a scanner's cast: the chroma is a function of lightness), or colour. A restored face then
keeps the restoration's lightness and takes its chroma from the photo: none for
monochrome, so its three channels are equal; for a toned photo, the chroma the photo has at
that lightness (a curve fitted over the whole photo, so it does not depend on where the
restoration moved an edge).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MONOCHROME, TONED, COLOUR = "monochrome", "toned", "colour"
# Lab units (a just-noticeable difference is about 2.3). Monochrome: the 99th percentile of
# chroma below this (JPEG's chroma noise on a grey photo stays well under it).
_MONO_CHROMA = 3.0
# Toned: once the lightness curve is taken out, 95% of pixels are within this of it.
_TONED_RESIDUAL = 5.0
_BINS = 32
_ANALYSIS_SIDE = 512  # the tone of a photo does not need its full resolution


@dataclass(frozen=True)
class Tone:
    kind: str
    # The mean (a, b) of each lightness bin, _BINS x 2 (None for monochrome).
    curve: np.ndarray | None = None

    def keeps(self, face_bgr: np.ndarray) -> np.ndarray:
        """The restored face with the photo's tone: its lightness, the photo's chroma."""
        if self.kind == MONOCHROME:
            grey = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY)
            return cv2.merge([grey, grey, grey])
        lab = cv2.cvtColor(face_bgr.astype(np.float32) / np.float32(255.0), cv2.COLOR_BGR2LAB)
        centres = (np.arange(_BINS) + 0.5) * (100.0 / _BINS)
        lightness = lab[:, :, 0]
        lab[:, :, 1] = np.interp(lightness, centres, self.curve[:, 0])
        lab[:, :, 2] = np.interp(lightness, centres, self.curve[:, 1])
        bgr = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
        return np.clip(bgr * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)


def analyse(image_bgr: np.ndarray) -> Tone:
    longest = max(image_bgr.shape[:2])
    small = image_bgr
    if longest > _ANALYSIS_SIDE:
        scale = _ANALYSIS_SIDE / longest
        size = (max(1, round(image_bgr.shape[1] * scale)), max(1, round(image_bgr.shape[0] * scale)))
        small = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small.astype(np.float32) / np.float32(255.0), cv2.COLOR_BGR2LAB).reshape(-1, 3)
    lightness, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    if np.percentile(np.hypot(a, b), 99) < _MONO_CHROMA:
        return Tone(MONOCHROME)
    bins = np.clip((lightness * (_BINS / 100.0)).astype(int), 0, _BINS - 1)
    counts = np.bincount(bins, minlength=_BINS)
    filled = counts > 0
    curve = np.zeros((_BINS, 2), np.float64)
    for column, channel in enumerate((a, b)):
        sums = np.bincount(bins, weights=channel, minlength=_BINS)
        means = sums[filled] / counts[filled]
        # Lightness bins the photo does not use borrow from their neighbours.
        curve[:, column] = np.interp(np.arange(_BINS), np.flatnonzero(filled), means)
    residual = np.hypot(a - curve[bins, 0], b - curve[bins, 1])
    # A colour photo keeps its curve too: color=keep forces its average tint onto the faces.
    return Tone(TONED if np.percentile(residual, 95) < _TONED_RESIDUAL else COLOUR, curve.astype(np.float32))
