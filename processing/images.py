"""The one place where bytes become pixels and pixels become bytes.

Uploads are identified by their content (never by name or Content-Type), their size is
checked from the header before any pixel is decoded (decompression bombs), EXIF
orientation is applied, and everything we store or serve is re-encoded without
metadata. Pixels travel as OpenCV-style BGR ``uint8`` arrays, as GFPGAN expects.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}

# Pillow's own bomb guard is a warning up to 2x its limit; ours is an explicit check, so
# silence its duplicate and keep its hard error as a backstop.
Image.MAX_IMAGE_PIXELS = None


class ImageRejected(ValueError):
    """The upload is not an image we accept; ``code`` is machine-readable, str() is for people."""

    def __init__(self, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # H x W x 3, BGR, uint8
    source_format: str  # JPEG | PNG | WEBP

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def probe(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Format and size from the header alone; raises ImageRejected."""
    if not data:
        raise ImageRejected("empty_file", "the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageRejected(
            "not_an_image", "the file is not a JPEG, PNG or WebP image", status=415
        ) from None
    if fmt not in ALLOWED_FORMATS:
        raise ImageRejected(
            "unsupported_format", f"{fmt} images are not accepted; send JPEG, PNG or WebP", status=415
        )
    if width < 1 or height < 1:
        raise ImageRejected("bad_dimensions", "the image has no pixels")
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:.0f} megapixels",
            status=413,
        )
    return fmt, width, height


def decode(data: bytes, max_pixels: int, *, auto_orient: bool = True) -> DecodedImage:
    """Validate and decode an upload to BGR pixels, EXIF orientation applied."""
    fmt, _, _ = probe(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                if auto_orient:
                    img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
    except ImageRejected:
        raise
    except Exception:  # Pillow raises many types for damaged data; all mean the same here
        raise ImageRejected("corrupt_image", f"the {fmt} file is damaged or truncated and cannot be decoded") from None
    pixels = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
    return DecodedImage(pixels=pixels, source_format=fmt)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clip.
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent areas become white, as a viewer would show them on a page.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def encode(pixels: np.ndarray, fmt: str = "png", quality: int = 92) -> bytes:
    """Encode BGR pixels; no metadata is written. ``fmt`` is png | jpeg | webp."""
    pil_format, _ = OUTPUT_FORMATS[fmt]
    img = Image.fromarray(np.ascontiguousarray(pixels[:, :, ::-1]), "RGB")
    out = io.BytesIO()
    if pil_format == "PNG":
        # Level 1: a 48-megapixel result encodes in a fraction of the time of the default
        # level for files only ~10% larger, and results live for hours, not years.
        img.save(out, "PNG", compress_level=1)
    elif pil_format == "JPEG":
        img.save(out, "JPEG", quality=quality, optimize=False, subsampling=0 if quality >= 90 else 2)
    else:
        img.save(out, "WEBP", quality=quality, method=4)
    return out.getvalue()


def content_type(fmt: str) -> str:
    return OUTPUT_FORMATS[fmt][1]


def extension(fmt: str) -> str:
    return {"png": "png", "jpeg": "jpg", "webp": "webp"}[fmt]
