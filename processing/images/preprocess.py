"""What a job may do to a photo before its faces are found: crop, rotate, shrink, denoise,
stretch contrast, balance white; applied in that order and listed in the job's record."""

from __future__ import annotations

import cv2
import numpy as np

from .codec import ImageRejected


def check_crop(crop: tuple[int, int, int, int] | None, width: int, height: int) -> None:
    if crop is None:
        return
    x, y, w, h = crop
    if x + w > width or y + h > height:
        raise ImageRejected(
            "crop_outside_image", f"crop {x},{y},{w},{h} reaches outside the {width}x{height} image", status=422
        )


_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def preprocess(pixels: np.ndarray, options) -> tuple[np.ndarray, list[str]]:
    """Apply the job's preprocessing options (JobOptions) in their documented order and
    say what was done, for the job's record. Orientation happened at decode time."""
    steps: list[str] = []
    crop = options.crop_box()
    if crop is not None:
        check_crop(crop, pixels.shape[1], pixels.shape[0])
        x, y, w, h = crop
        pixels = pixels[y : y + h, x : x + w]
        steps.append(f"cropped to {w}x{h} at {x},{y}")
    if options.rotate:
        pixels = cv2.rotate(pixels, _ROTATIONS[options.rotate])
        steps.append(f"rotated {options.rotate}° clockwise")
    longest = max(pixels.shape[:2])
    if options.max_side and longest > options.max_side:
        scale = options.max_side / longest
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        steps.append(f"downscaled to {size[0]}x{size[1]}")
    if options.denoise:
        pixels = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(pixels), None, 5, 5, 7, 21)
        steps.append("denoised")
    if options.auto_contrast:
        pixels = _stretch_contrast(pixels)
        steps.append("contrast stretched")
    if options.white_balance:
        pixels = _grey_world(pixels)
        steps.append("white balanced")
    return np.ascontiguousarray(pixels), steps


def _stretch_contrast(pixels: np.ndarray) -> np.ndarray:
    # Stretch lightness only, between its 0.5th and 99.5th percentiles, so colours keep
    # their hue while a faded print regains black and white points.
    lab = cv2.cvtColor(pixels, cv2.COLOR_BGR2LAB)
    lightness = lab[:, :, 0].astype(np.float32)
    low, high = np.percentile(lightness, (0.5, 99.5))
    if high - low < 1:
        return pixels
    lab[:, :, 0] = np.clip((lightness - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def _grey_world(pixels: np.ndarray) -> np.ndarray:
    # Grey-world assumption: the average colour of a scene is neutral.
    means = pixels.reshape(-1, 3).mean(axis=0)
    gains = means.mean() / np.maximum(means, 1.0)
    return np.clip(pixels.astype(np.float32) * gains, 0, 255).astype(np.uint8)


# -- where the pixels went -------------------------------------------------------------------

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def placement(options, width: int, height: int) -> np.ndarray:
    """The affine map (3x3) from the upright input's pixel coordinates to those of the image
    ``preprocess`` returns for an input of this size: the crop, the quarter turns, the shrink
    (the other steps do not move pixels). Boxes a caller draws on the photo, and the boxes a
    job reports, cross between the two with it."""
    matrix = np.eye(3)
    w, h = width, height
    crop = options.crop_box()
    if crop is not None:
        x, y, w, h = crop
        matrix = np.array([[1, 0, -x], [0, 1, -y], [0, 0, 1]], float) @ matrix
    turn = {90: [[0, -1, h], [1, 0, 0]], 180: [[-1, 0, w], [0, -1, h]], 270: [[0, 1, 0], [-1, 0, w]]}.get(options.rotate)
    if turn is not None:
        matrix = np.array([*turn, [0, 0, 1]], float) @ matrix
        if options.rotate != 180:
            w, h = h, w
    if options.max_side and max(w, h) > options.max_side:
        scale = options.max_side / max(w, h)
        sx, sy = max(1, round(w * scale)) / w, max(1, round(h * scale)) / h  # the size resize() was given
        matrix = np.diag([sx, sy, 1.0]) @ matrix
    return matrix


def map_box(box: Box, matrix: np.ndarray) -> Box:
    corners = np.array([[box[0], box[1], 1], [box[2], box[3], 1]], float) @ matrix.T
    (x0, y0), (x1, y1) = corners.min(axis=0)[:2], corners.max(axis=0)[:2]
    return float(x0), float(y0), float(x1), float(y1)
