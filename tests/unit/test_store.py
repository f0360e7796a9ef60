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


def test_weights_stored_in_fp16_are_cast_back_to_f32():
    """A convolution's weights become fp16 in the file and f32 again inside the graph (so
    every operator still computes in f32); a short vector stays f32; the output moves by no
    more than fp16's rounding of the weights."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from processing.checkpoints.export import FP16_MIN_ELEMENTS, weights_to_fp16

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    assert bias.size < FP16_MIN_ELEMENTS <= weight.size
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    reference = model.SerializeToString()

    assert weights_to_fp16(model) == 1
    onnx.checker.check_model(model)
    stored = {i.name: i.data_type for i in model.graph.initializer}
    assert stored == {"w.fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT}
    assert [(n.op_type, list(n.output)) for n in model.graph.node][0] == ("Cast", ["w"])

    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    exact, halved = run(reference), run(model.SerializeToString())
    assert halved.dtype == np.float32
    # fp16 keeps 11 significant bits: a relative error of at most 2**-11 per weight.
    bound = np.abs(weight).sum(axis=(1, 2, 3)).max() * np.abs(x).max() * 2.0**-11
    assert 0 < np.abs(exact - halved).max() <= bound


def test_the_standin_store_is_half_size(standin_weights, standin_models):
    """Every network stored in fp16: each file about half its checkpoint, the whole store
    within 470 MB (the stand-ins have the official networks' shapes, so the official store's
    size is the same)."""
    from processing.checkpoints.weights import expected_files

    store = ModelStore(standin_models)
    assert store.weights == "fp16"
    for network in store.networks.values():
        checkpoint = (standin_weights / network.checkpoint).stat().st_size
        assert network.size < 0.52 * checkpoint, network.role
    assert sum(n.size for n in store.networks.values()) <= 470e6
    assert set(expected_files(standin_weights)) >= {n.checkpoint for n in store.networks.values()}
