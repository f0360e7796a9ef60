"""Checkpoints -> the model store the service runs: each network exported to ONNX (opset
17, legacy exporter) with the interface the run-time wrappers (engine/networks.py,
engine/retinaface.py) feed, and ``models.json`` naming every file with its size and
SHA-256 and the checkpoint it came from.

Weights are stored in fp16 by default (``weights_to_fp16``): every large float initializer
becomes an fp16 one followed by a Cast to f32, so the file is half the size and both
runtimes read it as it is. ONNX Runtime folds the Casts when it loads the graph and
computes in f32 (its fp16 kernels are never chosen: no fp16 tensor meets an operator);
OpenVINO folds them into f32 or bf16 weights for the precision it compiles. One ONNX file
serves both runtimes: an OpenVINO IR (``compress_to_fp16``) would be as small, but ONNX
Runtime cannot read IR, so ENGINE_BACKEND=onnxruntime would need a second store.

Exports are kept by checkpoint hash: a second run exports only what is missing or was made
from a different checkpoint, so ``python -m processing.checkpoints export`` is cheap to repeat.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from . import architectures
from .weights import (BACKGROUND_FILE, DETECTOR_FILE, GFPGAN_FILES, PARSER_FILE, ROLES, expected_files, is_standin_dir,
                      require_weights)
from ..engine.networks import gfpgan_noise
from ..engine.store import (BACKGROUND, DETECTOR, EXPORT_FORMAT, GFPGAN_ROLES, MANIFEST, OPSET, PARSER, WEIGHTS,
                             export_name, sha256_of)


def _module_and_io(role: str, checkpoint: Path):
    """The module to export and its example inputs, input/output names and dynamic axes."""
    if role in GFPGAN_ROLES.values():
        module = architectures.NoiseFedGFPGAN(architectures.load_gfpgan(checkpoint))
        noise = [torch.from_numpy(n) for n in gfpgan_noise(0)]
        names = [f"noise{i}" for i in range(len(noise))]
        return module, (torch.zeros(1, 3, 512, 512), *noise), ["input", *names], ["output"], None
    if role == PARSER:
        module = architectures.ParsingOnly(architectures.load_parser(checkpoint))
        axes = {"input": {2: "height", 3: "width"}, "parsing": {2: "height", 3: "width"}}
        return module, (torch.zeros(1, 3, 512, 512),), ["input"], ["parsing"], axes
    if role == DETECTOR:
        outputs = ["loc", "conf", "landmarks"]
        axes = {"input": {2: "height", 3: "width"}, **{name: {1: "anchors"} for name in outputs}}
        return architectures.load_detector(checkpoint), (torch.zeros(1, 3, 640, 640),), ["input"], outputs, axes
    if role == BACKGROUND:
        axes = {"input": {2: "height", 3: "width"}, "output": {2: "out_height", 3: "out_width"}}
        return architectures.load_realesrgan(checkpoint), (torch.zeros(1, 3, 64, 64),), ["input"], ["output"], axes
    raise ValueError(f"no export for {role}")


# Float initializers smaller than this stay f32: scalars and short vectors (resize scales,
# normalisation constants) cost nothing to keep exact.
FP16_MIN_ELEMENTS = 64
FP16_MAX = float(np.finfo(np.float16).max)


def weights_to_fp16(model: onnx.ModelProto) -> int:
    """Store ``model``'s large float32 initializers as float16, each followed by a Cast back
    to float32 under its old name, so every operator still sees f32. Returns how many."""
    graph = model.graph
    casts, converted = [], 0
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(initializer)
        if values.size < FP16_MIN_ELEMENTS or not np.all(np.abs(values) <= FP16_MAX):
            continue
        name = initializer.name
        initializer.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], name=f"{name}.to_f32", to=TensorProto.FLOAT))
        converted += 1
    nodes = casts + list(graph.node)  # the Casts first: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    return converted


def export(checkpoint: Path, target: Path, weights: str = "fp16") -> None:
    """Export one checkpoint to ``target`` with its weights stored as ``weights``, atomically."""
    module, args, inputs, outputs, axes = _module_and_io(ROLES[checkpoint.name], checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(), args, str(tmp), input_names=inputs, output_names=outputs,
                dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
            )
        if weights == "fp16":
            model = onnx.load(str(tmp))
            weights_to_fp16(model)
            onnx.checker.check_model(model)
            onnx.save(model, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def checkpoints_to_export(weights_dir: Path, versions: Iterable[str] = ("1.4", "1.3")) -> list[str]:
    """The detector and parser, the GFPGAN versions asked for, and Real-ESRGAN when present."""
    names = [DETECTOR_FILE, PARSER_FILE, *(GFPGAN_FILES[v] for v in versions)]
    if (weights_dir / BACKGROUND_FILE).is_file():
        names.append(BACKGROUND_FILE)
    return names


def export_store(weights_dir: Path, models_dir: Path, versions: Iterable[str] = ("1.4", "1.3"),
                 log: Callable[[str], None] = print, weights: str = "fp16") -> dict:
    """Export every checkpoint ``checkpoints_to_export`` names from ``weights_dir`` (verified
    first) into ``models_dir``, weights stored as ``weights`` (fp16 | fp32), and write its
    manifest; returns the manifest."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}")
    versions = [v for v in versions if (weights_dir / GFPGAN_FILES[v]).is_file()] or ["1.4"]
    require_weights(weights_dir, versions)
    kind = "standin" if is_standin_dir(weights_dir) else "official"
    known = expected_files(weights_dir)
    manifest_path = models_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    if (manifest.get("kind"), manifest.get("format"), manifest.get("weights")) != (kind, EXPORT_FORMAT, weights):
        manifest = {"format": EXPORT_FORMAT, "opset": OPSET, "kind": kind, "weights": weights, "networks": {}}
    for name in checkpoints_to_export(weights_dir, versions):
        role, checkpoint_sha = ROLES[name], known[name][1]
        target = models_dir / export_name(name, checkpoint_sha, weights)
        entry = manifest["networks"].get(role)
        if entry and entry["file"] == target.name and target.is_file() and target.stat().st_size == entry["size"]:
            log(f"ok      {role}: {target.name} (exported before)")
            continue
        export(weights_dir / name, target, weights)
        manifest["networks"][role] = {
            "file": target.name, "size": target.stat().st_size, "sha256": sha256_of(target),
            "checkpoint": name, "checkpoint_sha256": checkpoint_sha,
        }
        _write_json(manifest_path, manifest)
        log(f"export  {role}: {target.name}")
    _write_json(manifest_path, manifest)
    return manifest


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
