"""The old-photo options through the API on Azurite and through the command line: a grey
photo's job reports its tone and its result is grey; a sepia photo's faces come back with the
photo's hue and depth of tone; color and texture are explained in
/api/info and refused field by field when wrong."""

from __future__ import annotations

import io
import subprocess
import sys

import cv2
import numpy as np
from PIL import Image

from tests.conftest import ROOT, astronaut_bgr, encoded, env_for
from tests.engine.test_old_photos import sepia, sepia_chroma_ratio
from tests.integration.test_batches_and_options import deliver_one


def grey_astronaut() -> bytes:
    return encoded(cv2.cvtColor(cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR))


def test_a_grey_photo_job_stays_grey_and_says_why(client, storage, handler):
    job = client.post("/api/jobs", files={"file": ("grandma.png", grey_astronaut())},
                      data={"upscale": "1", "texture": "0.4"}).json()
    assert job["options"]["color"] == "auto" and job["options"]["texture"] == 0.4
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["tone"] == "monochrome" and done["face_count"] == 1
    result = np.asarray(Image.open(io.BytesIO(client.get(done["links"]["result"]).content)).convert("RGB")).astype(int)
    assert np.ptp(result, axis=2).max() == 0
    after = np.asarray(Image.open(io.BytesIO(client.get(done["faces"][0]["after"]).content)).convert("RGB")).astype(int)
    assert np.ptp(after, axis=2).max() == 0
    assert done["timings"]["texture"] > 0 and done["timings"]["tone"] > 0


def _image(client, link: str) -> np.ndarray:
    return cv2.cvtColor(np.asarray(Image.open(io.BytesIO(client.get(link).content)).convert("RGB")), cv2.COLOR_RGB2BGR)


def test_a_sepia_photo_job_keeps_its_tone(client, storage, handler):
    job = client.post("/api/jobs", files={"file": ("great-grandpa.png", encoded(sepia(astronaut_bgr())))},
                      data={"upscale": "1"}).json()
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["tone"] == "toned" and done["face_count"] == 1
    low, median, high = sepia_chroma_ratio(_image(client, done["faces"][0]["after"]))
    assert 0.9 < low and high < 1.1 and abs(median - 1) < 0.03, (low, median, high)
    x0, y0, x1, y1 = (round(v) for v in done["faces"][0]["box"])
    low, median, high = sepia_chroma_ratio(_image(client, done["links"]["result"])[y0:y1, x0:x1])
    assert 0.9 < low and high < 1.1 and abs(median - 1) < 0.03, (low, median, high)


def test_the_options_are_explained_and_checked(client):
    options = client.get("/api/info").json()["options"]
    assert options["color"]["enum"] == ["auto", "keep", "restore"] and options["color"]["default"] == "auto"
    assert "black-and-white" in options["color"]["description"]
    assert options["texture"]["minimum"] == 0 and options["texture"]["maximum"] == 1 and options["texture"]["default"] == 0
    assert "texture" in options["texture"]["description"]
    bad = client.post("/api/jobs", files={"file": ("a.png", grey_astronaut())}, data={"color": "sepia", "texture": "2"})
    assert bad.status_code == 422
    fields = {problem["field"] for problem in bad.json()["error"]["fields"]}
    assert fields == {"color", "texture"}


def test_the_command_line_takes_them_too(settings, tmp_path):
    photo = tmp_path / "grandpa.png"
    photo.write_bytes(grey_astronaut())
    run = subprocess.run([sys.executable, "-m", "processing", "restore", str(photo), "--out", str(tmp_path / "out"),
                          "--upscale", "1", "--color", "auto", "--texture", "0.3"],
                         cwd=ROOT, env=env_for(settings), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = np.asarray(Image.open(tmp_path / "out" / "grandpa-restored.png").convert("RGB")).astype(int)
    assert np.ptp(result, axis=2).max() == 0
    refused = subprocess.run([sys.executable, "-m", "processing", "restore", str(photo), "--texture", "3"],
                             cwd=ROOT, env=env_for(settings), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--texture" in refused.stderr
