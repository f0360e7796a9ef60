"""Choosing the faces, through the API on Azurite: a detection-only job lists the faces with
boxes and scores in the photo's pixels; restoring chosen ones (by index, without sending
the photo again, or by boxes on a new upload) changes those faces and leaves the others
as they were; malformed and out-of-range choices are refused field by field."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import astronaut_bgr, encoded
from tests.integration.test_batches_and_options import deliver_one

FACE_X = (20, 390, 760)  # three astronauts, left to right


def three_faces() -> np.ndarray:
    face = cv2.resize(astronaut_bgr(), (320, 320), interpolation=cv2.INTER_AREA)
    canvas = np.full((360, 1100, 3), 200, np.uint8)
    for x in FACE_X:
        canvas[20:340, x:x + 320] = face
    return canvas


def image(response) -> np.ndarray:
    return cv2.cvtColor(np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")), cv2.COLOR_RGB2BGR)


def which_face(box) -> int:
    centre = (box[0] + box[2]) / 2
    return min(range(3), key=lambda i: abs(FACE_X[i] + 160 - centre))


@pytest.fixture
def detection(client, storage, handler):
    job = client.post("/api/jobs", files={"file": ("group.png", encoded(three_faces()))},
                      data={"detect_only": "true", "upscale": "1", "blend_mask": "box"}).json()
    deliver_one(storage, handler)
    return client.get(f"/api/jobs/{job['id']}").json()


def test_a_detection_lists_the_faces_and_makes_no_image(client, detection):
    assert detection["status"] == "succeeded" and detection["face_count"] == 3
    assert sorted(which_face(face["box"]) for face in detection["faces"]) == [0, 1, 2]
    for face in detection["faces"]:
        x0, y0, x1, y1 = face["box"]
        assert 20 <= y0 < y1 <= 340 and x1 - x0 > 40 and 0 < face["score"] <= 1
        assert face["before"] is None and face["after"] is None
    assert detection["result"] is None and detection["links"]["result"] is None
    assert detection["links"]["restore"] == f"/api/jobs/{detection['id']}/restore"
    refused = client.get(f"/api/jobs/{detection['id']}/result")
    assert refused.status_code == 409 and "only found faces" in refused.json()["error"]["message"]
    assert set(detection["timings"]) >= {"detect", "download", "decode"} and "restore" not in detection["timings"]


def test_restoring_two_of_three_changes_only_those(client, storage, handler, detection):
    keep = [i for i, face in enumerate(detection["faces"]) if which_face(face["box"]) != 1]  # all but the middle one
    response = client.post(f"/api/jobs/{detection['id']}/restore",
                           data={"faces": ",".join(map(str, keep)), "upscale": "1", "blend_mask": "box"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["options"]["detect_only"] is False and job["options"]["face_boxes"].count(";") == 1
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["face_count"] == 2, done
    assert sorted(which_face(face["box"]) for face in done["faces"]) == [0, 2]
    result, photo = image(client.get(done["links"]["result"])), three_faces()
    changed = [bool(np.any(result[:, x:x + 320] != photo[:, x:x + 320])) for x in FACE_X]
    assert changed == [True, False, True]


def test_boxes_on_a_new_upload_choose_faces_too(client, storage, handler):
    job = client.post("/api/jobs", files={"file": ("group.png", encoded(three_faces()))},
                      data={"face_boxes": "760,20,320,320", "upscale": "1", "blend_mask": "box"}).json()
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["face_count"] == 1 and which_face(done["faces"][0]["box"]) == 2


def test_boxes_are_in_the_photos_pixels_whatever_the_framing(client, storage, handler):
    """A detection on a cropped and shrunk photo reports boxes in the pixels of the photo as
    sent, and a box drawn there chooses the same face."""
    job = client.post("/api/jobs", files={"file": ("group.png", encoded(three_faces()))},
                      data={"detect_only": "true", "crop": "300,0,800,360", "max_side": "500"}).json()
    deliver_one(storage, handler)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["face_count"] == 2, done
    assert sorted(which_face(face["box"]) for face in done["faces"]) == [1, 2]
    for face in done["faces"]:
        x0, y0, x1, y1 = face["box"]
        centre = FACE_X[which_face(face["box"])] + 160
        assert abs((x0 + x1) / 2 - centre) < 25 and 40 < (y0 + y1) / 2 < 140


@pytest.mark.parametrize("faces, message", [("a,b", "indices"), ("5", "does not exist"), ("0,0", "twice"), ("-1", "indices")])
def test_bad_face_choices_are_field_errors(client, detection, faces, message):
    response = client.post(f"/api/jobs/{detection['id']}/restore", data={"faces": faces})
    assert response.status_code == 422, response.text
    (field,) = response.json()["error"]["fields"]
    assert field["field"] == "faces" and message in field["message"]


@pytest.mark.parametrize("boxes, message", [("1,2,3", "x,y,width,height"), ("10,10,0,5", "no area"),
                                            ("2000,10,50,50", "outside")])
def test_bad_boxes_are_field_errors(client, boxes, message):
    response = client.post("/api/jobs", files={"file": ("group.png", encoded(three_faces()))}, data={"face_boxes": boxes})
    assert response.status_code == 422, response.text
    (field,) = response.json()["error"]["fields"]
    assert field["field"] == "face_boxes" and message in field["message"]


def test_restoring_from_an_unfinished_job_waits(client):
    job = client.post("/api/jobs", files={"file": ("group.png", encoded(three_faces()))}, data={"detect_only": "true"}).json()
    response = client.post(f"/api/jobs/{job['id']}/restore", data={"faces": "0"})
    assert response.status_code == 409 and response.json()["error"]["status"] == "queued"


def test_the_command_line_lists_faces_and_restores_chosen_boxes(settings, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT, env_for

    photo = tmp_path / "group.png"
    photo.write_bytes(encoded(three_faces()))
    found = subprocess.run([sys.executable, "-m", "processing", "restore", str(photo), "--detect-only"],
                           cwd=ROOT, env=env_for(settings), capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    lines = [line for line in found.stderr.splitlines() + found.stdout.splitlines() if ": face " in line]
    assert len(lines) == 3 and all("box" in line and "score" in line for line in lines)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "processing", "restore", str(photo), "--out", str(out), "--upscale", "1",
                          "--blend-mask", "box", "--face-boxes", "20,20,320,320"],
                         cwd=ROOT, env=env_for(settings), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = cv2.imread(str(out / "group-restored.png"))
    changed = [bool(np.any(result[:, x:x + 320] != three_faces()[:, x:x + 320])) for x in FACE_X]
    assert changed == [True, False, False]
