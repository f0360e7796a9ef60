"""What a caller may ask of a job: defaults, limits and field-level refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from processing.jobs.options import JobOptions


def test_options_defaults_and_limits():
    options = JobOptions()
    assert (options.model, options.upscale, options.strength, options.output_format) == ("1.4", 2, 1.0, "png")
    for bad in ({"upscale": 0}, {"upscale": 5}, {"strength": -0.1}, {"model": "1.2"}, {"quality": 101},
                {"crop": "0,0,8,8"}, {"rotate": 45}, {"max_side": 10}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            JobOptions(**bad)
    assert JobOptions(crop=" 1, 2 ,30,40").crop_box() == (1, 2, 30, 40)
    restore, unframed = JobOptions(upscale=3, strength=0.5).restore_options(max_faces=4, width=100, height=80)
    assert (restore.upscale, restore.strength, restore.max_faces, restore.face_boxes) == (3, 0.5, 4, None)


def test_face_boxes_reach_the_engine_in_its_pixels():
    options = JobOptions(face_boxes="100,50,40,40; 0,0,10,10", crop="50,0,200,200", max_side=100)
    assert options.face_boxes == "100,50,40,40;0,0,10,10"
    restore, unframed = options.restore_options(max_faces=10, width=300, height=200)
    assert restore.face_boxes == ((25.0, 25.0, 45.0, 45.0), (-25.0, 0.0, -20.0, 5.0))
