"""What a caller may ask of a job, validated field by field (the API's 422s come from here)."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What /openapi.json says a crop is (ASCII digits and spaces only, so that JSON Schema's and
# Python's regular expressions agree on it): x,y,width,height with width and height >= 16.
_SIDE = "0*(?:1[6-9]|[2-9][0-9]|[1-9][0-9]{2,})"
CROP_PATTERN = f"^ *[0-9]+ *, *[0-9]+ *, *{_SIDE} *, *{_SIDE} *$"


MAX_FACE_BOXES = 50
# What /openapi.json says face boxes are (ASCII digits and spaces, as for the crop): up to
# MAX_FACE_BOXES of x,y,width,height separated by ';', each with some area.
_BOX = " *[0-9]+ *, *[0-9]+ *, *0*[1-9][0-9]* *, *0*[1-9][0-9]* *"
FACE_BOXES_PATTERN = f"^{_BOX}(;{_BOX}){{0,{MAX_FACE_BOXES - 1}}}$"


class InvalidOption(ValueError):
    """An option that is well formed but does not fit this photo or job: a 422 naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


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
    color: Literal["auto", "keep", "restore"] = Field(
        "auto",
        description="auto: black-and-white and toned (sepia, cyanotype) photos keep their tone, colour photos their "
        "restored colours; keep: always give the faces the photo's tone; restore: GFPGAN's colours as they come",
    )
    texture: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Bring back the original skin texture and film grain (0 = as restored, 1 = all of the "
        "original's fine detail); counters the smooth, waxy look",
    )
    small_faces: Literal["auto", "off"] = Field(
        "auto",
        description="auto: when a large photo's faces come out small (or none do), look again on tiles of a larger "
        "copy for smaller faces (a few seconds on a 12 MP photo); off: one look, faster, for photos with no small faces",
    )
    detect_only: bool = Field(
        False,
        description="Only find the faces (quick): the job lists each face's box and score, and "
        "POST /api/jobs/{id}/restore then restores the ones you choose",
    )
    face_boxes: str | None = Field(
        None,
        description="Restore only the faces at these boxes: x,y,width,height in pixels of the upright photo, "
        "several separated by ';' (a box chooses the face it overlaps most)",
        json_schema_extra={"pattern": FACE_BOXES_PATTERN},
    )
    precision: Literal["auto", "f32"] = Field(
        "auto",
        description="auto: the service's precision (/api/info: bf16 on CPUs with a fast native bf16 unit, about "
        "4x faster there, f32 elsewhere); f32: full 32-bit floating point for this job, the reference result "
        "(slower where the service runs bf16). The job's precision field says which ran",
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

    @field_validator("face_boxes")
    @classmethod
    def _boxes_shape(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        boxes = value.split(";")
        if len(boxes) > MAX_FACE_BOXES:
            raise ValueError(f"face_boxes must list 1 to {MAX_FACE_BOXES} boxes")
        for box in boxes:
            if not re.fullmatch(" *[0-9]+ *, *[0-9]+ *, *[0-9]+ *, *[0-9]+ *", box):
                raise ValueError(f"{box.strip()!r} is not x,y,width,height (four whole numbers)")
            if any(int(v) == 0 for v in box.split(",")[2:]):
                raise ValueError(f"{box.strip()!r} has no area")
        return ";".join(",".join(str(int(v)) for v in box.split(",")) for box in boxes)

    def face_box_list(self) -> list[tuple[float, float, float, float]] | None:
        """The boxes as x0, y0, x1, y1 in the upright input's pixels."""
        if not self.face_boxes:
            return None
        boxes = []
        for box in self.face_boxes.split(";"):
            x, y, w, h = (int(v) for v in box.split(","))
            boxes.append((float(x), float(y), float(x + w), float(y + h)))
        return boxes

    def crop_box(self) -> tuple[int, int, int, int] | None:
        return tuple(int(part) for part in self.crop.split(",")) if self.crop else None  # type: ignore[return-value]

    def restore_options(self, max_faces: int, width: int, height: int):
        """What the engine is asked, for a photo of this size (as uploaded, upright), and the
        map from the engine's pixels back to the photo's: face boxes cross it both ways."""
        from ..engine.pipeline import RestoreOptions
        from ..images.preprocess import map_box, placement

        framing = placement(self, width, height)
        boxes = self.face_box_list()
        return RestoreOptions(
            model=self.model,
            upscale=self.upscale,
            only_center_face=self.only_center_face,
            aligned=self.aligned,
            strength=self.strength,
            blend_mask=self.blend_mask,
            max_faces=max_faces,
            background=self.background,
            color=self.color,
            texture=self.texture,
            small_faces=self.small_faces,
            precision=self.precision,
            face_boxes=None if boxes is None else tuple(map_box(box, framing) for box in boxes),
        ), np.linalg.inv(framing)


# The options that decide which pixels the engine sees, and where, and which faces it finds
# there: a job restoring the faces another job found must frame the photo and look for faces
# the same way for the boxes to mean the same faces.
FRAMING_OPTIONS = ("auto_orient", "crop", "rotate", "max_side", "small_faces")


def check_face_boxes(options: JobOptions, width: int, height: int) -> None:
    for x0, y0, x1, y1 in options.face_box_list() or []:
        if x0 >= width or y0 >= height:
            raise InvalidOption("face_boxes", f"the box at {x0:.0f},{y0:.0f} lies outside the {width}x{height} photo")
