"""Optional background upsampling with Real-ESRGAN x2 (RRDBNet), in tiles.

GFPGAN restores faces only; the rest of the photo is enlarged with Lanczos unless this
upsampler is asked for. On a CPU it is expensive (it is off by default, and its time is
reported in the job's timings), and tiles keep its memory bounded whatever the photo size.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from . import _compat  # noqa: F401  (basicsr imports the removed torchvision module)

import torch
from basicsr.archs.rrdbnet_arch import RRDBNet

SCALE = 2


def new_realesrgan_x2() -> RRDBNet:
    # RealESRGAN_x2plus's architecture, as Real-ESRGAN's inference script builds it.
    return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=SCALE)


class RealESRGANUpsampler:
    def __init__(self, weights_path: Path, tile: int = 192, pad: int = 10):
        checkpoint = torch.load(weights_path, map_location="cpu", weights_only=True)
        self.net = new_realesrgan_x2()
        self.net.load_state_dict(checkpoint.get("params_ema", checkpoint.get("params", checkpoint)), strict=True)
        self.net.eval()
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
        rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1).float().div_(255)
        output = np.empty((height * SCALE, width * SCALE, 3), np.uint8)
        for y in range(0, height, self.tile):
            for x in range(0, width, self.tile):
                y1, x1 = min(y + self.tile, height), min(x + self.tile, width)
                py0, px0 = max(0, y - self.pad), max(0, x - self.pad)
                py1, px1 = min(height, y1 + self.pad), min(width, x1 + self.pad)
                top, left = (y - py0) * SCALE, (x - px0) * SCALE
                with torch.inference_mode():
                    patch = self.net(rgb[:, py0:py1, px0:px1].unsqueeze(0))[0]
                    patch = patch[:, top : top + (y1 - y) * SCALE, left : left + (x1 - x) * SCALE]
                    pixels = patch.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
                output[y * SCALE : y1 * SCALE, x * SCALE : x1 * SCALE] = pixels[:, :, ::-1]
        return output
