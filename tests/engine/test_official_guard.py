"""The official suite refuses to pass silently: asked for (``-m official``) without verified
checkpoints in weights/official it fails, naming what is wrong; not asked for, it is skipped.

Each case runs pytest in a subprocess on a copy of the suite (tests/conftest.py, the engine
tests' conftest and tests/engine/test_official.py, the real code linked in) whose root holds
the weights/official the case needs, so the real guard looks at the real location."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from processing.checkpoints import weights
from tests.conftest import ROOT

SUITE = ["pytest.ini", "tests/__init__.py", "tests/conftest.py", "tests/engine/__init__.py",
         "tests/engine/conftest.py", "tests/engine/test_official.py"]


def run_suite(root: Path, *args: str) -> subprocess.CompletedProcess:
    for name in SUITE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    for package in ("processing", "benchmarks"):
        (root / package).symlink_to(ROOT / package)
    return subprocess.run([sys.executable, "-m", "pytest", "tests/engine/test_official.py", "-q", *args],
                          cwd=root, capture_output=True, text=True, timeout=300)


def damaged(root: Path) -> None:
    """Every checkpoint the suite needs, under its own name, but not its bytes."""
    for name in weights.expected_files(root / "weights" / "official"):
        (root / "weights" / "official" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "weights" / "official" / name).write_bytes(b"not the published checkpoint")


@pytest.mark.parametrize("weights_dir", ["missing", "damaged"])
def test_asked_for_without_verified_weights_it_fails_saying_why(tmp_path, weights_dir):
    if weights_dir == "damaged":
        damaged(tmp_path)
    run = run_suite(tmp_path, "-m", "official")
    output = run.stdout + run.stderr
    assert run.returncode not in (0, 5), output  # 5: nothing collected, which would read as a pass too
    assert "skipped" not in output.splitlines()[-1], output
    assert "-m official was asked for, but weights/official does not hold verified official checkpoints" in output
    what = "GFPGANv1.4.pth missing" if weights_dir == "missing" else "GFPGANv1.4.pth"
    assert what in output and "processing.checkpoints fetch --dir weights/official" in output, output


def test_not_asked_for_it_is_skipped_with_one_line(tmp_path):
    run = run_suite(tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode in (0, 5), output  # 5: the module alone, and nothing in it ran
    assert "1 skipped" in output and "the official-weights suite is opt-in" in output, output
