"""Checkpoints (.pth): what they are, where they come from, and whether they are intact.

The service never downloads weights implicitly (gfpgan and facexlib would, into the
working directory), and never reads a checkpoint at run time: checkpoints arrive only
through ``python -m processing.checkpoints fetch`` (or the Docker build), are checked against
their published SHA-256, and are exported to the model store the service runs
(export.py). Machines without access to the release pages can build *stand-in*
checkpoints (standin.py): the real architectures with seeded random parameters, so every
code path and every FLOP is real while the pixels are meaningless.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..engine.store import BACKGROUND, DETECTOR, GFPGAN_ROLES, PARSER, sha256_of

STANDIN_MANIFEST = "STANDIN-WEIGHTS.json"
_VERIFIED_STAMP = ".verified.json"


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    size: int
    sha256: str
    purpose: str
    required: bool = True


OFFICIAL_WEIGHTS: tuple[WeightFile, ...] = (
    WeightFile(
        "GFPGANv1.4.pth",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
        348632874,
        "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        "GFPGAN v1.4 restorer",
    ),
    WeightFile(
        "GFPGANv1.3.pth",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",
        348632874,
        "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
        "GFPGAN v1.3 restorer",
    ),
    WeightFile(
        "detection_Resnet50_Final.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        109497761,
        "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        "RetinaFace-ResNet50 face detector",
    ),
    WeightFile(
        "parsing_parsenet.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
        85331193,
        "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
        "ParseNet face parser (paste-back mask)",
    ),
    WeightFile(
        "RealESRGAN_x2plus.pth",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
        67061725,
        "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        "Real-ESRGAN x2 background upsampler (optional)",
        required=False,
    ),
)

GFPGAN_FILES = {"1.3": "GFPGANv1.3.pth", "1.4": "GFPGANv1.4.pth"}
DETECTOR_FILE = "detection_Resnet50_Final.pth"
PARSER_FILE = "parsing_parsenet.pth"
BACKGROUND_FILE = "RealESRGAN_x2plus.pth"
# Which network of the model store (engine/store.py) each checkpoint becomes.
ROLES = {
    **{name: GFPGAN_ROLES[version] for version, name in GFPGAN_FILES.items()},
    DETECTOR_FILE: DETECTOR,
    PARSER_FILE: PARSER,
    BACKGROUND_FILE: BACKGROUND,
}


class WeightsError(RuntimeError):
    """Weights are missing, incomplete or corrupt; the message says which and what to run."""


@dataclass(frozen=True)
class WeightStatus:
    name: str
    ok: bool
    problem: str = ""


def is_standin_dir(weights_dir: Path) -> bool:
    return (weights_dir / STANDIN_MANIFEST).is_file()


def expected_files(weights_dir: Path) -> dict[str, tuple[int, str, bool]]:
    """name -> (size, sha256, required) for the directory's kind of weights."""
    if is_standin_dir(weights_dir):
        manifest = json.loads((weights_dir / STANDIN_MANIFEST).read_text())
        return {name: (entry["size"], entry["sha256"], True) for name, entry in manifest["files"].items()}
    return {w.name: (w.size, w.sha256, w.required) for w in OFFICIAL_WEIGHTS}


def check(weights_dir: Path, *, full_hash: bool = False) -> list[WeightStatus]:
    """Check every known file. Hashing 550 MB takes a second or two, so a file whose size
    and mtime match an earlier successful hash is trusted unless ``full_hash`` is set."""
    stamp_path = weights_dir / _VERIFIED_STAMP
    try:
        stamps = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamps = {}
    statuses = []
    for name, (size, sha, required) in expected_files(weights_dir).items():
        path = weights_dir / name
        if not path.is_file():
            if required:
                statuses.append(WeightStatus(name, False, "missing"))
            continue
        stat = path.stat()
        if stat.st_size != size:
            statuses.append(WeightStatus(name, False, f"size {stat.st_size} bytes, expected {size}"))
            continue
        fingerprint = [stat.st_size, stat.st_mtime_ns, sha]
        if not full_hash and stamps.get(name) == fingerprint:
            statuses.append(WeightStatus(name, True))
            continue
        actual = sha256_of(path)
        if actual != sha:
            statuses.append(WeightStatus(name, False, f"sha256 {actual[:16]}…, expected {sha[:16]}…"))
            continue
        stamps[name] = fingerprint
        statuses.append(WeightStatus(name, True))
    try:
        stamp_path.write_text(json.dumps(stamps))
    except OSError:
        pass  # a read-only weights directory (the container image) just re-hashes next time
    return statuses


def require_weights(weights_dir: Path, models: Iterable[str] = ("1.4",)) -> None:
    """Raise WeightsError unless the detector, the parser and the given GFPGAN versions are intact."""
    needed = {DETECTOR_FILE, PARSER_FILE} | {GFPGAN_FILES[m] for m in models}
    statuses = {s.name: s for s in check(weights_dir)}
    problems = [
        f"{name}: {statuses[name].problem if name in statuses else 'missing'}"
        for name in sorted(needed)
        if name not in statuses or not statuses[name].ok
    ]
    if problems:
        raise WeightsError(
            f"model weights in {weights_dir} are not usable ({'; '.join(problems)}). "
            "Run `python -m processing.checkpoints fetch` (or `python -m processing.checkpoints standin` on a "
            "machine without internet, which produces meaningless pixels)."
        )


def fetch(
    weights_dir: Path,
    *,
    source_dir: Path | None = None,
    include_optional: bool = False,
    opener: Callable[[str], object] = urllib.request.urlopen,
    log: Callable[[str], None] = print,
) -> None:
    """Download (or copy from ``source_dir``) the official files, verifying each before it
    takes its final name, so a half-written or tampered file is never picked up."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    for weight in OFFICIAL_WEIGHTS:
        if not weight.required and not include_optional:
            continue
        target = weights_dir / weight.name
        if source_dir is not None and not weight.required and not (source_dir / weight.name).is_file():
            log(f"skip    {weight.name} (optional, not in {source_dir})")
            continue
        if target.is_file() and target.stat().st_size == weight.size and sha256_of(target) == weight.sha256:
            log(f"ok      {weight.name} (already present)")
            continue
        fd, tmp_name = tempfile.mkstemp(prefix=f".{weight.name}.", dir=weights_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                if source_dir is not None:
                    source = source_dir / weight.name
                    if not source.is_file():
                        raise WeightsError(f"{weight.name} is not in {source_dir}")
                    with source.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                else:
                    log(f"fetch   {weight.name} from {weight.url}")
                    with opener(weight.url) as response:  # type: ignore[attr-defined]
                        shutil.copyfileobj(response, out, 1 << 20)
            actual = sha256_of(tmp)
            if actual != weight.sha256:
                raise WeightsError(f"{weight.name}: sha256 {actual} does not match the published {weight.sha256}")
            os.replace(tmp, target)
            log(f"ok      {weight.name} ({weight.size} bytes, sha256 verified)")
        finally:
            tmp.unlink(missing_ok=True)
