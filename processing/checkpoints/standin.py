"""Stand-in checkpoints for machines that cannot reach the release pages: the real
GFPGANv1Clean, RetinaFace-ResNet50, ParseNet and RRDBNet classes with seeded random
parameters, saved exactly as the official files are laid out, with a manifest that marks
them (and every export made from them) as stand-ins."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch

from . import architectures
from .weights import BACKGROUND_FILE, DETECTOR_FILE, GFPGAN_FILES, PARSER_FILE, STANDIN_MANIFEST
from ..engine.store import sha256_of


def build_standin(weights_dir: Path, seed: int = 0, log: Callable[[str], None] = print) -> None:
    weights_dir.mkdir(parents=True, exist_ok=True)
    builders = {
        GFPGAN_FILES["1.4"]: lambda: {"params_ema": architectures.new_gfpgan().state_dict()},
        GFPGAN_FILES["1.3"]: lambda: {"params_ema": architectures.new_gfpgan().state_dict()},
        DETECTOR_FILE: lambda: architectures.new_detector().state_dict(),
        PARSER_FILE: lambda: architectures.new_parser().state_dict(),
        BACKGROUND_FILE: lambda: {"params_ema": architectures.new_realesrgan_x2().state_dict()},
    }
    files = {}
    for offset, (name, build) in enumerate(builders.items()):
        torch.manual_seed(seed + offset)
        target = weights_dir / name
        tmp = weights_dir / f".{name}.tmp"
        torch.save(build(), tmp)
        os.replace(tmp, target)
        files[name] = {"size": target.stat().st_size, "sha256": sha256_of(target)}
        log(f"stand-in {name} (seed {seed + offset})")
    manifest = {
        "warning": "STAND-IN WEIGHTS: random parameters, meaningless output. Not for real use.",
        "seed": seed,
        "files": files,
    }
    (weights_dir / STANDIN_MANIFEST).write_text(json.dumps(manifest, indent=2))
