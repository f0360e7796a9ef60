"""Unit tests: settings, options, the job state machine and its entity mapping, images, weights."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from processing.build import weights
from processing.images import codec as images
from processing.config import Settings, SettingsError
from processing.jobs.records import (CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, TRANSITIONS, Job,
                             from_entity, is_job_id, new_job_id, to_entity, utcnow)
from processing.jobs.options import JobOptions
from processing.jobs.service import safe_stem
from processing.storage import decode_job_message, encode_job_message


# -- settings ----------------------------------------------------------------------------

def test_settings_from_env_parses_types():
    s = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "MAX_FACES": "3",
                           "STANDIN_WEIGHTS": "yes", "CORS_ORIGINS": "https://a.example, https://b.example",
                           "JOB_RETENTION_HOURS": "0.5", "WEIGHTS_DIR": "/opt/weights"})
    assert s.max_faces == 3 and s.standin_weights is True and s.retention_hours == 0.5
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.weights_dir == Path("/opt/weights") and s.poison_queue == "restore-jobs-poison"


@pytest.mark.parametrize("env, word", [({"MAX_FACES": "many"}, "MAX_FACES"), ({"STANDIN_WEIGHTS": "maybe"}, "STANDIN_WEIGHTS"),
                                       ({"MAX_UPLOAD_BYTES": "0"}, "MAX_UPLOAD_BYTES")])
def test_bad_settings_name_the_variable(env, word):
    with pytest.raises(SettingsError, match=word):
        Settings.from_env(env)


def test_storage_requires_a_connection():
    from processing.storage import Storage

    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        Storage(Settings())


def test_host_json_matches_the_worker_settings():
    import json

    queues = json.load(open(Path(__file__).resolve().parents[2] / "host.json"))["extensions"]["queues"]
    assert queues["batchSize"] == 1 and queues["newBatchThreshold"] == 0  # one job at a time per instance
    assert queues["maxDequeueCount"] == Settings().max_dequeue_count


# -- options -----------------------------------------------------------------------------

def test_options_defaults_and_limits():
    options = JobOptions()
    assert (options.model, options.upscale, options.strength, options.output_format) == ("1.4", 2, 1.0, "png")
    for bad in ({"upscale": 0}, {"upscale": 5}, {"strength": -0.1}, {"model": "1.2"}, {"quality": 101},
                {"crop": "0,0,8,8"}, {"rotate": 45}, {"max_side": 10}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            JobOptions(**bad)
    assert JobOptions(crop=" 1, 2 ,30,40").crop_box() == (1, 2, 30, 40)
    restore = JobOptions(upscale=3, strength=0.5).restore_options(max_faces=4)
    assert (restore.upscale, restore.strength, restore.max_faces) == (3, 0.5, 4)


# -- job state machine -------------------------------------------------------------------

def test_transitions_end_in_terminal_states():
    assert TERMINAL == {SUCCEEDED, FAILED, CANCELLED}
    assert all(not TRANSITIONS[state] for state in TERMINAL)
    assert TRANSITIONS[QUEUED] == {RUNNING, FAILED, CANCELLED}
    assert SUCCEEDED not in TRANSITIONS[QUEUED]  # a job cannot succeed without running


def test_job_ids_are_128_bit_random():
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(is_job_id(i) and len(i) == 32 for i in ids)
    assert not is_job_id("../etc/passwd") and not is_job_id("A" * 32)


def test_entity_roundtrip():
    job = Job(id=new_job_id(), options={"upscale": 2}, faces=[{"box": [1, 2, 3, 4], "score": 0.9}],
              timings={"restore": 1.5}, preprocessing=["denoised"], lease_until=utcnow() + timedelta(seconds=5))
    entity = to_entity(job)
    assert entity["PartitionKey"] == job.id and entity["RowKey"] == "job"
    assert "etag" not in entity and "finished_at" not in entity  # None values are not stored
    back = from_entity(entity)
    assert back.options == job.options and back.faces == job.faces and back.preprocessing == ["denoised"]
    assert back.lease_until == job.lease_until and back.status == QUEUED


def test_lease_expiry():
    now = utcnow()
    assert Job(id="x").lease_expired(now)
    assert not Job(id="x", lease_until=now + timedelta(seconds=1)).lease_expired(now)


def test_queue_message_codec():
    assert decode_job_message(encode_job_message("abc")) == "abc"
    for bad in (b"", b"[]", b'{"job": 1}', b'{"job_id": ""}', b"\xff\xfe"):
        with pytest.raises(ValueError):
            decode_job_message(bad)


@pytest.mark.parametrize("name, stem", [("../../etc/passwd", "passwd"), ("C:\\Users\\me\\photo 1.JPG", "photo-1"),
                                        ("", "photo"), ("....png", "photo"), ("a" * 200 + ".png", "a" * 60),
                                        ("<script>.png", "script")])
def test_file_names_are_never_paths(name, stem):
    assert safe_stem(name) == stem


# -- images ------------------------------------------------------------------------------

def png(width, height, mode="RGB", **save):
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG", **save)
    return out.getvalue()


def test_decode_converts_modes_to_bgr():
    for mode in ("RGB", "RGBA", "L", "LA", "P", "I;16"):
        decoded = images.decode(png(7, 5, mode), 10_000)
        assert decoded.pixels.shape == (5, 7, 3) and decoded.pixels.dtype == np.uint8


def test_transparent_pixels_become_white():
    out = io.BytesIO()
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(out, "PNG")
    assert (images.decode(out.getvalue(), 100).pixels == 255).all()


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(images.ImageRejected) as error:
        images.probe(png(1200, 1000), max_pixels=1_000_000)
    assert error.value.code == "too_many_pixels" and error.value.status == 413
    assert str(error.value) == "the image is 1200x1000 (1.2 megapixels); the limit is 1 megapixels"


@pytest.mark.parametrize("fmt, content_type", [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_encode_formats_without_metadata(fmt, content_type):
    pixels = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    data = images.encode(pixels, fmt, 90)
    image = Image.open(io.BytesIO(data))
    assert image.size == (24, 16) and image.get_format_mimetype() == content_type and not image.getexif()
    if fmt == "png":
        assert np.array_equal(np.asarray(image)[:, :, ::-1], pixels)  # lossless, BGR order kept


# -- weights -----------------------------------------------------------------------------

@pytest.fixture
def tiny_official(monkeypatch, tmp_path):
    """A one-file 'official' table so the fetch/verify logic runs on small bytes."""
    payload = b"weights!" * 1000
    entry = weights.WeightFile("tiny.pth", "https://example.invalid/tiny.pth", len(payload),
                               hashlib.sha256(payload).hexdigest(), "test")
    monkeypatch.setattr(weights, "OFFICIAL_WEIGHTS", (entry,))
    return payload


def test_fetch_verifies_and_is_atomic(tiny_official, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "tiny.pth").write_bytes(tiny_official)
    target = tmp_path / "weights"
    weights.fetch(target, source_dir=source, log=lambda _: None)
    assert (target / "tiny.pth").read_bytes() == tiny_official
    assert all(s.ok for s in weights.check(target, full_hash=True))

    (source / "tiny.pth").write_bytes(tiny_official[:-1] + b"X")  # tampered copy
    (target / "tiny.pth").unlink()
    with pytest.raises(weights.WeightsError, match="does not match"):
        weights.fetch(target, source_dir=source, log=lambda _: None)
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".verified")) == []


def test_fetch_downloads_through_the_opener(tiny_official, tmp_path):
    calls = []

    def opener(url):
        calls.append(url)
        return io.BytesIO(tiny_official)

    weights.fetch(tmp_path, opener=opener, log=lambda _: None)
    assert calls == ["https://example.invalid/tiny.pth"]
    weights.fetch(tmp_path, opener=opener, log=lambda _: None)  # present and intact: no second download
    assert len(calls) == 1


def test_check_detects_corruption_despite_stamp(tiny_official, tmp_path):
    (tmp_path / "tiny.pth").write_bytes(tiny_official)
    assert weights.check(tmp_path)[0].ok
    (tmp_path / "tiny.pth").write_bytes(b"X" * len(tiny_official))  # same size, new mtime
    status = weights.check(tmp_path)[0]
    assert not status.ok and "sha256" in status.problem


def test_require_weights_names_what_is_missing(tmp_path):
    with pytest.raises(weights.WeightsError) as error:
        weights.require_weights(tmp_path, ("1.4",))
    message = str(error.value)
    assert "GFPGANv1.4.pth: missing" in message and "detection_Resnet50_Final.pth: missing" in message
    assert "python -m processing.build fetch" in message
