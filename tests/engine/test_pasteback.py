"""Paste-back and masks against the stock pipeline (GFPGANer.enhance, benchmarks/stock.py)
on the same landmarks and decoder noise: the ParseNet and box masks, upscale 1 to 4, a face
touching the border, two overlapping faces, 16-bit and RGBA files.

The stand-in ParseNet is given a structured mask (tests/engine/conftest.py) on both sides,
and each parse case checks the mask it blended with has holes and edges, so no case can pass
by comparing two plain resizes. Stand-in weights: computation, never quality."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from processing.engine.networks import ParseNetParser
from processing.engine.pipeline import RestoreOptions
from processing.images import codec
from tests.conftest import encoded
from tests.engine.conftest import pinned, psnr, restore_stock

# PSNR against the stock pipeline (OpenVINO here, torch there): measured, minus a margin.
# The restored faces differ by one level at ~70 of 262144 pixels (88.8-90.1 dB); with the
# box mask that is nearly all the outputs differ by (93.4-95.6 dB). With a ParseNet mask
# those faces flip ~25 labels of the structured mask, which the blur spreads into a mask
# change under 0.2%: one level at ~3% of the output pixels (66.6 dB). Two overlapping faces:
# 68.7 dB, since the engine warps each face over its own rectangle (whose fixed-point source
# coordinates can round 1/32 px apart from GFPGAN's full-frame warp) and rounds to 8 bits
# after each paste where GFPGAN keeps floats until the end. No pixel differs by more than 1.
FACE_PSNR = 80
IMAGE_PSNR = {"box": 85, "parse": 60}
OVERLAPPING_PSNR = 62
VARIANTS = [(2, "parse"), (2, "box"), (1, "box"), (3, "box"), (4, "box")]  # (upscale, blend_mask)


def cut(astronaut_face, top: int, left: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` square of the astronaut at (top, left), and its landmarks there."""
    image, landmarks = astronaut_face
    return image[top: top + size, left: left + size].copy(), landmarks - [left, top]


@pytest.fixture(scope="module")
def portrait(astronaut_face):
    """256x256, the face in the middle (its 512 template square maps to ~163 px here)."""
    return cut(astronaut_face, 0, 96)


@pytest.fixture(scope="module")
def parity_engine(engine, structured_parser):
    """The session engine with the structured stand-in ParseNet the stock pipeline has."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "parser", ParseNetParser(structured_parser, threads=2, runtime="openvino"))
        yield engine


@pytest.fixture
def masks(parity_engine, monkeypatch) -> list[np.ndarray]:
    """Every paste-back mask the engine makes during the test."""
    made = []
    face_mask = parity_engine.face_mask

    def recording(face, parse_size=512):
        made.append(face_mask(face, parse_size))
        return made[-1]

    monkeypatch.setattr(parity_engine, "face_mask", recording)
    return made


def assert_structured(mask: np.ndarray) -> None:
    """Inside the blur's reach from the cleared border, some of the face is dropped and
    some kept: a mask with a shape, not a blurred full (or empty) square."""
    inner = mask[64:-64, 64:-64]
    dropped = float(np.mean(inner < 0.5))
    assert 0.05 < dropped < 0.95, f"the stand-in ParseNet mask is trivial ({dropped:.0%} dropped)"


@dataclass
class Restored:
    ours: object  # RestoreResult
    stock: np.ndarray
    stock_faces: list[np.ndarray]


def restore_both(engine, stock, data: bytes, landmarks, upscale: int = 2, blend_mask: str = "parse") -> Restored:
    """The file through the stock pipeline and through ours (the service's decode), with
    the same landmarks and decoder noise."""
    stock_image, stock_faces = restore_stock(stock, data, landmarks, upscale, blend_mask)
    pixels = codec.decode(data, 10**8).pixels
    options = RestoreOptions(upscale=upscale, blend_mask=blend_mask, noise_seed=0)
    ours = engine.restore(pixels, options, faces=[pinned(marks) for marks in landmarks])
    assert ours.image.shape == stock_image.shape
    assert len(ours.faces) == len(stock_faces) == len(landmarks)
    return Restored(ours, stock_image, stock_faces)


def assert_parity(restored: Restored, masks, blend_mask: str, where=np.s_[:], min_psnr: float | None = None) -> None:
    """Each restored face and the whole output (``where``) match the stock pipeline's; a
    ParseNet mask was made for each face, and has a shape."""
    for item, stock_face in zip(restored.ours.faces, restored.stock_faces):
        assert psnr(item.after, stock_face) >= FACE_PSNR
    if blend_mask == "parse":
        assert len(masks) == len(restored.ours.faces)
        for mask in masks:
            assert_structured(mask)
    else:
        assert masks == []
    assert psnr(restored.ours.image[where], restored.stock[where]) >= (min_psnr or IMAGE_PSNR[blend_mask])


@pytest.fixture(scope="module")
def stock_portrait(stock, portrait, structured_parser) -> dict:
    """The stock pipeline on the portrait: ``enhance`` once (upscale 2, ParseNet mask), then
    its paste-back again for each variant from the same restored face, as ``enhance`` does
    after GFPGAN (get_inverse_affine, paste_faces_to_input_image); GFPGAN itself runs once."""
    image, landmarks = portrait
    first = restore_stock(stock, encoded(image), [landmarks])
    helper = stock.restorer.face_helper
    pasted = {(2, "parse"): first}
    try:
        for upscale, blend_mask in VARIANTS[1:]:
            helper.set_upscale_factor(upscale)
            helper.use_parse = blend_mask == "parse"
            helper.inverse_affine_matrices = []
            helper.get_inverse_affine(None)
            pasted[upscale, blend_mask] = (helper.paste_faces_to_input_image(), first[1])
    finally:
        helper.set_upscale_factor(2)
        helper.use_parse = True
    return pasted


@pytest.mark.parametrize("upscale, blend_mask", VARIANTS)
def test_portrait_matches_stock(parity_engine, stock_portrait, masks, portrait, upscale, blend_mask):
    image, landmarks = portrait
    options = RestoreOptions(upscale=upscale, blend_mask=blend_mask, noise_seed=0)
    ours = parity_engine.restore(image, options, faces=[pinned(landmarks)])
    assert ours.image.shape == (256 * upscale, 256 * upscale, 3)
    assert_parity(Restored(ours, *stock_portrait[upscale, blend_mask]), masks, blend_mask)


def test_face_touching_the_border_matches_stock(parity_engine, stock, masks, astronaut_face):
    """The face's square reaches past the top and left edges: the crop is filled with
    GFPGAN's grey there, and the paste (the box mask's erosion and blur too) is clipped to
    the frame."""
    image, landmarks = cut(astronaut_face, 40, 190)
    assert landmarks[:, 0].min() < 20 and landmarks[:, 1].min() < 60
    restored = restore_both(parity_engine, stock, encoded(image), [landmarks], blend_mask="box")
    assert_parity(restored, masks, "box")


def test_two_overlapping_faces_match_stock(parity_engine, stock, masks, portrait):
    """Two faces 110 px apart: their squares (~163 px) overlap, so the second is blended
    over the first's paste, in order."""
    image, landmarks = portrait
    pair = np.hstack((image[:, :183], image[:, 73:]))
    second = landmarks + [183 - 73, 0]
    restored = restore_both(parity_engine, stock, encoded(pair), [landmarks, second], blend_mask="box")
    assert_parity(restored, masks, "box", min_psnr=OVERLAPPING_PSNR)


def test_16_bit_file_decodes_alike_in_both(portrait):
    """A 16-bit PNG. The stock script reads it with IMREAD_COLOR and the service with
    Pillow: both keep each sample's high byte, so both restore the same 8-bit pixels, here
    the portrait's, whose restore matches (test_portrait_matches_stock). GFPGANer's own
    16-bit branch (x / 65535 * 255 in floats) is not the script's: it only sees arrays that
    callers decode with IMREAD_UNCHANGED."""
    image, _ = portrait
    low = np.random.default_rng(0).integers(0, 256, image.shape)
    data = encoded((image.astype(np.uint16) << 8) + low.astype(np.uint16))
    stock_pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(stock_pixels, image)
    assert np.array_equal(codec.decode(data, 10**8).pixels, image)


def test_rgba_file_matches_stock_where_it_is_opaque(parity_engine, stock, masks, portrait):
    """An RGBA PNG with a transparent corner (black underneath). The stock script's
    IMREAD_COLOR drops the alpha and shows the black; the service puts transparent pixels
    on white, as a viewer shows them. Everywhere the photo is opaque the two restore alike."""
    image, landmarks = portrait
    rgba = np.dstack((image, np.full(image.shape[:2], 255, np.uint8)))
    rgba[200:, 200:] = 0
    restored = restore_both(parity_engine, stock, encoded(rgba), [landmarks], blend_mask="box")
    opaque = np.ones(restored.stock.shape[:2], bool)
    opaque[400 - 16:, 400 - 16:] = False  # Lanczos reaches 4 input pixels
    assert_parity(restored, masks, "box", where=opaque)
    corner = np.s_[400 + 16:, 400 + 16:]
    assert (restored.ours.image[corner] == 255).all() and (restored.stock[corner] == 0).all()
