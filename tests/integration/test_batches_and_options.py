"""Issue 8 through the API on Azurite: batches (fair interleaving, zip in and out),
preprocessing options and their record, per-face results, and the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, astronaut_bgr, encoded, env_for


def plain_png(width: int, height: int, seed: int = 0) -> bytes:
    """A face-free gradient: the engine finds no faces, so a job costs milliseconds."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    return encoded(pixels)


def deliver_one(storage, handler):
    message = next(iter(storage.jobs_queue.receive_messages(max_messages=1, visibility_timeout=60)), None)
    if message is None:
        return None
    job_id = json.loads(message.content)["job_id"]
    handler.handle_message(message.content, message.dequeue_count)
    storage.jobs_queue.delete_message(message)
    return job_id


def submit_batch(client, files, **options):
    form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}
    return client.post("/api/batches", files=[("files", f) for f in files], data=form)


def test_batch_interleaves_with_single_jobs_and_zips_results(client, storage, handler, settings):
    assert settings.batch_window == 2
    files = [(f"scan-{i}.png", plain_png(64, 48, seed=i), "image/png") for i in range(4)]
    files.append(("notes.jpg", b"this is not an image", "image/jpeg"))
    response = submit_batch(client, files, upscale=1)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert response.headers["Location"] == f"/api/batches/{batch['id']}"
    assert batch["total"] == 4 and batch["counts"]["queued"] == 4
    assert [r["filename"] for r in batch["rejected"]] == ["notes"]
    assert batch["rejected"][0]["code"] == "not_an_image"
    batch_jobs = [job["id"] for job in batch["jobs"]]

    single = client.post("/api/jobs", files={"file": ("mine.png", plain_png(32, 32))}).json()["id"]
    # Only the batch's window is ahead of the single job.
    assert client.get(f"/api/jobs/{single}").json()["queue_position"] == 3

    order = []
    while (job_id := deliver_one(storage, handler)) is not None:
        order.append(job_id)
    assert order == [batch_jobs[0], batch_jobs[1], single, batch_jobs[2], batch_jobs[3]]

    summary = client.get(f"/api/batches/{batch['id']}").json()
    assert summary["done"] and summary["counts"]["succeeded"] == 4 and summary["progress"] == 1.0

    archive = client.get(summary["links"]["zip"])
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert z.namelist() == [f"{i:03d}-scan-{i - 1}-restored.png" for i in range(1, 5)]
        for name in z.namelist():
            assert Image.open(io.BytesIO(z.read(name))).size == (64, 48)

    assert client.delete(f"/api/batches/{batch['id']}").status_code == 204
    assert client.get(f"/api/batches/{batch['id']}").status_code == 404
    assert all(client.get(f"/api/jobs/{j}").status_code == 404 for j in batch_jobs)


def test_batch_zip_is_409_until_every_job_ends(client):
    batch = submit_batch(client, [("a.png", plain_png(40, 40), "image/png")]).json()
    response = client.get(f"/api/batches/{batch['id']}/results.zip")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_ready"


def test_zip_upload_becomes_one_job_per_image(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("holiday/one.png", plain_png(40, 40, 1))
        z.writestr("holiday/two.png", plain_png(40, 40, 2))
        z.writestr("holiday/", b"")
        z.writestr("readme.txt", b"hello")
    batch = submit_batch(client, [("photos.zip", buffer.getvalue(), "application/zip")]).json()
    assert [job["filename"] for job in batch["jobs"]] == ["one", "two"]
    assert [r["filename"] for r in batch["rejected"]] == ["readme"]


def test_zip_bomb_is_refused_by_declared_size(client, settings):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.png", b"\0" * (settings.max_batch_bytes + 1))
    response = submit_batch(client, [("bomb.zip", buffer.getvalue(), "application/zip")])
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "no_images"
    assert "inflates to 210 MB" in response.json()["error"]["message"]


def test_crop_rotate_downscale_are_applied_and_recorded(client, storage, handler):
    options = {"crop": "100,50,300,200", "rotate": "90", "max_side": "150", "upscale": "2"}
    job = client.post("/api/jobs", files={"file": ("p.png", encoded(astronaut_bgr()))}, data=options).json()
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    # 300x200 crop, rotated to 200x300, shrunk to 100x150, upscaled x2.
    assert (done["result"]["width"], done["result"]["height"]) == (200, 300)
    assert done["preprocessing"] == ["cropped to 300x200 at 100,50", "rotated 90° clockwise", "downscaled to 100x150"]
    before = Image.open(io.BytesIO(client.get(done["links"]["before"]).content))
    assert before.size == (100, 150)
    expected = cv2.resize(cv2.rotate(astronaut_bgr()[50:250, 100:400], cv2.ROTATE_90_CLOCKWISE), (100, 150),
                          interpolation=cv2.INTER_AREA)
    assert np.array_equal(np.asarray(before)[:, :, ::-1], expected)


def test_crop_outside_the_image_is_a_field_error(client):
    response = client.post("/api/jobs", files={"file": ("p.png", plain_png(100, 80))}, data={"crop": "50,50,80,80"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "crop_outside_image"
    response = client.post("/api/jobs", files={"file": ("p.png", plain_png(100, 80))}, data={"crop": "1,2,3"})
    assert response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == "crop"
    response = client.post("/api/jobs", files={"file": ("p.png", plain_png(100, 80))}, data={"rotate": "45"})
    assert response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == "rotate"


def exif_rotated_jpeg() -> bytes:
    """A 60x40 JPEG whose EXIF says 'rotate 90° clockwise to view' (orientation 6)."""
    image = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8)[None, :, None] * 4, (40, 1, 3)))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("auto_orient, size", [("true", (40, 60)), ("false", (60, 40))])
def test_auto_orient_option(client, auto_orient, size):
    job = client.post("/api/jobs", files={"file": ("o.jpg", exif_rotated_jpeg())}, data={"auto_orient": auto_orient}).json()
    assert (job["input"]["width"], job["input"]["height"]) == size
    stored = Image.open(io.BytesIO(client.get(job["links"]["input"]).content))
    assert stored.size == size and not stored.getexif()


def test_strength_zero_returns_the_plain_upscale(client, storage, handler):
    source = astronaut_bgr()
    job = client.post("/api/jobs", files={"file": ("a.png", encoded(source))},
                      data={"strength": "0", "blend_mask": "box"}).json()
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["face_count"] == 1
    result = np.asarray(Image.open(io.BytesIO(client.get(done["links"]["result"]).content)))[:, :, ::-1]
    assert np.array_equal(result, cv2.resize(source, (1024, 1024), interpolation=cv2.INTER_LANCZOS4))


def test_per_face_results(client, storage, handler):
    job = client.post("/api/jobs", files={"file": ("a.png", encoded(astronaut_bgr()))}, data={"blend_mask": "box"}).json()
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    (face,) = done["faces"]
    x0, y0, x1, y1 = face["box"]
    assert 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 200  # the astronaut's face
    for which in ("before", "after"):
        crop = Image.open(io.BytesIO(client.get(face[which]).content))
        assert crop.size == (512, 512)
    assert client.get(f"/api/jobs/{job['id']}/faces/1/after").status_code == 404


def test_preprocessing_effects():
    from processing.images.preprocess import preprocess
    from processing.jobs.options import JobOptions

    rng = np.random.default_rng(0)
    cast = np.clip(rng.normal(120, 20, (64, 64, 3)) * [0.7, 1.0, 1.3], 0, 255).astype(np.uint8)
    balanced, steps = preprocess(cast, JobOptions(white_balance=True))
    means = balanced.reshape(-1, 3).mean(axis=0)
    assert steps == ["white balanced"] and means.max() - means.min() < 3

    faded = (rng.uniform(100, 150, (64, 64, 3))).astype(np.uint8)
    stretched, _ = preprocess(faded, JobOptions(auto_contrast=True))
    assert np.ptp(stretched) > 2 * np.ptp(faded)

    flat = np.full((64, 64, 3), 128, np.uint8)
    noisy = np.clip(flat + rng.normal(0, 12, flat.shape), 0, 255).astype(np.uint8)
    cleaned, steps = preprocess(noisy, JobOptions(denoise=True))
    assert steps == ["denoised"] and cleaned.astype(float).std() < noisy.astype(float).std() / 2


def test_cli_restores_files_and_fails_loudly(settings, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encoded(astronaut_bgr()))
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a photo")
    out = tmp_path / "restored"
    run = subprocess.run(
        [sys.executable, "-m", "processing", "restore", str(good), str(bad), "--out", str(out),
         "--blend-mask", "box", "--upscale", "1", "--output-format", "webp", "--rotate", "90"],
        cwd=ROOT, env=env_for(settings), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 1, run.stderr
    assert Image.open(out / "good-restored.webp").size == (512, 512)
    assert "rotated 90° clockwise" in run.stdout + run.stderr
    assert "bad.jpg" in run.stderr and "not a JPEG, PNG or WebP" in run.stderr
    assert "stand-in" in run.stderr


def test_cli_rejects_bad_options(settings, tmp_path):
    run = subprocess.run([sys.executable, "-m", "processing", "restore", "x.png", "--upscale", "9"],
                         cwd=ROOT, env=env_for(settings), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--upscale" in run.stderr


def test_realesrgan_background_runs_through_the_pipeline(client, storage, handler):
    job = client.post("/api/jobs", files={"file": ("bg.png", plain_png(48, 40))},
                      data={"background": "realesrgan", "upscale": "2"}).json()
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    assert (done["result"]["width"], done["result"]["height"]) == (96, 80)
    assert done["timings"]["background"] > 0
    source = np.asarray(Image.open(io.BytesIO(client.get(done["links"]["input"]).content)))[:, :, ::-1]
    result = np.asarray(Image.open(io.BytesIO(client.get(done["links"]["result"]).content)))[:, :, ::-1]
    assert not np.array_equal(result, cv2.resize(source, (96, 80), interpolation=cv2.INTER_LANCZOS4))


def test_realesrgan_background_is_refused_when_its_weights_are_absent(settings, storage, tmp_path):
    from processing.images.codec import ImageRejected
    from processing.jobs.options import JobOptions
    from processing.jobs.service import JobService

    service = JobService(settings.with_changes(weights_dir=tmp_path), storage)
    with pytest.raises(ImageRejected) as error:
        service.submit(plain_png(32, 32), "x.png", JobOptions(background="realesrgan"))
    assert error.value.code == "option_unavailable" and error.value.status == 422
