"""Fixtures of the infrastructure checks; the helpers live in infra_helpers.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from infra_helpers import INFRA, bicep_files, parse_bicep


@pytest.fixture(scope="session")
def bicep() -> SimpleNamespace:
    """Parsed Bicep: ``bicep.main``, ``bicep.module('storage')``, ``bicep.trees`` (path -> tree)."""
    trees = {path.relative_to(INFRA).as_posix(): parse_bicep(path) for path in bicep_files()}
    return SimpleNamespace(
        trees=trees,
        main=trees["main.bicep"],
        module=lambda name: trees[f"modules/{name}.bicep"],
    )
