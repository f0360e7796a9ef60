"""Skin texture brought back: the fine detail and grain of the original face, added to the
restored one ("plastic", "waxy" is the complaint most often made of GFPGAN and its peers).

The detail is the high-frequency band of the aligned input face (what a small Gaussian blur
removes), in lightness only, so it carries pores, wrinkles and film grain without colour
noise. ``amount`` scales it: 0 leaves the restoration as it is, 1 adds the original's band
at its own level. It is added in face space, before the paste-back, so the face mask
decides where it lands, as for the restoration itself: outside a face nothing changes.
"""

from __future__ import annotations

import cv2
import numpy as np

# The band's upper scale in the 512 face: about the size of pores and grain on a face that
# fills the crop; wider structure (eyes, mouth) stays the restoration's.
_SIGMA = 1.5


def detail(face_bgr: np.ndarray) -> np.ndarray:
    """The high-frequency band of a face's lightness, float32 HxW."""
    grey = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return grey - cv2.GaussianBlur(grey, (0, 0), _SIGMA)


def add_texture(restored_bgr: np.ndarray, original_bgr: np.ndarray, amount: float) -> np.ndarray:
    if amount <= 0:
        return restored_bgr
    band = detail(original_bgr) * np.float32(amount)
    textured = restored_bgr.astype(np.float32) + band[:, :, None]
    return np.clip(textured + np.float32(0.5), 0, 255).astype(np.uint8)
