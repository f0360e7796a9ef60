"""The second detection pass (detectors.SecondPass): when it runs, the scaling and tiling
arithmetic, the merge of faces across tiles and with the first pass, and photos with faces
at several scales reaching it, on two detectors:

- ``SquareDetector``: white squares on black are its faces, found on its own downscaled copy
  down to a known smallest size (16 px, as RetinaFace's smallest anchor): exact answers;
- the Haar stand-in (what stand-in mode runs) on real pixels: astronaut faces at several
  sizes on a 12 MP photo (benchmarks/inputs.py), as the engine runs it by default.

Nothing here says how RetinaFace with official weights does: the stand-in RetinaFace finds
arbitrary faces. It gets the same plan, tiles and merge (SecondPass wraps either detector)."""

from __future__ import annotations

import inspect
import itertools

import cv2
import numpy as np
import pytest

from benchmarks.inputs import FOUR_FACES_12MP, GROUP_12MP, faces_on_coffee
from processing.config import Settings, SettingsError
from processing.engine import retinaface
from processing.engine.detectors import (FACE_TEMPLATE, SMALL_FACE_BAND, Face, RetinaFaceDetector, SecondPass, Tiling,
                                         axis_tiles, downscaled, duplicates, merged, scale_for, scaled_size)
from processing.engine.pipeline import Engine, RestoreOptions
from processing.engine.stages import Stages
from tests.conftest import astronaut_bgr


class SquareDetector:
    """Each white square on black is a face; it looks on a copy at most ``max_side`` and
    finds the squares at least MIN_FACE pixels there. Box and landmarks in input pixels
    (the FFHQ template stretched over the box), score 0.99."""

    name = "squares"
    MIN_FACE = 16.0

    def __init__(self, max_side: int = 840):
        self.max_side = max_side
        self.seen: list[tuple[int, int]] = []  # the shape of every image it was given

    def min_face(self, shape) -> float:
        return self.MIN_FACE / scale_for(shape, self.max_side)

    def detect(self, image: np.ndarray) -> list[Face]:
        self.seen.append(image.shape[:2])
        small, scale = downscaled(image, self.max_side)
        count, _, stats, _ = cv2.connectedComponentsWithStats((small[..., 0] > 127).astype(np.uint8))
        faces = []
        for x, y, w, h, _ in stats[1:]:
            if min(w, h) >= self.MIN_FACE:
                landmarks = ([x, y] + FACE_TEMPLATE / 512 * [w, h]) / scale
                faces.append(Face((x / scale, y / scale, (x + w) / scale, (y + h) / scale), 0.99, landmarks))
        return faces


def squares_photo(width: int, height: int, squares) -> np.ndarray:
    """Black, with a white square at each (x, y, side)."""
    image = np.zeros((height, width, 3), np.uint8)
    for x, y, side in squares:
        image[y: y + side, x: x + side] = 255
    return image


def boxes(faces) -> set[tuple[int, ...]]:
    return {tuple(int(round(v)) for v in face.box) for face in faces}


def face(box, score=0.99) -> Face:
    x0, y0, x1, y1 = box
    return Face(tuple(map(float, box)), score, [x0, y0] + FACE_TEMPLATE / 512 * [x1 - x0, y1 - y0])


# -- scaling and tiling arithmetic -----------------------------------------------------


def test_scale_and_size_of_a_copy():
    assert scale_for((3000, 4000, 3), 840) == 840 / 4000
    assert scaled_size((3000, 4000, 3), 840 / 4000) == (840, 630)
    assert scale_for((600, 800, 3), 840) == 1.0  # already small enough: the image itself
    assert scale_for((3000, 4000, 3), 0) == 1.0  # 0: no limit
    image = np.zeros((3000, 4000, 3), np.uint8)
    assert downscaled(image, 840)[0].shape == (630, 840, 3)


@pytest.mark.parametrize("length, tile, overlap", [
    (2520, 840, 96), (1890, 840, 96), (1680, 840, 64), (841, 840, 10), (5000, 840, 420), (3360, 837, 416), (840, 840, 96),
])
def test_tiles_cover_overlap_and_fit(length, tile, overlap):
    size, starts = axis_tiles(length, tile, overlap)
    assert size <= tile and starts[0] == 0 and starts[-1] + size == length  # within bounds, covering both ends
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert all(a + size - b >= overlap for a, b in zip(starts, starts[1:]))  # neighbours overlap enough
    if len(starts) > 1:  # the fewest tiles: one fewer could not cover the length with that overlap
        assert (len(starts) - 1) * (tile - overlap) + overlap < length


def test_every_face_up_to_the_overlap_lies_whole_in_some_tile():
    """The reason for the overlap: no face the second pass answers for is cut by every tile."""
    for length, tile, overlap in [(2520, 840, 96), (1890, 840, 96), (2000, 700, 300)]:
        size, starts = axis_tiles(length, tile, overlap)
        for begin, extent in itertools.product(range(0, length - overlap + 1, 7), (1, overlap // 2, overlap)):
            assert any(s <= begin and begin + extent <= s + size for s in starts), (length, begin, extent)


def test_retinaface_smallest_face_is_its_smallest_anchor():
    assert RetinaFaceDetector.MIN_FACE == retinaface._MIN_SIZES[0][0]
    detector = RetinaFaceDetector(net=None, max_side=840)
    assert detector.min_face((3000, 4000, 3)) == pytest.approx(16 * 4000 / 840)  # input pixels
    assert detector.min_face((600, 800, 3)) == 16


# -- when it runs ----------------------------------------------------------------------


def test_plan_for_a_large_photo_whose_faces_came_out_small():
    """4000x3000 photo: the first pass sees it at 0.21 (smallest face 16 / 0.21 = 76 px of
    the photo); a face under twice that asks for the second pass, on a copy at most 2520 px
    (0.63: down to 25 px), in tiles of at most 840 px that overlap by the largest face the
    pass answers for (2 x 76 px of the photo = 96 px of the copy)."""
    detector, second = SquareDetector(), SecondPass(2520)
    shape = (3000, 4000, 3)
    near_floor = face((100, 100, 240, 240))  # 140 px < 2 x 76
    tiling = second.plan(detector, shape, [near_floor])
    assert tiling is not None
    assert tiling.scale == pytest.approx(0.63) and tiling.size == (2520, 1890)
    assert tiling.overlap == 96 == int(np.ceil(SMALL_FACE_BAND * 16 / (840 / 4000) * 0.63))
    assert tiling.tile == (702, 694) and len(tiling.origins) == 4 * 3
    assert tiling.origins[:5] == ((0, 0), (606, 0), (1212, 0), (1818, 0), (0, 598))
    assert second.plan(detector, shape, []) == tiling  # nothing found on a large photo: look again


@pytest.mark.parametrize("case, shape, faces, limit, max_side", [
    ("faces well above the smallest size", (3000, 4000, 3), [face((0, 0, 160, 160))], None, 2520),
    ("a photo the first pass saw at full size", (768, 1024, 3), [], None, 2520),
    ("a copy not twice as fine as the first", (2000, 1500, 3), [], None, 1600),
    ("MAX_FACES already found", (3000, 4000, 3), [face((0, 0, 20, 20))] * 3, 3, 2520),
    ("turned off", (3000, 4000, 3), [], None, 0),
])
def test_no_second_pass(case, shape, faces, limit, max_side):
    assert SecondPass(max_side).plan(SquareDetector(), shape, faces, limit) is None, case


def test_a_detector_that_looks_at_full_size_needs_no_second_pass():
    assert SecondPass(2520).plan(SquareDetector(max_side=0), (3000, 4000, 3), []) is None


# -- mapping and merging -----------------------------------------------------------------


def test_tile_faces_map_back_to_input_pixels_and_cut_faces_are_dropped():
    tiling = Tiling(scale=0.5, size=(1000, 800), tile=(600, 500), overlap=200, origins=((0, 0), (400, 0), (0, 300), (400, 300)))
    found = face((10, 20, 50, 70))
    moved = tiling.to_input(found, (400, 300))
    assert moved.box == (820.0, 640.0, 900.0, 740.0)
    np.testing.assert_allclose(moved.landmarks, (found.landmarks + [400, 300]) * 2)
    assert moved.score == found.score
    # Edges inside the copy cut; the copy's own edges do not.
    assert tiling.cuts((570, 100, 600, 150), (0, 0))  # the first tile's right edge, inside the copy
    assert tiling.cuts((0, 100, 40, 150), (400, 0))  # the second tile's left edge
    assert tiling.cuts((100, 470, 140, 500), (0, 0))  # bottom edge, inside the copy
    assert not tiling.cuts((0, 0, 40, 40), (0, 0))  # the copy's corner
    assert not tiling.cuts((560, 460, 600, 500), (400, 300))  # the copy's far corner
    assert not tiling.cuts((100, 100, 140, 140), (400, 300))


def test_merge_keeps_first_pass_faces_and_the_best_of_each_duplicate():
    first = [face((0, 0, 100, 100), 0.98)]
    found = [
        face((2, 2, 101, 99), 0.999),  # the first pass's face again: its box stays
        face((500, 500, 540, 540), 0.97), face((502, 501, 541, 542), 0.995),  # one face from two tiles
        face((300, 300, 340, 340), 0.99),  # a new face
        face((600, 600, 700, 700), 0.98), face((640, 640, 660, 660), 0.99),  # a face and a piece inside it
    ]
    result = merged(first, found)
    assert boxes(result) == {(0, 0, 100, 100), (502, 501, 541, 542), (300, 300, 340, 340), (640, 640, 660, 660)}
    assert [f.score for f in result] == sorted((f.score for f in result), reverse=True)  # MAX_FACES keeps the best


def test_duplicates_by_overlap_or_centre():
    assert duplicates((0, 0, 10, 10), (1, 1, 11, 11))  # IoU 0.68
    assert not duplicates((0, 0, 10, 10), (6, 0, 16, 10))  # IoU 0.25, neither centre in the other
    assert duplicates((0, 0, 100, 100), (40, 40, 60, 60))  # IoU 0.04, but the centre is inside
    assert not duplicates((0, 0, 10, 10), (20, 20, 30, 30))


# -- photos with faces at several scales -------------------------------------------------

# On 4000x3000: the first pass finds squares >= 76 px (16 on its 840 copy), the second
# >= 25.4 px (16 on its 2520 copy). Two 60 px squares sit across the second pass's first
# tile boundaries (copy x 606 and 702 = photo x 962 and 1114).
SEVERAL_SCALES = [(300, 300, 400), (2000, 400, 120), (1500, 1500, 60), (930, 2000, 60), (1085, 2600, 60),
                  (3000, 2500, 30), (3500, 1000, 20)]


def test_squares_at_several_scales_reach_the_second_pass(engine, monkeypatch):
    """Through Engine.detect: the first pass finds the 400 and 120 px squares; the 120 px
    one is near its smallest, so the second pass runs and finds the 60 and 30 px ones (those
    across tile edges once each); the 20 px one is below both. It is timed and reported."""
    detector = SquareDetector()
    monkeypatch.setattr(engine, "detector", detector)
    monkeypatch.setattr(engine, "second_pass", SecondPass(2520))
    photo = squares_photo(4000, 3000, SEVERAL_SCALES)
    stage, reports = Stages(), []
    found = engine.detect(photo, RestoreOptions(), stage, lambda *report: reports.append(report))
    expected = {(x, y, x + s, y + s) for x, y, s in SEVERAL_SCALES if s >= 25.4}
    assert detector.seen[0] == (3000, 4000) and set(detector.seen[1:]) == {(694, 702)}  # the photo, then 12 tiles
    assert len(found) == len(expected)
    for got, want in zip(sorted(boxes(found)), sorted(expected)):
        assert np.abs(np.subtract(got, want)).max() <= 5  # photo pixels: a pixel of the first copy is 4.8
    assert stage.timings["detect_pass2"] > 0
    assert reports == [("detecting small faces", 0.07)]


def test_a_photo_whose_faces_are_large_skips_it(engine, monkeypatch):
    detector = SquareDetector()
    monkeypatch.setattr(engine, "detector", detector)
    monkeypatch.setattr(engine, "second_pass", SecondPass(2520))
    stage, reports = Stages(), []
    found = engine.detect(squares_photo(4000, 3000, [(300, 300, 400), (2000, 400, 300)]), RestoreOptions(), stage,
                          lambda *report: reports.append(report))
    assert len(found) == 2 and len(detector.seen) == 1
    assert stage.timings["detect_pass2"] == 0.0 and reports == []


def test_restore_reports_the_second_pass_in_order_and_in_its_timings(engine, monkeypatch):
    """2000x1500: the first pass sees it at 0.42 (smallest 38 px); a 70 px square is near
    that, so the second pass looks at full size and finds the 30 px one too."""
    monkeypatch.setattr(engine, "detector", SquareDetector())
    monkeypatch.setattr(engine, "second_pass", SecondPass(2520))
    reports = []
    result = engine.restore(squares_photo(2000, 1500, [(400, 400, 70), (1500, 1000, 30)]),
                            RestoreOptions(upscale=1, blend_mask="box"), lambda *report: reports.append(report))
    assert len(result.faces) == 2
    assert [stage for stage, _ in reports[:4]] == ["detecting", "detecting small faces", "restoring face 1/2", "restoring face 2/2"]
    fractions = [fraction for _, fraction in reports]
    assert fractions == sorted(fractions)
    assert 0 < result.timings["detect_pass2"] <= result.timings["detect"]


@pytest.fixture(scope="module")
def group_photo():
    """Astronaut faces at four sizes on a 4000x3000 photo (benchmarks/inputs.GROUP_12MP),
    through a JPEG as a job gets it; and each face's 5 landmarks."""
    pixels, landmarks = faces_on_coffee(GROUP_12MP)
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR), np.asarray(landmarks)


def test_a_group_photo_reaches_the_second_pass_with_the_haar_stand_in(engine, group_photo):
    """Real faces on real pixels, the engine as configured by default (stand-in mode: Haar).
    The first pass finds only the two front faces (560 px crops); they are near the
    smallest it sees there, so the second pass runs and finds the nine behind them (300 and
    200 px crops), each once, with landmarks where they were placed. The 120 px crops are
    below both passes (Haar's smallest box on a tile is 1/12 of its side)."""
    image, landmarks = group_photo
    assert engine.second_pass.max_side == Settings().detect_second_pass_max_side
    first = engine.detector.detect(image)
    assert len(first) == 2
    stage = Stages()
    found = engine.detect(image, RestoreOptions(max_faces=20), stage)
    assert stage.timings["detect_pass2"] > 0
    eye_spans = landmarks[:, 1, 0] - landmarks[:, 0, 0]
    for index, (x, y, side) in enumerate(GROUP_12MP):
        matches = [f for f in found if np.abs(f.landmarks - landmarks[index]).max() < 0.25 * eye_spans[index]]
        assert len(matches) == (1 if side >= 200 else 0), (x, y, side, [f.box for f in matches])


def test_small_faces_off_keeps_to_the_first_pass(engine, monkeypatch, group_photo):
    """small_faces=off: the photos above that the second pass searched are looked at once;
    the faces only it finds are not found, and it takes no time. auto is the default."""
    assert RestoreOptions().small_faces == "auto"
    squares = squares_photo(4000, 3000, SEVERAL_SCALES)
    found = {}
    with monkeypatch.context() as patched:
        patched.setattr(engine, "detector", SquareDetector())
        patched.setattr(engine, "second_pass", SecondPass(2520))
        for small_faces in ("auto", "off"):
            stage = Stages()
            found[small_faces] = engine.detect(squares, RestoreOptions(small_faces=small_faces), stage)
            assert (stage.timings["detect_pass2"] > 0) == (small_faces == "auto")
        assert len(engine.detector.seen) == 1 + 12 + 1  # auto: the photo and 12 tiles; off: the photo
    large = [(300, 300, 700, 700), (2000, 400, 2120, 520)]  # the squares the first pass finds
    assert len(found["off"]) == 2 and len(found["auto"]) == 6
    for got, want in zip(sorted(boxes(found["off"])), large):
        assert np.abs(np.subtract(got, want)).max() <= 5  # photo pixels: a pixel of the first copy is 4.8
    assert boxes(found["off"]) < boxes(found["auto"])

    image, _ = group_photo
    stage = Stages()
    assert len(engine.detect(image, RestoreOptions(max_faces=20, small_faces="off"), stage)) == 2
    assert stage.timings["detect_pass2"] == 0.0


@pytest.mark.parametrize("name", ["4 faces, 12 MP", "1 face, 1024 px"])
def test_ordinary_photos_skip_it_with_the_haar_stand_in(engine, name):
    """The fast default holds where the first pass's faces are well above its smallest."""
    if name == "4 faces, 12 MP":
        image, _ = faces_on_coffee(FOUR_FACES_12MP)
    else:
        image = cv2.resize(astronaut_bgr(), (1024, 1024), interpolation=cv2.INTER_LANCZOS4)
    faces = engine.detector.detect(image)
    assert faces and engine.second_pass.plan(engine.detector, image.shape, faces) is None


# -- the setting ---------------------------------------------------------------------------


def test_setting_reaches_the_engine_and_refuses_negative_sizes():
    assert Settings.from_env({"DETECT_SECOND_PASS_MAX_SIDE": "0"}).detect_second_pass_max_side == 0
    with pytest.raises(SettingsError, match="DETECT_SECOND_PASS_MAX_SIDE"):
        Settings.from_env({"DETECT_SECOND_PASS_MAX_SIDE": "-1"})
    default = inspect.signature(Engine.__init__).parameters["detect_second_pass_max_side"].default
    assert default == Settings().detect_second_pass_max_side
