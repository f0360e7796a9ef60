"""Bytes to pixels and pixels to bytes: the one place an upload is parsed or an image encoded.

Uploads are identified by their content (never by name or Content-Type), their size is
checked from the header before any pixel is decoded (decompression bombs), EXIF
orientation is applied, an embedded colour profile is converted to sRGB (icc.py), and
everything we store or serve is re-encoded without metadata but for the sRGB profile that
says what its pixels mean. Pixels travel as OpenCV-style sRGB BGR ``uint8`` arrays, as
GFPGAN expects.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps

from . import icc

log = logging.getLogger(__name__)

ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}

# Pillow's own bomb guard is a warning up to 2x its limit; ours is an explicit check, so
# silence its duplicate and keep its hard error as a backstop.
Image.MAX_IMAGE_PIXELS = None

# Only these of Pillow's ~40 parsers ever read an upload: each format it tries is code
# reading hostile bytes. The JPEG parser answers "MPO" for a JPEG that carries extra
# pictures (phones' depth maps, 3D cameras); its first picture is the photo: a JPEG.
_PARSERS = ("JPEG", "PNG", "WEBP")
_SAME_AS = {"MPO": "JPEG"}
# Formats people send by mistake, recognised by signature only (never parsed) so the
# refusal can name them.
_SIGNATURES = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"),
    (b"%PDF", "PDF"), (b"\x00\x00\x01\x00", "ICO"), (b"BM", "BMP"),
)


def _sniff(data: bytes) -> str | None:
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "AVIF" if brand.startswith(b"avi") else "HEIC" if brand[:3] in (b"hei", b"hev", b"mif") else None
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


class ImageRejected(ValueError):
    """The upload is not an image we accept; ``code`` is machine-readable, str() is for people."""

    def __init__(self, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # H x W x 3, BGR, uint8, sRGB
    source_format: str  # JPEG | PNG | WEBP
    profile: str | None = None  # the name of the colour profile converted from; None: the pixels were sRGB

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
        with Image.open(io.BytesIO(data), formats=_PARSERS) as img:
            fmt, (width, height) = _SAME_AS.get(img.format, img.format), img.size
    except Exception:  # noqa: BLE001  hostile headers raise all sorts (struct.error, IndexError...)
        named = _sniff(data)
        if named:
            raise ImageRejected(
                "unsupported_format", f"{named} images are not accepted; send JPEG, PNG or WebP", status=415
            ) from None
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
    """Validate and decode an upload to sRGB BGR pixels, EXIF orientation applied."""
    fmt, _, _ = probe(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=_PARSERS) as img:
                img.load()
                embedded = img.info.get("icc_profile")
                if auto_orient:
                    img = ImageOps.exif_transpose(img)
                rgb, profile = _to_srgb(img, embedded)
    except ImageRejected:
        raise
    except Exception:  # Pillow raises many types for damaged data; all mean the same here
        raise ImageRejected("corrupt_image", f"the {fmt} file is damaged or truncated and cannot be decoded") from None
    pixels = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
    return DecodedImage(pixels=pixels, source_format=fmt, profile=profile)


_GREY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I")


def _to_srgb(img: Image.Image, embedded: bytes | None) -> tuple[Image.Image, str | None]:
    """RGB pixels in sRGB, and the name of the profile they were converted from. A profile
    that is damaged, or does not describe these pixels (an RGB profile on CMYK...), is
    ignored, as browsers ignore it: the pixels are taken as sRGB."""
    profile = icc.embedded(embedded)
    mode = profile and icc.mode_for(profile)
    if mode == "CMYK" and img.mode == "CMYK":
        source = img
    elif mode == "RGB" and img.mode != "CMYK":
        source = _to_rgb(img)
    elif mode == "L" and img.mode in _GREY_MODES:
        source = _to_rgb(img).convert("L")  # exact: R = G = B
    else:
        if embedded and embedded != icc.SRGB:
            log.info("ignored a colour profile that is damaged or does not match %s pixels", img.mode)
        return _to_rgb(img), None
    try:
        return icc.to_srgb(source, profile), icc.description(profile)
    except ImageCms.PyCMSError:
        log.info("ignored a colour profile littleCMS cannot convert from")
        return _to_rgb(img), None


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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# The sRGB profile as a PNG chunk, built once: name, compression method 0, deflated profile.
_PNG_ICCP = _png_chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(icc.SRGB, 9))
_PNG_IHDR_END = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, data and CRC


def encode(pixels: np.ndarray, fmt: str = "png", quality: int = 92) -> bytes:
    """Encode sRGB BGR pixels, tagged with the sRGB profile and no other metadata, so that
    software that does not assume sRGB (print labs, editors with another working space)
    shows them right too. ``fmt`` is png | jpeg | webp."""
    pil_format, _ = OUTPUT_FORMATS[fmt]
    if pil_format == "PNG":
        # OpenCV's defaults (fastest level, run-length strategy), as GFPGAN's own script
        # writes: ~1.7x faster than level 1 with the default strategy for ~10% larger files,
        # and results live for hours, not years. OpenCV cannot embed a profile, so the
        # iCCP chunk goes in after IHDR, where PNG wants it (before any image data).
        ok, buffer = cv2.imencode(".png", np.ascontiguousarray(pixels))
        if not ok:
            raise ValueError("PNG encoding failed")
        data = buffer.tobytes()
        if data[12:16] != b"IHDR":
            raise ValueError("PNG encoding did not start with IHDR")
        return data[:_PNG_IHDR_END] + _PNG_ICCP + data[_PNG_IHDR_END:]
    img = Image.fromarray(np.ascontiguousarray(pixels[:, :, ::-1]), "RGB")
    out = io.BytesIO()
    if pil_format == "JPEG":
        img.save(out, "JPEG", quality=quality, optimize=False, subsampling=0 if quality >= 90 else 2,
                 icc_profile=icc.SRGB)
    else:
        img.save(out, "WEBP", quality=quality, method=4, icc_profile=icc.SRGB)
    return out.getvalue()


def content_type(fmt: str) -> str:
    return OUTPUT_FORMATS[fmt][1]


def extension(fmt: str) -> str:
    return {"png": "png", "jpeg": "jpg", "webp": "webp"}[fmt]
