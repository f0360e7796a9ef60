"""Where the pixels go: ``placement`` maps the photo's pixel coordinates to those of the image
preprocess() returns, checked on real pixels (a marked pixel is found where the map says)."""

from __future__ import annotations

import numpy as np
import pytest

from processing.images.preprocess import map_box, placement, preprocess
from processing.jobs.options import JobOptions


@pytest.mark.parametrize("options", [
    {}, {"crop": "40,30,200,150"}, {"rotate": 90}, {"rotate": 180}, {"rotate": 270},
    {"max_side": 100}, {"crop": "40,30,200,150", "rotate": 90, "max_side": 64}, {"rotate": 270, "max_side": 120},
])
def test_a_marked_pixel_lands_where_the_placement_says(options):
    width, height = 320, 240
    job = JobOptions(**options)
    for x, y in [(100, 80), (41, 31), (230, 170), (150, 60)]:
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[y, x] = 255
        out, _ = preprocess(pixels, job)
        found = np.argwhere(out[:, :, 0] == out[:, :, 0].max())  # rows, cols of the (blurred) mark
        if out.max() == 0:
            continue  # cropped away
        centre = found.mean(axis=0)[::-1]  # x, y of the mark's centre in the output
        x0, y0, x1, y1 = map_box((x, y, x + 1, y + 1), placement(job, width, height))
        expected = ((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5)
        assert np.allclose(centre, expected, atol=1.0), (options, (x, y), centre, expected)


def test_boxes_go_there_and_back():
    job = JobOptions(crop="10,20,300,200", rotate=90, max_side=150)
    matrix = placement(job, 400, 300)
    box = (50.0, 60.0, 120.0, 140.0)
    back = map_box(map_box(box, matrix), np.linalg.inv(matrix))
    assert np.allclose(back, box)
