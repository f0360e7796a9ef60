"""What a caller may ask of a job, validated field by field (the API's 422s come from here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .engine import RestoreOptions


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
    output_format: Literal["png", "jpeg", "webp"] = Field("png", description="Format of the restored image")
    quality: int = Field(92, ge=1, le=100, description="JPEG/WebP quality (ignored for PNG)")

    def restore_options(self, max_faces: int) -> RestoreOptions:
        return RestoreOptions(
            model=self.model,
            upscale=self.upscale,
            only_center_face=self.only_center_face,
            aligned=self.aligned,
            strength=self.strength,
            blend_mask=self.blend_mask,
            max_faces=max_faces,
        )
