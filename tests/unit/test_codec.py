"""Bytes to pixels and back: modes, transparency, the pixel limit before decoding, colour
profiles converted to sRGB, no metadata out but the sRGB profile."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from processing.images import codec as images
from processing.images import icc


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
def test_encode_formats_with_the_srgb_profile_and_no_other_metadata(fmt, content_type):
    pixels = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    data = images.encode(pixels, fmt, 90)
    image = Image.open(io.BytesIO(data))
    assert image.size == (24, 16) and image.get_format_mimetype() == content_type and not image.getexif()
    assert image.info["icc_profile"] == icc.SRGB
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))).strip() \
        == "sRGB IEC61966-2.1"
    assert not {"exif", "xmp", "XML:com.adobe.xmp", "comment", "dpi"} & set(image.info)
    if fmt == "png":
        assert np.array_equal(np.asarray(image)[:, :, ::-1], pixels)  # lossless, BGR order kept
        assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), pixels)  # libpng too
        assert _png_chunks(data)[:2] == [b"IHDR", b"iCCP"] and _png_chunks(data)[-1] == b"IEND"
    # What we wrote is read back as sRGB already: a stored input is not converted again.
    again = images.decode(data, 10_000)
    assert again.profile is None
    if fmt == "png":
        assert np.array_equal(again.pixels, pixels)


def _png_chunks(data: bytes) -> list[bytes]:
    kinds, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kinds.append(data[at + 4 : at + 8])
        at += 12 + length
    return kinds


# -- colour profiles ----------------------------------------------------------------------
# The expected colours come from the standards' published RGB -> XYZ (D65) matrices and
# transfer functions, not from the profile writer (icc.py) nor from littleCMS.

SRGB_D65 = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                     [0.0193339, 0.1191920, 0.9503041]])
P3_D65 = np.array([[0.4865709, 0.2656677, 0.1982173], [0.2289746, 0.6917385, 0.0792869],
                   [0.0000000, 0.0451134, 1.0439444]])
ADOBE_D65 = np.array([[0.5767309, 0.1855540, 0.1881852], [0.2973769, 0.6273491, 0.0752741],
                      [0.0270343, 0.0706872, 0.9911085]])
ADOBE_GAMMA = 563 / 256  # Adobe RGB (1998): 2 51/256


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)  # an sRGB screen cannot show more: outside its gamut, colours clip
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


D65 = (0.3127, 0.3290)
# name -> the profile as phones and scanners embed it, its transfer function, its matrix
SPACES = {
    "Display P3": (icc.rgb_profile("Display P3", ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), D65,
                                   srgb_to_linear(np.linspace(0, 1, 1024))), srgb_to_linear, P3_D65),
    "Adobe RGB (1998)": (icc.rgb_profile("Adobe RGB (1998)", ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06)), D65,
                                         ADOBE_GAMMA), lambda v: v ** ADOBE_GAMMA, ADOBE_D65),
}


def as_displayed(rgb: np.ndarray, space: str) -> np.ndarray:
    """RGB uint8 values in ``space`` -> the sRGB values (float, 0-255) that show the same colour."""
    _, to_linear, matrix = SPACES[space]
    return linear_to_srgb(to_linear(rgb / 255.0) @ (np.linalg.inv(SRGB_D65) @ matrix).T) * 255.0


def in_space(srgb: np.ndarray, space: str) -> np.ndarray:
    """The inverse: sRGB uint8 -> RGB uint8 values in ``space`` that show the same colour."""
    _, to_linear, matrix = SPACES[space]
    linear = srgb_to_linear(srgb / 255.0) @ (np.linalg.inv(matrix) @ SRGB_D65).T
    grid = np.linspace(0, 1, 4096)  # the transfer function inverted by table: no closed form needed
    encoded = np.interp(np.clip(linear, 0, 1), to_linear(grid), grid)
    return np.round(encoded * 255).astype(np.uint8)


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE 1976 colour difference between two sRGB images (RGB, 0-255), in CIELAB (D65)."""
    def lab(rgb):
        xyz = srgb_to_linear(np.asarray(rgb, dtype=np.float64) / 255.0) @ SRGB_D65.T / SRGB_D65.sum(axis=1)
        f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
        return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)

    return np.linalg.norm(lab(a) - lab(b), axis=-1)


def assert_looks_the_same(got: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Within 8-bit rounding: one step is up to ~1 ΔE76 in dark tones; 2.3 is the least
    difference people see side by side."""
    error = delta_e(got, expected)
    assert error.max() < 1.5 and error.mean() < 0.3, f"{what} ΔE76 up to {error.max():.2f}, {error.mean():.2f} on average"


def rgb_of(decoded) -> np.ndarray:
    return decoded.pixels[:, :, ::-1]


def with_profile(array: np.ndarray, fmt: str, profile: bytes | None, mode: str | None = None, **save) -> bytes:
    out = io.BytesIO()
    options = {"icc_profile": profile} if profile is not None else {}
    Image.fromarray(array, mode).save(out, fmt, **options, **save)
    return out.getvalue()


def test_the_srgb_profile_we_write_is_the_srgb_littlecms_knows():
    """Our v2 sRGB and littleCMS's own built-in sRGB convert every colour of an 8-bit grid
    to itself, both ways; the test profiles load as what they claim to be."""
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    grid = Image.fromarray(np.stack(np.meshgrid(levels, levels, levels), -1).reshape(1, -1, 3), "RGB")
    ours, builtin = ImageCms.ImageCmsProfile(io.BytesIO(icc.SRGB)), ImageCms.createProfile("sRGB")
    for source, target in ((ours, builtin), (builtin, ours)):
        transform = ImageCms.buildTransform(source, target, "RGB", "RGB",
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
        assert ImageCms.applyTransform(grid, transform).tobytes() == grid.tobytes()
    assert ours.profile.version == 2.1 and ours.profile.profile_description == "sRGB IEC61966-2.1"
    for name, (profile, _, _) in SPACES.items():
        loaded = ImageCms.ImageCmsProfile(io.BytesIO(profile)).profile
        assert (loaded.profile_description, loaded.xcolor_space, loaded.device_class) == (name, "RGB ", "mntr")
        assert loaded.is_matrix_shaper


@pytest.mark.parametrize("space, fmt", [("Display P3", "PNG"), ("Adobe RGB (1998)", "JPEG"), ("Display P3", "WEBP")])
def test_decode_converts_an_embedded_profile_to_srgb(space, fmt):
    """Random colours (some outside sRGB, which an sRGB screen shows clipped) come out of
    decode as an sRGB screen shows them, to within 8-bit rounding."""
    values = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = with_profile(values, fmt, SPACES[space][0], quality=100)
    sent = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # what the file holds, profile unread
    decoded = images.decode(data, 10_000)
    assert decoded.profile == space
    expected = as_displayed(sent, space)
    assert_looks_the_same(rgb_of(decoded), expected)
    assert delta_e(sent, expected).mean() > 3  # without the conversion the test would see it


def test_decode_converts_grey_profiles_and_16_bit_grey():
    """A scan in Gray Gamma 1.8: greys stay grey, in sRGB's tone curve. A 16-bit grey PNG
    is scaled to 8 bits first, then converted."""
    grey = icc.assemble(b"mntr", b"GRAY", b"XYZ ", [
        *icc.text_tags("Gray Gamma 1.8"), (b"wtpt", icc.xyz_tag(icc.D50)), (b"kTRC", icc.curve_tag(1.8))])
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = np.repeat(linear_to_srgb((ramp / 255.0) ** 1.8)[..., None] * 255, 3, axis=-1)
    for data in (with_profile(ramp, "PNG", grey, "L"),
                 with_profile(ramp.astype(np.uint16) * 257, "PNG", grey)):
        decoded = images.decode(data, 10_000)
        assert decoded.profile == "Gray Gamma 1.8"
        assert_looks_the_same(rgb_of(decoded), expected)
        assert (decoded.pixels == decoded.pixels[..., :1]).all()
        assert delta_e(np.repeat(ramp[..., None], 3, axis=-1), expected).max() > 4


def _lab_v2(lightness: float, a: float, b: float) -> bytes:
    """A Lab colour in the ICC v2 16-bit encoding lut16Type uses."""
    return struct.pack(">3H", round(lightness * 652.8), round((a + 128) * 256), round((b + 128) * 256))


def test_a_cmyk_jpeg_is_converted_through_its_profile():
    """A CMYK JPEG (print work, some scanners) with a press profile: each ink combination
    shows as the colour the profile gives it, not Pillow's naive 255 - ink. (A CMYK JPEG
    without a profile still gets the naive conversion, as before.)"""
    corners = [(c, m, y, k) for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1)]

    def press(c, m, y, k):  # a made-up press, Lab under D50: inks darken and tint; with black, black
        if k:
            return 0.0, 0.0, 0.0
        return max(5.0, 100 - 45 * c - 50 * m - 10 * y), -35 * c + 70 * m - 5 * y, -45 * c - 5 * m + 90 * y

    identity = struct.pack(">2H", 0, 65535)
    a2b0 = (b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(struct.pack(">i", v) for v in (65536, 0, 0, 0, 65536, 0, 0, 0, 65536))
            + struct.pack(">2H", 2, 2) + identity * 4 + b"".join(_lab_v2(*press(*ink)) for ink in corners) + identity * 3)
    profile = icc.assemble(b"prtr", b"CMYK", b"Lab ", [
        *icc.text_tags("Made-up press"), (b"wtpt", icc.xyz_tag(icc.D50)), (b"A2B0", a2b0)])
    patches = np.repeat(np.array(corners, dtype=np.uint8) * 255, 16, axis=0)[None].repeat(16, axis=0)
    data = with_profile(patches, "JPEG", profile, "CMYK", quality=100)
    decoded = images.decode(data, 10_000)
    assert decoded.profile == "Made-up press"

    lab = np.array([press(*ink) for ink in corners])  # -> XYZ D50 -> Bradford to D65 -> sRGB
    f = np.stack([(lab[:, 0] + 16) / 116 + lab[:, 1] / 500, (lab[:, 0] + 16) / 116, (lab[:, 0] + 16) / 116 - lab[:, 2] / 200], -1)
    xyz_d50 = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * np.array([0.9642, 1.0, 0.8249])
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    to_d65 = np.linalg.inv(bradford) @ np.diag((bradford @ SRGB_D65.sum(axis=1)) / (bradford @ [0.9642, 1.0, 0.8249])) @ bradford
    expected = linear_to_srgb(xyz_d50 @ to_d65.T @ np.linalg.inv(SRGB_D65).T) * 255
    centres = rgb_of(decoded)[8, 8::16]
    assert_looks_the_same(centres, expected)
    naive = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[8, 8::16]
    assert delta_e(naive, expected).max() > 20


def test_unusable_profiles_are_ignored_as_browsers_ignore_them():
    """A damaged profile, or one that does not describe the pixels, neither fails the upload
    nor changes a colour: the pixels are taken as sRGB, as before profiles were read."""
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    cmyk = np.random.default_rng(3).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    hollow = icc.assemble(b"mntr", b"RGB ", b"XYZ ", icc.text_tags("No colorants, no curves"))
    cases = [
        (with_profile(rgb, "PNG", b"not a profile at all" * 8), with_profile(rgb, "PNG", None)),
        (with_profile(rgb, "PNG", icc.SRGB[:200]), with_profile(rgb, "PNG", None)),  # truncated
        (with_profile(rgb, "PNG", lab), with_profile(rgb, "PNG", None)),  # a Lab profile on RGB pixels
        (with_profile(rgb, "PNG", hollow), with_profile(rgb, "PNG", None)),  # reads, but converts nothing
        (with_profile(cmyk, "JPEG", SPACES["Display P3"][0], "CMYK", quality=100),
         with_profile(cmyk, "JPEG", None, "CMYK", quality=100)),  # an RGB profile on CMYK pixels
    ]
    for tagged, plain in cases:
        decoded = images.decode(tagged, 10_000)
        assert decoded.profile is None
        assert np.array_equal(decoded.pixels, images.decode(plain, 10_000).pixels)


def test_a_profile_name_is_shown_only_as_safe_text():
    """The name is the uploader's text: control characters become spaces, at most 64 characters."""
    name = "Evil\x1b[31m\r\nSet-Cookie: x=1 " + "A" * 200
    profile = icc.rgb_profile(name, ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06)), D65, 2.2)
    decoded = images.decode(with_profile(np.zeros((4, 4, 3), np.uint8), "PNG", profile), 10_000)
    assert decoded.profile == ("Evil [31m Set-Cookie: x=1 " + "A" * 200)[:64]
    assert decoded.profile.isprintable()
