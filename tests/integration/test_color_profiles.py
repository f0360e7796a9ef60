"""Colour profiles end to end, on real pixels: a Display P3 phone photo (JPEG, with EXIF,
GPS and XMP) and an Adobe RGB scan (PNG) go through the API, the queue and the worker on
Azurite, and through the CLI. Outside the faces the result looks as the upload did on an
sRGB screen (within 8-bit rounding; colours sRGB cannot show are clipped, as that screen
clips them), every image served carries the sRGB profile and no other metadata, and the
job says which profile the upload had. The expected colours are computed in numpy from
the standards' matrices (tests/unit/test_codec.py), not by littleCMS."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from processing.images import icc
from tests.conftest import ROOT, astronaut_bgr, env_for
from tests.unit.test_codec import SPACES, as_displayed, assert_looks_the_same, delta_e, in_space

XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       '<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="51,30.2N" '
       'exif:GPSLongitude="0,7.6W"/></rdf:RDF></x:xmpmeta>')


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "SpyPhone"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (51.0, 30.0, 12.5), "W", (0.0, 7.0, 39.9)
    return exif


def photo(space: str) -> np.ndarray:
    """RGB values in ``space``: the astronaut (one face) beside a chart of skin, sky,
    foliage, greys and strong colours converted into the space, and a last row of the
    space's own primaries and secondaries, which sRGB cannot show."""
    rgb = astronaut_bgr()[:, :, ::-1]
    rng = np.random.default_rng(7)
    colours = np.vstack([[[224, 172, 138], [141, 85, 36], [198, 134, 66], [255, 219, 172]],  # skin
                         [[96, 160, 220], [40, 110, 60], [128, 128, 128], [20, 20, 20]],
                         [[230, 20, 30], [20, 200, 40], [30, 60, 220], [250, 250, 250]],
                         rng.integers(0, 256, (16, 3))]).astype(np.uint8)
    chart = in_space(np.repeat(np.repeat(colours.reshape(7, 4, 3), 64, axis=0), 64, axis=1), space)
    primaries = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 255, 255]], np.uint8)
    chart = np.vstack([chart, np.repeat(np.repeat(primaries[None], 64, axis=0), 64, axis=1)])
    return np.hstack([in_space(rgb, space), chart])


def upload(space: str) -> tuple[bytes, str]:
    """The photo as it arrives: P3 as a phone's JPEG, Adobe RGB as a scanner's PNG; profile,
    EXIF (with GPS) and XMP embedded."""
    out = io.BytesIO()
    image = Image.fromarray(photo(space))
    if space == "Display P3":
        image.save(out, "JPEG", quality=95, icc_profile=SPACES[space][0], exif=_exif(), xmp=XMP.encode())
        return out.getvalue(), "IMG_0420.jpg"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP)
    image.save(out, "PNG", icc_profile=SPACES[space][0], exif=_exif(), pnginfo=info)
    return out.getvalue(), "scan-1962.png"


def as_sent(data: bytes) -> np.ndarray:
    """The upload's own values as a decoder reads them, its profile not applied."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def outside_faces(shape: tuple[int, ...], faces: list[dict]) -> np.ndarray:
    """Pixels no face touches: outside a square three times each face box around its
    centre, which holds the aligned 512x512 crop pasted back, whatever its rotation."""
    mask = np.ones(shape[:2], bool)
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 1.5 * max(x1 - x0, y1 - y0)
        mask[max(0, int(cy - half)) : int(cy + half) + 1, max(0, int(cx - half)) : int(cx + half) + 1] = False
    return mask


def carries_only_srgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.info.get("icc_profile") == icc.SRGB
    profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
    assert ImageCms.getProfileDescription(profile).strip() == "sRGB IEC61966-2.1"
    assert not image.getexif() and not {"exif", "xmp", "XML:com.adobe.xmp"} & set(image.info)
    assert b"Exif\x00\x00" not in data and b"SpyPhone" not in data and b"GPSLatitude" not in data
    return image


def run_queue(storage, handler) -> None:
    for message in storage.jobs_queue.receive_messages(max_messages=32, visibility_timeout=60):
        assert handler.handle_message(message.content, message.dequeue_count).status == "succeeded"
        storage.jobs_queue.delete_message(message)


# The P3 photo's result losslessly (the strict check), the Adobe RGB scan's as a JPEG (its
# colours within JPEG's own error); the WebP path is the same Pillow call (tests/unit).
@pytest.mark.parametrize("space, fmt", [("Display P3", "png"), ("Adobe RGB (1998)", "jpeg")])
def test_a_tagged_photo_keeps_its_colours_and_comes_back_as_tagged_srgb(client, storage, handler, space, fmt):
    data, name = upload(space)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the upload does carry GPS
    expected = as_displayed(as_sent(data), space)
    response = client.post("/api/jobs", files={"file": (name, data, "application/octet-stream")},
                           data={"upscale": "1", "blend_mask": "box", "output_format": fmt, "quality": "92"})
    assert response.status_code == 202, response.text
    assert response.json()["color_profile"] == space
    job_id = response.json()["id"]
    run_queue(storage, handler)

    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["face_count"] >= 1 and job["color_profile"] == space
    served = {"result": client.get(f"/api/jobs/{job_id}/result").content,
              "input": client.get(f"/api/jobs/{job_id}/input").content}
    for i in range(job["face_count"]):
        for which in ("before", "after"):
            served[f"face {i} {which}"] = client.get(f"/api/jobs/{job_id}/faces/{i}/{which}").content
    images = {what: carries_only_srgb(raw) for what, raw in served.items()}

    stored = np.asarray(images["input"].convert("RGB"))
    assert_looks_the_same(stored, expected, "the whole input, as the page shows it:")
    result = np.asarray(images["result"].convert("RGB"))
    assert result.shape == expected.shape
    outside = outside_faces(result.shape, job["faces"])
    assert outside.mean() > 0.5 and outside[:, 512:].all()  # the chart and most of the photo
    if fmt == "png":
        assert_looks_the_same(result[outside], expected[outside], f"{space}, outside the faces:")
    else:  # JPEG's own error on top
        error = delta_e(result[outside], expected[outside])
        assert np.median(error) < 1.0 and error.mean() < 1.5, f"{space} {fmt}: ΔE76 {error.mean():.2f} on average"
    untouched = delta_e(as_sent(data)[outside], expected[outside])
    assert untouched.mean() > 3  # what keeping the values and dropping the profile would look like


def test_an_untagged_upload_keeps_its_values_and_is_served_as_srgb(client, settings, storage, engine):
    """Untagged means sRGB, as every browser takes it: the values are not touched (no face
    is restored here, MAX_FACES=0, so every pixel can be compared)."""
    from processing.worker import JobHandler

    handler = JobHandler(settings.with_changes(max_faces=0), storage, lambda: engine, worker_id="test-worker")
    values = photo("Display P3")  # any values; without a profile they are sRGB
    out = io.BytesIO()
    Image.fromarray(values).save(out, "PNG")
    response = client.post("/api/jobs", files={"file": ("plain.png", out.getvalue(), "image/png")},
                           data={"upscale": "1", "blend_mask": "box"})
    assert response.status_code == 202 and response.json()["color_profile"] is None
    run_queue(storage, handler)
    job_id = response.json()["id"]
    stored = carries_only_srgb(client.get(f"/api/jobs/{job_id}/input").content)
    assert np.array_equal(np.asarray(stored.convert("RGB")), values)
    result = np.asarray(carries_only_srgb(client.get(f"/api/jobs/{job_id}/result").content).convert("RGB"))
    assert np.array_equal(result, values)


def test_the_cli_converts_and_tags_too(settings, tmp_path):
    """`python -m processing restore` reads the profile and writes tagged sRGB (MAX_FACES=0:
    no face is restored, so every pixel can be compared)."""
    data, name = upload("Adobe RGB (1998)")
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "restored"
    run = subprocess.run(
        [sys.executable, "-m", "processing", "restore", str(tmp_path / name), "--out", str(out), "--upscale", "1"],
        cwd=ROOT, env=env_for(settings, MAX_FACES="0"), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = np.asarray(carries_only_srgb((out / "scan-1962-restored.png").read_bytes()).convert("RGB"))
    assert_looks_the_same(result, as_displayed(as_sent(data), "Adobe RGB (1998)"))
