"""Checkpoints (build time): fetched and verified against their SHA-256, atomically, and a missing
one named with the command that fetches it."""

from __future__ import annotations

import hashlib
import io

import pytest

from processing.checkpoints import weights


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
    assert "python -m processing.checkpoints fetch" in message


def test_an_optional_checkpoint_missing_from_a_local_copy_is_skipped(monkeypatch, tmp_path):
    """A copy of the four required files (no Real-ESRGAN) is enough to build from."""
    required, optional = b"r" * 100, b"o" * 50
    monkeypatch.setattr(weights, "OFFICIAL_WEIGHTS", (
        weights.WeightFile("r.pth", "https://example.invalid/r.pth", 100, hashlib.sha256(required).hexdigest(), "r"),
        weights.WeightFile("o.pth", "https://example.invalid/o.pth", 50, hashlib.sha256(optional).hexdigest(), "o",
                           required=False),
    ))
    source = tmp_path / "copy"
    source.mkdir()
    (source / "r.pth").write_bytes(required)
    lines = []
    weights.fetch(tmp_path / "out", source_dir=source, include_optional=True, log=lines.append)
    assert (tmp_path / "out" / "r.pth").read_bytes() == required and not (tmp_path / "out" / "o.pth").exists()
    assert any(line.startswith("skip    o.pth") for line in lines)
