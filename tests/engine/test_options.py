"""The remaining restoration options, each shown to change what it says it changes:
only the centre face, the face cap, the model version and intermediate strength."""

from __future__ import annotations

import cv2
import numpy as np

from processing.engine.pipeline import RestoreOptions
from tests.conftest import astronaut_bgr


def two_astronauts() -> np.ndarray:
    """Two copies of the astronaut side by side on a wide canvas; the right one is nearer the centre."""
    face = cv2.resize(astronaut_bgr(), (320, 320), interpolation=cv2.INTER_AREA)
    canvas = np.full((360, 1000, 3), 200, np.uint8)
    canvas[20:340, 40:360] = face
    canvas[20:340, 420:740] = face
    return canvas


def centre_x(face) -> float:
    return (face.box[0] + face.box[2]) / 2


def test_only_center_face_keeps_the_face_nearest_the_centre(engine):
    image = two_astronauts()
    both = engine.detect(image, RestoreOptions())
    assert len(both) == 2
    (centre,) = engine.detect(image, RestoreOptions(only_center_face=True))
    assert centre_x(centre) == min((centre_x(f) for f in both), key=lambda x: abs(x - 500))
    result = engine.restore(image, RestoreOptions(only_center_face=True, blend_mask="box", upscale=1))
    assert len(result.faces) == 1
    # The left face is untouched: its region equals the input.
    assert np.array_equal(result.image[:, :300], image[:, :300])


def test_max_faces_caps_the_faces_restored(engine):
    assert len(engine.detect(two_astronauts(), RestoreOptions(max_faces=1))) == 1
    assert engine.detect(two_astronauts(), RestoreOptions(max_faces=0)) == []


def test_model_versions_are_different_networks(engine):
    face = cv2.resize(astronaut_bgr(), (512, 512))
    v14 = engine.restore(face, RestoreOptions(aligned=True, model="1.4")).image
    v13 = engine.restore(face, RestoreOptions(aligned=True, model="1.3")).image
    assert v13.shape == v14.shape == (512, 512, 3)
    assert not np.array_equal(v13, v14)


def test_half_strength_blends_halfway(engine):
    face = cv2.resize(astronaut_bgr(), (512, 512))
    full = engine.restore(face, RestoreOptions(aligned=True, strength=1.0)).image.astype(np.float64)
    half = engine.restore(face, RestoreOptions(aligned=True, strength=0.5)).image.astype(np.float64)
    expected = (face.astype(np.float64) + full) / 2
    assert np.abs(half - expected).max() <= 1.0
