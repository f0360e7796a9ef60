"""Bytes to pixels and back: modes, transparency, the pixel limit before decoding, no metadata out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from processing.images import codec as images


def png(width, height, mode="RGB", **save):
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG", **save)
    return out.getvalue()


def test_decode_converts_modes_to_bgr():
    for mode in ("RGB", "RGBA", "L", "LA", "P", "I;16"):
        decoded = images.decode(png(7, 5, mode), 10_000)
        assert decoded.pixels.shape == (5, 7, 3) and decoded.pixels.dtype == np.uint8


def test_transparent_pixels_become_white():
    out = io.BytesIO()
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(out, "PNG")
    assert (images.decode(out.getvalue(), 100).pixels == 255).all()


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(images.ImageRejected) as error:
        images.probe(png(1200, 1000), max_pixels=1_000_000)
    assert error.value.code == "too_many_pixels" and error.value.status == 413
    assert str(error.value) == "the image is 1200x1000 (1.2 megapixels); the limit is 1 megapixels"


@pytest.mark.parametrize("fmt, content_type", [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_encode_formats_without_metadata(fmt, content_type):
    pixels = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    data = images.encode(pixels, fmt, 90)
    image = Image.open(io.BytesIO(data))
    assert image.size == (24, 16) and image.get_format_mimetype() == content_type and not image.getexif()
    if fmt == "png":
        assert np.array_equal(np.asarray(image)[:, :, ::-1], pixels)  # lossless, BGR order kept
