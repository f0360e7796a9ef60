"""RetinaFace as the service runs it (the exported graph on OpenVINO or ONNX Runtime, the
pre- and post-processing in numpy) against facexlib's ``RetinaFace.detect_faces`` on the
same weights, and the engine's detection on a downscaled copy.

The stand-in detector's heads are scaled (tests/engine/conftest.py, ``scored_detector``)
so that its scores are untied and spread: which faces pass a threshold, survive NMS and come
first is then decided by the numbers, not by the order ties happen to sort in."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from processing.engine.detectors import DETECTION_THRESHOLD, MIN_EYE_DISTANCE, RetinaFaceDetector
from processing.engine.pipeline import RestoreOptions
from processing.engine.retinaface import RetinaFaceNet
from tests.conftest import astronaut_bgr
from tests.engine.conftest import stock_landmarks


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """The astronaut at 330x241: odd sides, not multiples of RetinaFace's 32 px stride."""
    return cv2.resize(astronaut_bgr(), (330, 241), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def facexlib_net(stock, scored_detector):
    """facexlib's RetinaFace module (the stock pipeline's own) with the scored heads."""
    return stock.restorer.face_helper.face_det


def mean_subtracted(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((image.astype(np.float32) - [104, 117, 123]).astype(np.float32).transpose(2, 0, 1)[None])


@pytest.fixture(scope="module")
def facexlib_says(facexlib_net, photo) -> dict[str, np.ndarray]:
    """facexlib on the photo: the raw outputs, every anchor decoded (no threshold, an NMS
    that suppresses nothing), and GFPGANer's detection (0.97, NMS 0.4)."""
    import torch

    with torch.inference_mode():
        loc, conf, landmarks = (t.numpy() for t in facexlib_net(torch.from_numpy(mean_subtracted(photo))))
        return {
            "loc": loc, "conf": conf, "landmarks": landmarks,
            "every": facexlib_net.detect_faces(photo, -1.0, 1.0),
            "detected": facexlib_net.detect_faces(photo, DETECTION_THRESHOLD),
        }


@pytest.fixture(scope="module", params=["openvino", "onnxruntime"])
def ours(request, scored_detector) -> RetinaFaceNet:
    return RetinaFaceNet(scored_detector, threads=2, runtime=request.param)


def test_raw_outputs_match_facexlib(ours, facexlib_says, photo):
    """The exported graph's loc, conf (softmaxed) and landmarks equal facexlib's forward on
    the same mean-subtracted input, anchor for anchor."""
    got = ours.run({"input": mean_subtracted(photo)})
    anchors = 2 * sum(-(-241 // s) * -(-330 // s) for s in (8, 16, 32))
    for name, g in zip(("loc", "conf", "landmarks"), got):
        expected = facexlib_says[name]
        assert g.shape == expected.shape == (1, anchors, expected.shape[2]), name
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-4, err_msg=name)


def test_every_decoded_anchor_matches_facexlib(ours, facexlib_says, photo):
    """Before the score threshold (and with an NMS that suppresses nothing), every anchor's
    decoded box, score and 5 landmarks: the same rows as facexlib's ``detect_faces``,
    matched one to one (compared as sets: near-equal scores may sort either way)."""
    from scipy.spatial import cKDTree

    got, expected = ours.detect_faces(photo, -1.0, 1.0), facexlib_says["every"]
    assert got.shape == expected.shape and len(got) > 3000
    _, index = cKDTree(expected).query(got)
    assert np.array_equal(np.sort(index), np.arange(len(expected))), "not a one-to-one match"
    np.testing.assert_allclose(got, expected[index], rtol=1e-4, atol=1e-3)  # boxes reach thousands of px


def test_detect_faces_matches_facexlib_at_gfpgans_threshold(ours, facexlib_says, photo):
    """At GFPGANer's 0.97 with NMS: the same faces in the same order, and the threshold and
    the NMS each removed some."""
    got, expected = ours.detect_faces(photo, DETECTION_THRESHOLD), facexlib_says["detected"]
    above = np.count_nonzero(facexlib_says["every"][:, 4] > DETECTION_THRESHOLD)
    assert len(facexlib_says["every"]) > above > len(got) > 5
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


@pytest.fixture(scope="module")
def scored_net(scored_detector) -> RetinaFaceNet:
    return RetinaFaceNet(scored_detector, threads=2, runtime="openvino")


def test_detection_on_a_copy_scales_back_filters_and_orders(scored_net, photo):
    """A photo twice the size in 2x2 blocks, detected through a limit of the photo's size,
    is detected on exactly the photo (INTER_AREA averages equal blocks): every face is what
    RetinaFace reports on the photo, box and landmarks times two, best score first, minus
    those whose eyes are under 5 px apart in the input (not in the copy)."""
    big = cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    rows = scored_net.detect_faces(photo, DETECTION_THRESHOLD)  # on the copy
    faces = RetinaFaceDetector(scored_net, max_side=max(photo.shape[:2])).detect(big)

    eyes = 2 * np.linalg.norm(rows[:, 5:7] - rows[:, 7:9], axis=1)  # input pixels
    kept = rows[eyes >= MIN_EYE_DISTANCE]
    assert 0 < len(kept) < len(rows), "detections must fall on both sides of the eye-distance filter"
    assert ((eyes >= MIN_EYE_DISTANCE) & (eyes / 2 < MIN_EYE_DISTANCE)).any(), "some kept only in input pixels"
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    assert len(faces) == len(kept)
    for face, row in zip(faces, kept):
        assert face.score == pytest.approx(row[4])
        np.testing.assert_allclose(face.landmarks, row[5:].reshape(5, 2) * 2, rtol=1e-6)
        np.testing.assert_allclose(face.box, row[:4] * 2, rtol=1e-6)


def test_full_resolution_detection_equals_gfpganers(stock, scored_net, facexlib_net, photo):
    """Without a downscale the engine's detector reports the faces GFPGANer's own
    get_face_landmarks_5 keeps (eye-distance filter included), in the same order."""
    ours = RetinaFaceDetector(scored_net, max_side=0).detect(photo)
    theirs = stock_landmarks(stock, photo)
    assert len(ours) == len(theirs) > 3
    for face, marks in zip(ours, theirs):
        np.testing.assert_allclose(face.landmarks, marks, atol=1e-3)


def test_max_faces_keeps_the_highest_scores(engine, scored_net, photo, monkeypatch):
    """MAX_FACES (RestoreOptions.max_faces) keeps the best-scored faces, through detect
    and through a whole restore."""
    monkeypatch.setattr(engine, "detector", RetinaFaceDetector(scored_net, max_side=840))
    every = engine.detect(photo, RestoreOptions(max_faces=1000))
    best = sorted((face.score for face in every), reverse=True)
    assert len(every) > 4
    assert [face.score for face in engine.detect(photo, RestoreOptions(max_faces=3))] == best[:3]
    result = engine.restore(photo, RestoreOptions(max_faces=1, blend_mask="box", upscale=1))
    assert [item.face.score for item in result.faces] == best[:1]
