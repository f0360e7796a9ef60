"""Colour profiles: what an upload's embedded ICC profile means, and the one we write.

Everything after decoding works in sRGB: uploads that carry a profile (Display P3 from
phones, Adobe RGB or a scanner's profile from scans) are converted to sRGB with
littleCMS, relative colorimetric with black point compensation: colours inside sRGB keep
their appearance exactly, colours outside it (saturated P3 reds and greens) are clipped to
its edge, and a profile whose black is not zero (CMYK, some scanners) has its black mapped
to sRGB black instead of a grey haze. For matrix profiles (P3, Adobe RGB, sRGB) the
perceptual intent would be the same conversion, and for table profiles it would move
in-gamut colours too, which is exactly what we must not do.

Everything we write is tagged with :data:`SRGB`, a small ICC v2 sRGB profile built here
rather than taken from littleCMS, whose built-in one is ICC v4 (which old viewers misread)
and stamped with the time it was made. Ours has the same bytes in every process and
version, so a stored input is recognised as ours and not converted again.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageCms

D50 = (0.9642, 1.0, 0.8249)  # the ICC profile connection space's white
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}  # the profile's colour space -> Pillow's mode


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def colorants(primaries: Sequence[tuple[float, float]], white: tuple[float, float]) -> np.ndarray:
    """RGB -> XYZ (columns red, green, blue) for primaries and white given as xy, adapted
    to D50 with Bradford, as matrix profiles store them."""
    matrix = np.column_stack([_xyz(*p) for p in primaries])
    white_xyz = _xyz(*white)
    matrix = matrix * np.linalg.solve(matrix, white_xyz)
    gains = (_BRADFORD @ np.array(D50)) / (_BRADFORD @ white_xyz)
    return np.linalg.inv(_BRADFORD) @ np.diag(gains) @ _BRADFORD @ matrix


def _s15(values) -> bytes:
    return b"".join(struct.pack(">i", round(float(v) * 65536)) for v in values)


def text_tags(description: str) -> list[tuple[bytes, bytes]]:
    """The name (textDescriptionType: ASCII, then empty Unicode and ScriptCode names) and
    the copyright every v2 profile carries."""
    text = description.encode("ascii")
    name = b"desc" + bytes(4) + struct.pack(">I", len(text) + 1) + text + bytes(1 + 4 + 4 + 2 + 1 + 67)
    return [(b"desc", name), (b"cprt", b"text" + bytes(4) + b"No copyright, use freely\0")]


def xyz_tag(values) -> bytes:
    return b"XYZ " + bytes(4) + _s15(values)


def curve_tag(curve: float | Sequence[float]) -> bytes:
    """A gamma, or the decoding curve sampled evenly on [0, 1] (256 samples are exact for
    8-bit values)."""
    if isinstance(curve, float):
        return b"curv" + bytes(4) + struct.pack(">IH", 1, round(curve * 256))  # u8Fixed8Number
    samples = np.round(np.asarray(curve, dtype=np.float64) * 65535).astype(">u2")
    return b"curv" + bytes(4) + struct.pack(">I", len(samples)) + samples.tobytes()


def assemble(device_class: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2 profile: header, tag table, tag data (4-byte aligned; equal data stored once)."""
    table, data, placed = b"", b"", {}
    start = 128 + 4 + 12 * len(tags)
    for name, payload in tags:
        if payload not in placed:
            placed[payload] = start + len(data)
            data += payload + bytes(-len(payload) % 4)
        table += struct.pack(">4sII", name, placed[payload], len(payload))
    header = struct.pack(
        ">I4sI4s4s4s6H4s", start + len(data), b"", 0x02100000, device_class, space, pcs, 2025, 1, 1, 0, 0, 0, b"acsp"
    ) + bytes(28) + _s15(D50)
    return header + bytes(128 - len(header)) + struct.pack(">I", len(tags)) + table + data


def rgb_profile(description: str, primaries, white, curve: float | Sequence[float]) -> bytes:
    """An RGB display profile (matrix/TRC): primaries and white as xy, one curve for all
    three channels (see curve_tag)."""
    matrix = colorants(primaries, white)
    trc = curve_tag(curve)
    return assemble(b"mntr", b"RGB ", b"XYZ ", [
        *text_tags(description),
        (b"wtpt", xyz_tag(D50)),
        *((name, xyz_tag(matrix[:, i])) for i, name in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))),
        *((name, trc) for name in (b"rTRC", b"gTRC", b"bTRC")),
    ])


def srgb_decode(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer function, encoded [0, 1] -> linear [0, 1]."""
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


SRGB_NAME = "sRGB IEC61966-2.1"
SRGB = rgb_profile(
    SRGB_NAME, ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06)), (0.3127, 0.3290), srgb_decode(np.linspace(0, 1, 256))
)
_SRGB_PROFILE = ImageCms.ImageCmsProfile(io.BytesIO(SRGB))


def embedded(data: bytes | None) -> ImageCms.ImageCmsProfile | None:
    """The profile an upload carries, or None: none, ours (already sRGB), or unreadable
    (browsers ignore a damaged profile too, and show the pixels as sRGB)."""
    if not data or data == SRGB:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(data))
    except (OSError, ValueError, TypeError):
        return None


def mode_for(profile: ImageCms.ImageCmsProfile) -> str | None:
    """The Pillow mode whose pixels ``profile`` describes: RGB, L, CMYK, or None (Lab...)."""
    return _MODES.get(profile.profile.xcolor_space.strip())


def description(profile: ImageCms.ImageCmsProfile) -> str:
    """The profile's own name, made safe to show (it is the uploader's text)."""
    text = "".join(c if c.isprintable() else " " for c in profile.profile.profile_description or "")
    return " ".join(text.split())[:64] or "unnamed profile"


def to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    """``image`` (in ``mode_for(profile)``) converted to sRGB RGB. Raises ImageCms.PyCMSError
    for a profile littleCMS cannot build a transform from."""
    transform = ImageCms.buildTransform(
        profile, _SRGB_PROFILE, image.mode, "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
    )
    return ImageCms.applyTransform(image, transform)
