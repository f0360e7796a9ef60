"""Property-based fuzzing (hypothesis) of the upload and decode path and of the worker's
inputs: whatever arrives, images.decode raises nothing but ImageRejected, the API never
answers 500, and the worker never raises out of a message."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image

from processing.images import codec as images
from processing.jobs.options import JobOptions
from processing.jobs.service import JobService
from tests.hardening.helpers import app_client, jpeg_bytes, with_jpeg_size, with_png_size

def fuzz(examples: int, deadline_ms: int) -> hsettings:
    # Derandomized: the same examples every run (no flaky CI, no example database),
    # counts kept modest so the whole file runs in well under a minute. Each example has a
    # deadline: an input that makes the decoder (or whatever is behind it) slow fails, with
    # room for a busy 2-core machine (a typical example takes a few milliseconds).
    return hsettings(max_examples=examples, deadline=timedelta(milliseconds=deadline_ms), derandomize=True,
                     database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _seed(fmt: str, **save) -> bytes:
    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), "RGB")
    if fmt == "PNG-P":
        image, fmt = image.convert("P"), "PNG"
    if fmt == "PNG-RGBA":
        image, fmt = image.convert("RGBA"), "PNG"
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 8
    image.save(out, fmt, **({"exif": exif} if fmt in ("JPEG", "WEBP") else {}), **save)
    return out.getvalue()


_JPEG = jpeg_bytes(32, 24)
SEEDS = [
    _seed("JPEG", quality=80),
    _seed("JPEG", quality=80, progressive=True),
    _seed("PNG"),
    _seed("PNG-P"),
    _seed("PNG-RGBA"),
    _seed("WEBP", quality=70),
    _seed("WEBP", lossless=True),
]


@st.composite
def mutated_images(draw, max_mutations: int = 6) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, max_mutations))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0xD8, 0xD9]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
    return bytes(data)


uploads = st.one_of(mutated_images(), st.binary(max_size=2048))
# For the API, intact and lightly damaged images too, so the fuzzing also reaches the
# paths behind a successful decode (storage, the queue).
api_uploads = st.one_of(st.sampled_from(SEEDS), mutated_images(max_mutations=1), uploads)


def _decode_or_reject(data: bytes, max_pixels: int = 2_000_000):
    try:
        decoded = images.decode(data, max_pixels)
    except images.ImageRejected as rejected:
        assert rejected.code and str(rejected) and 400 <= rejected.status < 500
        return None
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.ndim == 3 and decoded.pixels.shape[2] == 3
    assert decoded.width * decoded.height <= max_pixels
    assert decoded.source_format in images.ALLOWED_FORMATS
    return decoded


@fuzz(400, deadline_ms=2000)
@given(uploads)
def test_decode_raises_nothing_but_image_rejected(data):
    _decode_or_reject(data)


def _judged_by_the_declared_size(data: bytes, fmt: str, width: int, height: int, limit: int = 40_000_000) -> None:
    """Above the limit: too_many_pixels, always (and from the header alone, so fast). At or
    under it: never too_many_pixels, and the header's size when accepted."""
    try:
        found = images.probe(data, limit)
    except images.ImageRejected as rejected:
        assert (rejected.code == "too_many_pixels") == (width * height > limit), (width, height, rejected.code)
        return
    assert found == (fmt, width, height) and width * height <= limit


@fuzz(150, deadline_ms=500)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_declared_png_size_is_judged_before_decoding(width, height):
    _judged_by_the_declared_size(with_png_size(SEEDS[2], width, height), "PNG", width, height)


@fuzz(150, deadline_ms=500)
@given(st.integers(1, 65535), st.integers(1, 65535))
def test_declared_jpeg_size_is_judged_before_decoding(width, height):
    _judged_by_the_declared_size(with_jpeg_size(_JPEG, width, height), "JPEG", width, height)


form_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
valid_options = st.fixed_dictionaries({}, optional={
    "upscale": st.sampled_from(["1", "2"]),
    "model": st.sampled_from(["1.3", "1.4"]),
    "strength": st.sampled_from(["0", "0.5", "1"]),
    "output_format": st.sampled_from(["png", "jpeg", "webp"]),
    "blend_mask": st.sampled_from(["box", "parse"]),
    "rotate": st.sampled_from(["0", "90", "180", "270"]),
})
hostile_options = st.fixed_dictionaries({}, optional={
    "upscale": st.one_of(form_text, st.integers(-5, 10).map(str)),
    "model": form_text,
    "strength": st.one_of(form_text, st.floats(allow_nan=True).map(str)),
    "output_format": form_text,
    "quality": form_text,
    "blend_mask": st.sampled_from(["face", ""]),
    "crop": form_text,
    "rotate": st.one_of(form_text, st.sampled_from(["45", "-90"])),
    "surprise": form_text,
})
# An upload with no options, with valid ones (so the file itself is judged), or hostile ones.
option_values = st.one_of(st.just({}), valid_options, hostile_options)


def test_the_api_never_answers_500(settings, storage):
    with app_client(settings, storage, raise_server_exceptions=False, max_upload_bytes=200_000,
                    max_pixels=2_000_000) as client:

        @fuzz(150, deadline_ms=10_000)
        @given(api_uploads, st.text(st.characters(blacklist_categories=("Cs",)), max_size=80),
               st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "text/html", "image/svg+xml"]),
               option_values)
        def upload(data, filename, content_type, options):
            response = client.post("/api/jobs", files={"file": (filename or "x", data, content_type)}, data=options)
            statuses[response.status_code] += 1
            assert response.status_code in (202, 413, 415, 422), (response.status_code, response.text)
            body = response.json()
            if response.status_code == 202:
                assert body["status"] == "queued" and len(body["id"]) == 32
            else:
                assert body["error"]["code"] and body["error"]["message"]

        statuses: Counter[int] = Counter()
        upload()
    print(f"\nAPI fuzz statuses: {dict(statuses)}")
    # The fuzzing reached both ends: accepted jobs and refusals.
    assert sum(statuses.values()) >= 80 and statuses[202] > 0 and statuses[415] + statuses[422] > 0, statuses


def test_worker_messages_never_raise(handler):
    bodies = st.one_of(
        st.binary(max_size=300),
        st.builds(lambda v: json.dumps({"job_id": v}).encode(),
                  st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.integers(), max_size=3),
                            st.text("0123456789abcdef", min_size=32, max_size=32))),
        st.builds(lambda v: json.dumps(v).encode(), st.recursive(st.none() | st.booleans() | st.text(max_size=5),
                                                                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                                                                 max_leaves=8)),
    )

    @fuzz(120, deadline_ms=5000)
    @given(bodies, st.integers(1, 10))
    def deliver(body, dequeue_count):
        outcome = handler.handle_message(body, dequeue_count)
        assert outcome.status == "missing"

    deliver()


def test_worker_survives_hostile_stored_inputs(settings, storage, handler):
    """Even if someone replaced a stored input behind the API's back, the job ends failed
    (or, if the bytes still decode, succeeded); the worker never raises."""
    service = JobService(settings, storage)
    seed = SEEDS[2]

    outcomes: Counter[str] = Counter()

    @fuzz(25, deadline_ms=30_000)
    @given(uploads)
    def run(data):
        job = service.submit(seed, "x.png", JobOptions(upscale=1, blend_mask="box"))
        storage.put_blob(settings.uploads_container, job.input_blob, data, "image/png")
        outcome = handler.handle(job.id)
        outcomes[outcome.status] += 1
        assert outcome.status in ("failed", "succeeded")
        final = service.get(job.id)
        assert final.terminal and (final.status == "succeeded" or final.error_code)

    run()
    assert sum(outcomes.values()) >= 25 and outcomes["failed"] > 0, outcomes
