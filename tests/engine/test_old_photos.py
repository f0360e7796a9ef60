"""Old photos, on real pixels: black-and-white stays black-and-white, a sepia photo keeps its
hue and its depth of tone, a colour photo is left alone by color=auto; the texture option brings back the
original's fine detail inside the face and nowhere else.

The stand-in GFPGAN paints arbitrary colours into every face, which is exactly the failure
these options exist for: whatever it paints, the tone must come back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from processing.engine.detectors import FACE_SIZE, HaarStandInDetector
from processing.engine.networks import gfpgan_noise
from processing.engine.pipeline import RestoreOptions
from processing.engine.tone import COLOUR, MONOCHROME, TONED, analyse
from tests.conftest import astronaut_bgr


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.resize(astronaut_bgr(), (384, 384), interpolation=cv2.INTER_AREA)


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def sepia(image: np.ndarray) -> np.ndarray:
    """The classic sepia toning matrix over the grey photo (warm shadows, cream highlights)."""
    rgb = cv2.cvtColor(grey(image), cv2.COLOR_BGR2RGB).astype(np.float32)
    matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    toned = np.clip(rgb @ matrix.T, 0, 255).astype(np.uint8)
    return cv2.cvtColor(toned, cv2.COLOR_RGB2BGR)


def lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)


def sepia_curve() -> np.ndarray:
    """Lab (L, a, b) of every grey level through the sepia toning, by lightness: the chroma a
    sepia photo has at each lightness, from the toning itself rather than from tone.py's fit."""
    levels = np.arange(256, dtype=np.uint8)[None, :, None].repeat(3, axis=2)
    table = lab(sepia(levels))[0]
    return table[np.argsort(table[:, 0], kind="stable")]


def sepia_chroma_ratio(pixels: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Each pixel's chroma over the sepia photo's chroma at that pixel's lightness: the 10th,
    50th and 90th percentiles (1 is the photo's depth of tone). Pixels whose expected chroma is
    under 5 Lab units (near black) are left out: a ratio there means nothing."""
    curve = sepia_curve()
    values = lab(pixels).reshape(-1, 3) if where is None else lab(pixels)[where]
    expected = np.hypot(np.interp(values[:, 0], curve[:, 0], curve[:, 1]),
                        np.interp(values[:, 0], curve[:, 0], curve[:, 2]))
    measured = np.hypot(values[:, 1], values[:, 2])
    return np.percentile(measured[expected > 5] / expected[expected > 5], [10, 50, 90])


def footprint(engine, image, **options):
    """Where the paste-back changed the photo (strength 1 against strength 0), and the
    strength-1 restoration (color=restore) it was measured on."""
    restored = engine.restore(image, RestoreOptions(color="restore", **options))
    untouched = engine.restore(image, RestoreOptions(color="restore", strength=0.0, **options)).image
    return np.any(restored.image != untouched, axis=2), restored


def test_the_photo_is_read_as_what_it_is(photo):
    assert analyse(grey(photo)).kind == MONOCHROME
    assert analyse(sepia(photo)).kind == TONED
    assert analyse(photo).kind == COLOUR
    # A greyscale JPEG's chroma noise is still black-and-white.
    ok, jpeg = cv2.imencode(".jpg", grey(photo), [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert analyse(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)).kind == MONOCHROME


def test_a_black_and_white_photo_comes_back_with_equal_channels(engine, photo):
    image = grey(photo)
    painted = engine.restore(image, RestoreOptions(color="restore"))
    assert len(painted.faces) == 1 and np.ptp(painted.image.astype(int), axis=2).max() > 20, "GFPGAN painted colour"
    kept = engine.restore(image, RestoreOptions())
    assert kept.tone == MONOCHROME
    assert np.ptp(kept.image.astype(int), axis=2).max() == 0, "every pixel grey"
    assert np.ptp(kept.faces[0].after.astype(int), axis=2).max() == 0
    # The face was still restored: its lightness is the restoration's, not the input's.
    restored_l = cv2.cvtColor(painted.faces[0].after, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(cv2.cvtColor(kept.faces[0].after, cv2.COLOR_BGR2GRAY), restored_l)


def test_a_sepia_photo_keeps_its_hue_and_its_chroma(engine, photo):
    image = sepia(photo)
    where, painted = footprint(engine, image)
    kept = engine.restore(image, RestoreOptions())
    assert kept.tone == TONED
    upscaled = cv2.resize(image, (768, 768), interpolation=cv2.INTER_LANCZOS4)

    def hue(pixels) -> np.ndarray:
        values = lab(pixels)[where]
        return np.degrees(np.arctan2(values[:, 2], values[:, 1]))

    target = np.median(hue(upscaled))
    assert abs(np.median(hue(kept.image)) - target) < 3.0, "the face has the photo's hue"
    assert np.percentile(np.abs(hue(kept.image) - target), 90) < 8.0
    assert np.percentile(np.abs(hue(painted.image) - target), 90) > 20.0, "without it the stand-in's colours show"
    # ... and as much of it as the photo has at each lightness: a face toned at a third of
    # the photo's chroma has the right hue and still looks washed out.
    low, median, high = sepia_chroma_ratio(kept.faces[0].after)
    assert 0.9 < low and high < 1.1 and abs(median - 1) < 0.03, (low, median, high)
    low, median, high = sepia_chroma_ratio(kept.image, where)
    assert 0.9 < low and high < 1.1 and abs(median - 1) < 0.03, (low, median, high)
    assert sepia_chroma_ratio(painted.faces[0].after)[1] > 2, "the stand-in paints other chroma"


def test_a_colour_photo_is_untouched_by_auto_and_toned_by_keep(engine, photo):
    auto = engine.restore(photo, RestoreOptions())
    restore = engine.restore(photo, RestoreOptions(color="restore"))
    assert auto.tone == COLOUR and restore.tone == ""
    assert np.array_equal(auto.image, restore.image)
    keep = engine.restore(photo, RestoreOptions(color="keep"))
    assert not np.array_equal(keep.faces[0].after, restore.faces[0].after)


def high_frequency_energy(pixels: np.ndarray, where: np.ndarray) -> float:
    return float(np.var(cv2.Laplacian(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY).astype(np.float32), cv2.CV_32F)[where]))


@pytest.fixture(scope="module")
def grainy(photo) -> np.ndarray:
    """The photo with film grain (what a scan of an old print carries)."""
    noise = np.random.default_rng(3).normal(0, 12, photo.shape[:2])[:, :, None]
    return np.clip(photo.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def test_texture_zero_is_the_restoration_itself(engine, photo):
    image = cv2.resize(photo, (FACE_SIZE, FACE_SIZE))
    result = engine.restore(image, RestoreOptions(aligned=True, color="restore", texture=0.0))
    direct = engine._restorer("1.4")(image, gfpgan_noise(0))
    assert np.array_equal(result.image, direct)


def test_texture_zero_leaves_a_detected_face_as_restored(engine, photo):
    """The same on the detector's path (the face found, aligned, restored, pasted back): the
    face is GFPGAN's output on its aligned crop, with nothing added."""
    result = engine.restore(photo, RestoreOptions(color="restore", texture=0.0))
    assert len(result.faces) == 1 and "texture" not in result.timings
    face = result.faces[0]
    assert np.array_equal(face.after, engine._restorer("1.4")(face.before, gfpgan_noise(0)))


def test_texture_brings_detail_back_inside_the_face_and_nowhere_else(engine, grainy):
    where, plain = footprint(engine, grainy, blend_mask="box")
    face = where & (cv2.erode(where.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0)  # well inside the face
    outputs = {0.0: plain.image} | {t: engine.restore(grainy, RestoreOptions(color="restore", blend_mask="box",
                                                                            texture=t)).image for t in (0.5, 1.0)}
    energy = [high_frequency_energy(outputs[t], face) for t in (0.0, 0.5, 1.0)]
    assert energy[0] < energy[1] < energy[2], energy
    for t in (0.5, 1.0):
        changed = np.any(outputs[t] != outputs[0.0], axis=2)
        assert changed.any() and not (changed & ~where).any(), "outside the face mask nothing changes"


def test_texture_and_tone_work_on_faces_found_by_the_detector(engine, photo):
    """The same path for a detected face (not pinned): the Haar stand-in finds the astronaut."""
    assert HaarStandInDetector(max_side=512).detect(grey(photo))
    result = engine.restore(grey(photo), RestoreOptions(texture=0.7))
    assert result.tone == MONOCHROME and result.timings["texture"] > 0 and result.timings["tone"] > 0
    assert np.ptp(result.image.astype(int), axis=2).max() == 0
