"""What the benchmarks that run the service locally share: the stand-in model store (the test
suite's cache) and a scratch Azurite."""

from __future__ import annotations

import tempfile
from pathlib import Path


def standin_store() -> Path:
    """The stand-in checkpoints with their exported store in ``<dir>/onnx``, built if missing."""
    from processing.checkpoints import weights
    from processing.checkpoints.export import export_store
    from processing.checkpoints.standin import build_standin
    from tests.conftest import STANDIN_DIR

    if not (weights.is_standin_dir(STANDIN_DIR) and all(s.ok for s in weights.check(STANDIN_DIR))):
        build_standin(STANDIN_DIR)
    export_store(STANDIN_DIR, STANDIN_DIR / "onnx", log=lambda line: None)
    return STANDIN_DIR


def scratch_azurite(prefix: str):
    """A scratch directory and an Azurite started in it on free ports; the caller stops it and
    removes the directory."""
    from tests.conftest import Azurite, free_port

    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    azurite = Azurite(scratch / "azurite", (free_port(), free_port(), free_port()))
    azurite.start()
    return scratch, azurite
