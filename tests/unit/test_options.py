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
    restore = JobOptions(upscale=3, strength=0.5).restore_options(max_faces=4)
    assert (restore.upscale, restore.strength, restore.max_faces) == (3, 0.5, 4)
