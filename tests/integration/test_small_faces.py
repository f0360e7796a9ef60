"""small_faces through the API on Azurite: off keeps a job to the first detection pass (a
large photo whose faces are large pays nothing for the second), auto finds the faces only the
second pass sees; a batch takes it like any option, a restoration of a detection's faces
looks for them as the detection did, and /api/info shows it with the detection settings."""

from __future__ import annotations

import cv2
import pytest

from benchmarks.inputs import GROUP_12MP, faces_on_coffee
from tests.integration.test_batches_and_options import deliver_one, plain_png, submit_batch


@pytest.fixture(scope="module")
def group_jpeg() -> bytes:
    """Astronaut faces at four sizes on a 4000x3000 photo: the first pass finds the two in
    front, the second pass the rows behind them (tests/engine/test_detection_passes.py)."""
    pixels, _ = faces_on_coffee(GROUP_12MP)
    return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def detection(client, storage, handler, photo: bytes, **form) -> dict:
    job = client.post("/api/jobs", files={"file": ("group.jpg", photo, "image/jpeg")},
                      data={"detect_only": "true", **form})
    assert job.status_code == 202, job.text
    assert deliver_one(storage, handler) == job.json()["id"]
    done = client.get(f"/api/jobs/{job.json()['id']}").json()
    assert done["status"] == "succeeded", done
    return done


def test_off_skips_the_second_pass_and_auto_finds_the_small_faces(client, storage, handler, settings, group_jpeg):
    off = detection(client, storage, handler, group_jpeg, small_faces="off")
    auto = detection(client, storage, handler, group_jpeg)
    assert off["options"]["small_faces"] == "off" and auto["options"]["small_faces"] == "auto"
    assert off["timings"]["detect_pass2"] == 0 and off["face_count"] == 2
    assert auto["timings"]["detect_pass2"] > 0 and auto["face_count"] == settings.max_faces > 2
    large = {tuple(face["box"]) for face in off["faces"]}
    assert large <= {tuple(face["box"]) for face in auto["faces"]}, "auto keeps what the first pass found"

    # Restoring a face only the second pass found: the restoration looks as the detection did.
    small = next(index for index, face in enumerate(auto["faces"]) if tuple(face["box"]) not in large)
    restore = client.post(f"/api/jobs/{auto['id']}/restore",
                          data={"faces": str(small), "small_faces": "off", "upscale": "1", "blend_mask": "box"})
    assert restore.status_code == 202, restore.text
    assert restore.json()["options"]["small_faces"] == "auto"
    deliver_one(storage, handler)
    restored = client.get(f"/api/jobs/{restore.json()['id']}").json()
    assert restored["status"] == "succeeded" and restored["face_count"] == 1, restored
    assert restored["faces"][0]["box"] == auto["faces"][small]["box"]


def test_a_batch_takes_it_and_a_wrong_value_is_a_field_error(client):
    batch = submit_batch(client, [("a.png", plain_png(64, 48), "image/png")], small_faces="off").json()
    assert client.get(batch["jobs"][0]["links"]["self"]).json()["options"]["small_faces"] == "off"
    bad = client.post("/api/jobs", files={"file": ("a.png", plain_png(64, 48), "image/png")},
                      data={"small_faces": "always"})
    assert bad.status_code == 422 and [p["field"] for p in bad.json()["error"]["fields"]] == ["small_faces"]


def test_info_shows_it_with_the_detection_settings(client, settings):
    info = client.get("/api/info").json()
    assert info["detection"] == {"max_side": settings.detect_max_side, "max_faces": settings.max_faces,
                                 "second_pass_max_side": settings.detect_second_pass_max_side}
    option = info["options"]["small_faces"]
    assert option["enum"] == ["auto", "off"] and option["default"] == "auto" and "tiles" in option["description"]

