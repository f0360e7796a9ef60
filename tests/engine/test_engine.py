"""The engine: its exported networks compute what upstream's do, its options do what they
say, and the detector's downscale gives landmarks back in input pixels (the whole pipeline
against the stock one: test_pasteback.py; RetinaFace against facexlib's: test_detector.py).

Stand-in weights (random parameters): these tests check computation, never quality."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from processing.engine.detectors import FACE_SIZE, FACE_TEMPLATE, HaarStandInDetector
from processing.engine.networks import gfpgan_noise, to_input
from processing.engine.pipeline import Engine, RestoreOptions
from processing.engine.store import ModelStore
from tests.conftest import astronaut_bgr
from tests.engine.conftest import pinned, psnr


# -- faithfulness ------------------------------------------------------------------


def test_decoder_noise_is_an_input_that_reaches_the_output(engine, standin_weights, standin_models_fp32):
    """Stand-in checkpoints have zero noise strengths, so give every StyleConv a nonzero
    one, in the torch module and in the exported graph alike: the runtime then matches
    upstream's forward fed the same noise, and different noise gives a different face."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    from processing.checkpoints import architectures
    from processing.checkpoints.weights import GFPGAN_FILES

    net = architectures.load_gfpgan(standin_weights / GFPGAN_FILES["1.4"])
    strengths = {}
    for index, conv in enumerate([net.stylegan_decoder.style_conv1, *net.stylegan_decoder.style_convs]):
        conv.weight.data.fill_(0.05 * (index + 1))
        strengths[f"noise{index}"] = 0.05 * (index + 1)

    graph = onnx.load(ModelStore(standin_models_fp32).path("gfpgan-1.4"))
    for node in graph.graph.node:
        noise = next((i for i in node.input if i in strengths), None)
        if node.op_type == "Mul" and noise:
            strength = f"test_strength_{noise}"
            graph.graph.initializer.append(numpy_helper.from_array(np.array([strengths[noise]], np.float32), strength))
            node.input[:] = [strength if i != noise else i for i in node.input]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del graph

    crop = cv2.resize(astronaut_bgr(), (FACE_SIZE, FACE_SIZE))
    x = to_input(crop)
    noise_a, noise_b = gfpgan_noise(1), gfpgan_noise(2)
    feed = lambda noise: {"input": x, **{f"noise{i}": n for i, n in enumerate(noise)}}  # noqa: E731
    runtime_a = session.run(None, feed(noise_a))[0]
    runtime_b = session.run(None, feed(noise_b))[0]
    with torch.inference_mode():
        upstream_a = architectures.forward_with_noise(net, torch.from_numpy(x), noise_a).numpy()
    assert np.abs(runtime_a - upstream_a).max() < 1e-3
    assert np.abs(runtime_a - runtime_b).max() > 1e-2  # the noise matters once it has a strength


def test_torch_backend_computes_the_same(engine, standin_weights, astronaut_face):
    """The reference backend (upstream torch modules) agrees with the exported graphs."""
    from processing.checkpoints.torch_backend import TorchBackend

    image, landmarks = astronaut_face
    torch_engine = Engine(TorchBackend(standin_weights, threads=2), allow_standin=True)
    matrix = cv2.estimateAffinePartial2D(landmarks, FACE_TEMPLATE, method=cv2.LMEDS)[0]
    aligned = cv2.warpAffine(image, matrix, (FACE_SIZE, FACE_SIZE))
    ours = engine.restore(aligned, RestoreOptions(aligned=True))
    theirs = torch_engine.restore(aligned, RestoreOptions(aligned=True))
    assert psnr(ours.image, theirs.image) >= 60
    same = engine.parser.labels(ours.image) == torch_engine.parser.labels(ours.image)
    assert same.mean() > 0.999


# -- options -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_photo(astronaut_face):
    """The astronaut at 384x384 (restores are dominated by the fixed 512 face anyway)."""
    image, landmarks = astronaut_face
    small = cv2.resize(image, (384, 384), interpolation=cv2.INTER_AREA)
    return small, (landmarks + 0.5) * 0.75 - 0.5


@pytest.mark.parametrize("upscale", [1, 3])
def test_upscale_sets_the_output_size(engine, small_photo, upscale):
    image, landmarks = small_photo
    result = engine.restore(image, RestoreOptions(upscale=upscale, blend_mask="box"), faces=[pinned(landmarks)])
    assert result.image.shape == (384 * upscale, 384 * upscale, 3)
    assert result.faces[0].after.shape == (FACE_SIZE, FACE_SIZE, 3)


def test_strength_zero_keeps_the_upscaled_input(engine, small_photo):
    image, landmarks = small_photo
    result = engine.restore(image, RestoreOptions(strength=0.0), faces=[pinned(landmarks)])
    upscaled = cv2.resize(image, (768, 768), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal(result.image, upscaled)
    assert np.array_equal(result.faces[0].after, result.faces[0].before)


def test_box_mask_skips_parsing_and_changes_only_the_face(engine, small_photo):
    image, landmarks = small_photo
    result = engine.restore(image, RestoreOptions(blend_mask="box"), faces=[pinned(landmarks)])
    assert result.timings["parse"] == 0.0
    upscaled = cv2.resize(image, (768, 768), interpolation=cv2.INTER_LANCZOS4)
    changed = np.any(result.image != upscaled, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any()
    # Changes stay inside the face square's footprint in the output (landmarks span ~40% of it).
    face_span = (landmarks.max(axis=0) - landmarks.min(axis=0)).max() * 2
    centre = landmarks.mean(axis=0) * 2
    assert np.abs(xs - centre[0]).max() < 2.5 * face_span and np.abs(ys - centre[1]).max() < 2.5 * face_span
    assert not changed[:, :50].any() and not changed[-50:, :].any()


def test_aligned_input_returns_the_restored_512_face(engine):
    face = cv2.resize(astronaut_bgr()[40:340, 150:450], (600, 600))
    result = engine.restore(face, RestoreOptions(aligned=True))
    assert result.image.shape == (FACE_SIZE, FACE_SIZE, 3)
    assert len(result.faces) == 1 and result.timings["restore"] > 0


def test_same_seed_same_output(engine, small_photo):
    image, landmarks = small_photo
    first = engine.restore(image, RestoreOptions(aligned=True, noise_seed=7))
    second = engine.restore(image, RestoreOptions(aligned=True, noise_seed=7))
    assert np.array_equal(first.image, second.image)


def test_parse_size_gives_a_cheaper_mask_of_the_same_shape(engine, astronaut_face):
    face = cv2.resize(astronaut_face[0], (FACE_SIZE, FACE_SIZE))
    full = engine.face_mask(face, 512)
    small = engine.face_mask(face, 256)
    assert full.shape == small.shape == (FACE_SIZE, FACE_SIZE)
    assert 0.0 <= small.min() and small.max() <= 1.0
    with pytest.raises(ValueError):
        engine.restore(face, RestoreOptions(parse_size=100))


# -- detection ------------------------------------------------------------------------


def test_detector_downscale_scales_landmarks_back(astronaut_face):
    """A 2x upscale detected through a 512 limit sees (nearly) the original pixels, so its
    landmarks are the original's times two; and detecting through the limit equals
    detecting on the downscaled copy by hand, scaled back."""
    image, _ = astronaut_face
    detector = HaarStandInDetector(max_side=512)
    base = detector.detect(image)[0].landmarks
    big = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_LANCZOS4)
    through_limit = detector.detect(big)[0].landmarks
    assert np.abs(through_limit - base * 2).max() < 8  # px at 1024: a Haar box step at most

    by_hand = HaarStandInDetector(max_side=0).detect(cv2.resize(big, (512, 512), interpolation=cv2.INTER_AREA))[0].landmarks
    np.testing.assert_allclose(through_limit, by_hand * 2, atol=1e-6)


def test_detection_decoding_matches_facexlib(standin_weights):
    """The numpy pre/post-processing around the exported detector computes what facexlib's
    detect_faces does on the same network outputs: priors, box and landmark decoding and
    the threshold (compared as sets: random scores saturate at 1.0, so ties make the
    order arbitrary), and NMS against torchvision's on untied scores."""
    import torch
    import torchvision
    from facexlib.detection.retinaface_utils import PriorBox, decode, decode_landm

    from processing.checkpoints import architectures
    from processing.engine import retinaface

    net = architectures.load_detector(standin_weights / "detection_Resnet50_Final.pth")
    height, width = 256, 320
    image = cv2.resize(astronaut_bgr(), (width, height))
    anchors = retinaface.priors(height, width)
    np.testing.assert_array_equal(anchors, PriorBox(net.cfg, image_size=(height, width)).forward().numpy())
    with torch.inference_mode():
        inputs = torch.from_numpy(np.ascontiguousarray((image.astype(np.float32) - [104, 117, 123]).astype(np.float32).transpose(2, 0, 1)[None]))
        loc, conf, landmarks = net(inputs)
        priors = torch.from_numpy(anchors)
        boxes = decode(loc[0], priors, net.cfg["variance"]) * torch.tensor([width, height] * 2)
        points = decode_landm(landmarks[0], priors, net.cfg["variance"]) * torch.tensor([width, height] * 5)
        scores = conf[0][:, 1]
        chosen = scores > 0.9
        expected = torch.cat((boxes[chosen], scores[chosen, None], points[chosen]), dim=1).numpy()
    got = retinaface.decode_detections(loc.numpy(), conf.numpy(), landmarks.numpy(), anchors, height, width, 0.9, None)
    assert len(expected) > 10 and got.shape == expected.shape
    order = lambda rows: rows[np.lexsort(rows[:, ::-1].T)]  # noqa: E731
    np.testing.assert_allclose(order(got), order(expected), rtol=1e-5, atol=1e-3)

    untied = np.random.default_rng(0).permutation(len(got)).astype(np.float32) / len(got)
    keep = retinaface.nms(got[:, :4], untied, 0.4)
    reference = torchvision.ops.nms(torch.from_numpy(got[:, :4].copy()), torch.from_numpy(untied), 0.4).numpy()
    np.testing.assert_array_equal(keep, reference)


def test_exports_are_kept_by_checkpoint_hash(standin_weights, standin_models, monkeypatch):
    """The store names each export by its checkpoint's hash, and exporting again with the
    same checkpoints exports nothing."""
    from processing.checkpoints import export
    from processing.checkpoints.weights import PARSER_FILE, expected_files

    path = ModelStore(standin_models).path("parser")
    assert expected_files(standin_weights)[PARSER_FILE][1][:16] in path.name

    def no_export(*args, **kwargs):
        raise AssertionError("an export made from the same checkpoint must not be redone")

    monkeypatch.setattr(export, "export", no_export)
    manifest = export.export_store(standin_weights, standin_models, log=lambda line: None)
    assert manifest["networks"]["parser"]["file"] == path.name
    assert manifest["kind"] == "standin" and set(manifest["networks"]) == {
        "gfpgan-1.4", "gfpgan-1.3", "detector", "parser", "background"}


def test_background_upsampler_export_matches_torch(engine, standin_weights):
    """Real-ESRGAN x2 as exported, tiled, equals the upstream module tiled the same way, on
    an odd-sized photo that takes several tiles."""
    from processing.checkpoints.torch_backend import TorchBackend
    from processing.engine.upsampler import TiledUpsampler

    image = cv2.resize(astronaut_bgr(), (101, 75), interpolation=cv2.INTER_AREA)
    ours = TiledUpsampler(engine.backend.background(), tile=48, pad=6).upscale(image)
    theirs = TiledUpsampler(TorchBackend(standin_weights, threads=2).background(), tile=48, pad=6).upscale(image)
    assert ours.shape == theirs.shape == (150, 202, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
