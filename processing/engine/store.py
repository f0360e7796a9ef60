"""The model store: the exported networks the service runs, and their manifest.

The running service never sees a checkpoint (.pth) and never exports: the build
(``python -m processing.checkpoints export``, the Docker build) turns verified checkpoints into
ONNX graphs in this directory and writes ``models.json``, which names each network's file
with its size and SHA-256, the checkpoint it came from, whether the checkpoints were
official or stand-ins, and how the weights are stored: ``fp16`` (the default, half the
size; each weight is cast to f32 inside the graph, so both runtimes compute in f32 or bf16
as asked) or ``fp32`` (the checkpoint's values exactly, ``export --fp32-weights``). The store is read-only to the service: a container's image layer,
owned by root, works as it is.

Checking a store at start-up compares sizes (instant); ``check(full_hash=True)`` (the
image build, ``python -m processing models verify``) hashes every file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

MANIFEST = "models.json"
# Bump when an export wrapper or its inputs/outputs change: the engine then refuses a store
# exported by an older build instead of feeding it inputs it does not have.
# 3: weights stored in fp16 by default (with Cast nodes to f32), named by storage in the file name.
EXPORT_FORMAT = 3
OPSET = 17
WEIGHTS = ("fp16", "fp32")  # how an export stores its weights; fp16 is the default

GFPGAN_ROLES = {"1.3": "gfpgan-1.3", "1.4": "gfpgan-1.4"}
DETECTOR = "detector"
PARSER = "parser"
BACKGROUND = "background"
REQUIRED_ROLES = (DETECTOR, PARSER)


class ModelsError(RuntimeError):
    """The store is missing, incomplete, damaged or of the wrong kind; the message says what to run."""


def export_name(checkpoint: str, checkpoint_sha256: str, weights: str = "fp16") -> str:
    """An export's file name: the checkpoint it came from (by hash), the export format and how
    its weights are stored, so a changed checkpoint or exporter never reuses a stale graph."""
    return f"{Path(checkpoint).stem}.{checkpoint_sha256[:16]}.opset{OPSET}.v{EXPORT_FORMAT}.{weights}.onnx"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Network:
    role: str
    file: str
    size: int
    sha256: str
    checkpoint: str
    checkpoint_sha256: str


class ModelStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    @cached_property
    def manifest(self) -> dict:
        path = self.directory / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelsError(
                f"no exported models in {self.directory} ({MANIFEST} is missing). Build them with "
                "`python -m processing.checkpoints export --dir <checkpoints> --models-dir "
                f"{self.directory}` (the Docker image does this at build time)."
            ) from None
        except (OSError, ValueError) as error:
            raise ModelsError(f"{path} cannot be read: {error}") from None
        if manifest.get("format") != EXPORT_FORMAT:
            raise ModelsError(
                f"{path} was written by export format {manifest.get('format')}; this service needs "
                f"format {EXPORT_FORMAT}: export again with `python -m processing.checkpoints export`"
            )
        return manifest

    @property
    def weights(self) -> str:
        """How the weights are stored: fp16 or fp32."""
        return self.manifest.get("weights", "fp32") if self._readable() else ""

    @property
    def standin(self) -> bool:
        return self._readable() and self.manifest.get("kind") == "standin"

    def _readable(self) -> bool:
        try:
            self.manifest
        except ModelsError:
            return False
        return True

    @cached_property
    def networks(self) -> dict[str, Network]:
        return {role: Network(role=role, **entry) for role, entry in self.manifest.get("networks", {}).items()}

    def has(self, role: str) -> bool:
        network = self.networks.get(role) if self._readable() else None
        return network is not None and (self.directory / network.file).is_file()

    def gfpgan_versions(self) -> list[str]:
        return [version for version, role in GFPGAN_ROLES.items() if self.has(role)]

    def problems(self, roles: Iterable[str] | None = None, *, full_hash: bool = False) -> list[str]:
        """What is wrong with ``roles`` (default: every network the manifest lists, and the
        required ones): missing, wrong size, or (``full_hash``) wrong SHA-256."""
        try:
            networks = self.networks
        except ModelsError as error:
            return [str(error)]
        wanted = list(roles) if roles is not None else sorted(set(networks) | set(REQUIRED_ROLES))
        found = []
        for role in wanted:
            network = networks.get(role)
            if network is None:
                found.append(f"{role}: not exported")
                continue
            path = self.directory / network.file
            if not path.is_file():
                found.append(f"{role}: {network.file} is missing")
            elif path.stat().st_size != network.size:
                found.append(f"{role}: {network.file} is {path.stat().st_size} bytes, expected {network.size}")
            elif full_hash and sha256_of(path) != network.sha256:
                found.append(f"{role}: {network.file} does not match its SHA-256")
        return found

    def path(self, role: str) -> Path:
        """The file of one network, checked; ModelsError if it is absent or damaged."""
        problems = self.problems([role])
        if problems:
            raise ModelsError(f"models in {self.directory}: {problems[0]}")
        return self.directory / self.networks[role].file
