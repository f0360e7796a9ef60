"""Background upsampling with Real-ESRGAN x2, in tiles.

GFPGAN restores faces only; the rest of the photo is enlarged with Lanczos unless this
upsampler is asked for. On a CPU it is expensive (off by default, its time reported in the
job's timings), and tiles keep its memory bounded whatever the photo size.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

SCALE = 2

# One tile: RGB float32 1x3xHxW in [0, 1] (even sides) -> 1x3x(2H)x(2W).
TileNet = Callable[[np.ndarray], np.ndarray]


class TiledUpsampler:
    def __init__(self, net: TileNet, tile: int = 192, pad: int = 10):
        self.net = net
        self.tile = tile
        self.pad = pad

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """BGR uint8 in, BGR uint8 twice the size out. Each tile is run with ``pad`` pixels
        of real neighbouring context, which is cut away again, so seams do not show."""
        height, width = image.shape[:2]
        if height % 2 or width % 2:
            # The x2 network folds 2x2 pixel blocks into channels: it needs even sides.
            even = cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2, cv2.BORDER_REFLECT_101)
            return self.upscale(even)[: height * SCALE, : width * SCALE]
        rgb = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)
        rgb /= np.float32(255.0)
        output = np.empty((height * SCALE, width * SCALE, 3), np.uint8)
        for y in range(0, height, self.tile):
            for x in range(0, width, self.tile):
                y1, x1 = min(y + self.tile, height), min(x + self.tile, width)
                py0, px0 = max(0, y - self.pad), max(0, x - self.pad)
                py1, px1 = min(height, y1 + self.pad), min(width, x1 + self.pad)
                top, left = (y - py0) * SCALE, (x - px0) * SCALE
                patch = self.net(np.ascontiguousarray(rgb[None, :, py0:py1, px0:px1]))[0]
                patch = patch[:, top : top + (y1 - y) * SCALE, left : left + (x1 - x) * SCALE]
                pixels = (np.clip(patch, 0.0, 1.0) * np.float32(255.0)).round().astype(np.uint8)
                output[y * SCALE : y1 * SCALE, x * SCALE : x1 * SCALE] = pixels.transpose(1, 2, 0)[:, :, ::-1]
        return output
