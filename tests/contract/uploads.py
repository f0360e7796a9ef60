"""Realistic uploads for Schemathesis (loaded through ``hooks`` in schemathesis.toml): a
``map_case`` hook that turns the bytes it draws for a
positive case's ``file`` (or each of ``files``) into a small image.

JSON Schema can say that a part is a file but not that it holds a JPEG, PNG or WebP, nor that
a crop or a face box lies inside the photo, nor which face indices a detection found: the
rules of a valid submission the spec states only in words. A positive case (one Schemathesis means to be valid) is made to keep them, so the API
must accept it (202) and the stateful phase gets real job and batch ids to follow. Negative
cases are left as drawn: their bytes are judged by content (415, 422) like any other upload.
Everything is derived from the drawn bytes, so a fixed seed gives the same images.
"""

from __future__ import annotations

import io
import random
import zlib

import schemathesis
from PIL import Image
from schemathesis import Case, GenerationMode, HookContext

_LARGEST_CROP_EXTENT = 256  # a crop reaching further is moved into the photo, which stays small


def _photo(drawn: bytes | str, at_least: tuple[int, int]) -> bytes:
    raw = drawn.encode("utf-8", "surrogatepass") if isinstance(drawn, str) else bytes(drawn)
    rng = random.Random(zlib.crc32(raw))
    size = (max(rng.randint(16, 96), at_least[0]), max(rng.randint(16, 96), at_least[1]))
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    image.paste(tuple(rng.randrange(256) for _ in range(3)), (0, 0, size[0] // 2, size[1] // 2))
    out = io.BytesIO()
    image.save(out, rng.choice(["PNG", "JPEG", "WEBP"]))
    return out.getvalue()


def _crop_extent(body: dict) -> tuple[int, int]:
    """The size a photo needs for the case's crop and face boxes (a box must start inside the
    photo); an oversized crop or box becomes the smallest one."""
    width = height = 0
    if "crop" in body:
        x, y, w, h = (int(part) for part in body["crop"].split(","))
        if x + w > _LARGEST_CROP_EXTENT or y + h > _LARGEST_CROP_EXTENT:
            body["crop"], (x, y, w, h) = "0,0,16,16", (0, 0, 16, 16)
        width, height = x + w, y + h
    if body.get("face_boxes"):
        boxes = [[int(v) for v in box.split(",")] for box in body["face_boxes"].split(";")]
        boxes = [box if box[0] < _LARGEST_CROP_EXTENT and box[1] < _LARGEST_CROP_EXTENT else [0, 0, 16, 16]
                 for box in boxes]
        body["face_boxes"] = ";".join(",".join(map(str, box)) for box in boxes)
        width = max(width, *(box[0] + 1 for box in boxes))
        height = max(height, *(box[1] + 1 for box in boxes))
    return width, height


@schemathesis.hook
def map_case(context: HookContext, case: Case) -> Case:
    meta = case.meta
    body = case.body
    if isinstance(body, dict):
        # A drawn webhook URL may name a real host on the internet (https://1.1 is 1.0.0.1), which
        # the service would then call: no case asks for one. tests/integration/test_webhooks.py
        # covers the field against a local receiver.
        body.pop("webhook", None)
        body.pop("webhook_events", None)
    if meta is not None and meta.generation.mode == GenerationMode.POSITIVE and case.headers:
        # An Idempotency-Key the fuzzer draws twice (an empty string, "0") for two different
        # requests is rightly a 422; a positive case is one request, so it goes without.
        case.headers.pop("Idempotency-Key", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE or not isinstance(body, dict):
        return case
    if "faces" in body:
        # Which faces exist is known only once the job has found them: a positive case restores
        # all of them (an index beyond the photo's faces is a 422, like a crop beyond the photo).
        del body["faces"]
    if "file" in body:
        body["file"] = _photo(body["file"], _crop_extent(body))
    elif isinstance(body.get("files"), list):
        extent = _crop_extent(body)
        body["files"] = [_photo(drawn, extent) for drawn in body["files"]]
    return case
