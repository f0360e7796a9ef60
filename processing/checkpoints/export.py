"""Checkpoints -> the model store the service runs: each network exported to ONNX (opset
17, legacy exporter) with the interface the run-time wrappers (engine/networks.py,
engine/retinaface.py) feed, and ``models.json`` naming every file with its size and
SHA-256 and the checkpoint it came from.

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

import torch

from . import architectures
from .weights import (BACKGROUND_FILE, DETECTOR_FILE, GFPGAN_FILES, PARSER_FILE, ROLES, expected_files, is_standin_dir,
                      require_weights)
from ..engine.networks import gfpgan_noise
from ..engine.store import BACKGROUND, DETECTOR, EXPORT_FORMAT, GFPGAN_ROLES, MANIFEST, OPSET, PARSER, export_name, sha256_of


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


def export(checkpoint: Path, target: Path) -> None:
    """Export one checkpoint to ``target``, atomically."""
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
                 log: Callable[[str], None] = print) -> dict:
    """Export every checkpoint ``checkpoints_to_export`` names from ``weights_dir`` (verified
    first) into ``models_dir`` and write its manifest; returns the manifest."""
    versions = [v for v in versions if (weights_dir / GFPGAN_FILES[v]).is_file()] or ["1.4"]
    require_weights(weights_dir, versions)
    kind = "standin" if is_standin_dir(weights_dir) else "official"
    known = expected_files(weights_dir)
    manifest_path = models_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    if manifest.get("kind") != kind or manifest.get("format") != EXPORT_FORMAT:
        manifest = {"format": EXPORT_FORMAT, "opset": OPSET, "kind": kind, "networks": {}}
    for name in checkpoints_to_export(weights_dir, versions):
        role, checkpoint_sha = ROLES[name], known[name][1]
        target = models_dir / export_name(name, checkpoint_sha)
        entry = manifest["networks"].get(role)
        if entry and entry["file"] == target.name and target.is_file() and target.stat().st_size == entry["size"]:
            log(f"ok      {role}: {target.name} (exported before)")
            continue
        export(weights_dir / name, target)
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
