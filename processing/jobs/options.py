"""What a caller may ask of a job, validated field by field (the API's 422s come from here)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What /openapi.json says a crop is (ASCII digits and spaces only, so that JSON Schema's and
# Python's regular expressions agree on it): x,y,width,height with width and height >= 16.
_SIDE = "0*(?:1[6-9]|[2-9][0-9]|[1-9][0-9]{2,})"
CROP_PATTERN = f"^ *[0-9]+ *, *[0-9]+ *, *{_SIDE} *, *{_SIDE} *$"


class JobOptions(BaseModel):
    """Restoration options. Every field has a default, so an upload alone is a valid job."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["1.3", "1.4"] = Field("1.4", description="GFPGAN version: 1.4 is sharper, 1.3 more natural")
    upscale: int = Field(2, ge=1, le=4, description="Output size as a multiple of the input (1-4)")
    only_center_face: bool = Field(False, description="Restore only the face nearest the centre")
    aligned: bool = Field(
        False, description="The input is already a face cropped and aligned like FFHQ (skips detection)"
    )
    strength: float = Field(1.0, ge=0.0, le=1.0, description="0 keeps the original faces, 1 is full restoration")
    blend_mask: Literal["parse", "box"] = Field(
        "parse",
        description="parse: GFPGAN's face-shaped mask (ParseNet); box: a feathered square that skips the parsing network",
    )
    background: Literal["lanczos", "realesrgan"] = Field(
        "lanczos",
        description="How the rest of the photo is enlarged: lanczos (fast) or realesrgan "
        "(Real-ESRGAN x2, sharper, about 35 s per input megapixel on 2 vCPU)",
    )
    output_format: Literal["png", "jpeg", "webp"] = Field("png", description="Format of the restored image")
    quality: int = Field(92, ge=1, le=100, description="JPEG/WebP quality (ignored for PNG)")

    # Preprocessing, applied in this order before faces are detected (images.preprocess).
    auto_orient: bool = Field(True, description="Turn the photo upright as its camera recorded (EXIF orientation)")
    crop: str | None = Field(
        None, description="Keep only this rectangle: x,y,width,height in pixels of the upright photo "
        "(width and height at least 16)", json_schema_extra={"pattern": CROP_PATTERN},
    )
    # An int checked by hand: form fields arrive as text, which a Literal of ints refuses.
    rotate: int = Field(0, description="Rotate clockwise by this many degrees", json_schema_extra={"enum": [0, 90, 180, 270]})
    max_side: int | None = Field(
        None, ge=64, le=16384, description="Shrink so the longer side is at most this many pixels (faster)"
    )
    denoise: bool = Field(False, description="Reduce grain and JPEG noise before restoring (slower)")
    auto_contrast: bool = Field(False, description="Stretch faded contrast (old prints)")
    white_balance: bool = Field(False, description="Remove a colour cast (yellowed or blue photos)")

    @field_validator("rotate")
    @classmethod
    def _quarter_turns(cls, value: int) -> int:
        if value not in (0, 90, 180, 270):
            raise ValueError("rotate must be 0, 90, 180 or 270")
        return value

    @field_validator("crop")
    @classmethod
    def _crop_shape(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r" *[0-9]+ *, *[0-9]+ *, *[0-9]+ *, *[0-9]+ *", value):
            raise ValueError("crop must be x,y,width,height (four whole numbers)")
        x, y, w, h = (int(part) for part in value.split(","))
        if w < 16 or h < 16:
            raise ValueError("crop must be at least 16x16 pixels")
        return f"{x},{y},{w},{h}"

    def crop_box(self) -> tuple[int, int, int, int] | None:
        return tuple(int(part) for part in self.crop.split(",")) if self.crop else None  # type: ignore[return-value]

    def restore_options(self, max_faces: int):
        from ..engine.pipeline import RestoreOptions

        return RestoreOptions(
            model=self.model,
            upscale=self.upscale,
            only_center_face=self.only_center_face,
            aligned=self.aligned,
            strength=self.strength,
            blend_mask=self.blend_mask,
            max_faces=max_faces,
            background=self.background,
        )
