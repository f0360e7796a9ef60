"""The model store the service runs: read from its manifest, checked by size at start and by
SHA-256 on demand, and every problem named with what to run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from processing.engine.store import EXPORT_FORMAT, ModelsError, ModelStore, export_name


def make_store(directory: Path, kind: str = "official", **files: bytes) -> ModelStore:
    directory.mkdir(parents=True, exist_ok=True)
    import hashlib

    networks = {}
    for role, data in files.items():
        name = export_name(f"{role}.pth", hashlib.sha256(role.encode()).hexdigest())
        (directory / name).write_bytes(data)
        networks[role] = {"file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                          "checkpoint": f"{role}.pth", "checkpoint_sha256": "0" * 64}
    (directory / "models.json").write_text(json.dumps({"format": EXPORT_FORMAT, "kind": kind, "networks": networks}))
    return ModelStore(directory)


def test_a_complete_store(tmp_path):
    store = make_store(tmp_path, detector=b"d" * 10, parser=b"p" * 20, **{"gfpgan-1.4": b"g" * 30})
    assert store.problems(full_hash=True) == []
    assert store.gfpgan_versions() == ["1.4"] and not store.has("background") and not store.standin
    assert store.path("parser").read_bytes() == b"p" * 20


def test_missing_manifest_says_how_to_make_one(tmp_path):
    store = ModelStore(tmp_path)
    with pytest.raises(ModelsError, match="python -m processing.checkpoints export"):
        store.path("detector")
    assert not store.standin and not store.has("detector")
    assert "models.json is missing" in store.problems()[0]


def test_required_networks_must_be_exported(tmp_path):
    store = make_store(tmp_path, detector=b"d")
    assert store.problems() == ["parser: not exported"]


def test_size_at_start_and_hash_on_demand(tmp_path):
    store = make_store(tmp_path, detector=b"d" * 10, parser=b"p" * 20)
    parser = store.path("parser")
    parser.write_bytes(b"q" * 20)  # same size, other bytes: only the hash sees it
    assert store.problems() == []
    assert store.problems(full_hash=True) == [f"parser: {parser.name} does not match its SHA-256"]
    parser.write_bytes(b"p" * 5)
    assert store.problems() == [f"parser: {parser.name} is 5 bytes, expected 20"]
    with pytest.raises(ModelsError, match="is 5 bytes"):
        store.path("parser")


def test_a_store_from_an_older_exporter_is_refused(tmp_path):
    store = make_store(tmp_path, detector=b"d", parser=b"p")
    manifest = json.loads((tmp_path / "models.json").read_text())
    manifest["format"] = EXPORT_FORMAT - 1
    (tmp_path / "models.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelsError, match="export again"):
        ModelStore(tmp_path).path("detector")


def test_the_standin_store_says_so(standin_models, tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(standin_models, copy, copy_function=lambda src, dst: Path(dst).symlink_to(src))
    store = ModelStore(copy)
    assert store.standin and set(store.networks) == {"gfpgan-1.4", "gfpgan-1.3", "detector", "parser", "background"}
