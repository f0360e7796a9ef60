"""Helpers of the infrastructure checks (imported by the test modules and conftest.py).

Neither the Bicep CLI nor Docker can run here, so these tests read the files: Bicep through
pycep-parser (the parser checkov itself uses), the Dockerfile and deploy.sh as text.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
# Data copied from Azure's published references (each file names its source).
REFERENCE = Path(__file__).resolve().parent / "reference"

_INTERPOLATION = re.compile(r"\$\{(\w+)\}")


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@functools.lru_cache(maxsize=None)
def _parse(text: str) -> dict:
    from pycep import BicepParser

    return BicepParser().parse(text=text)


def parse_bicep(path: Path) -> dict:
    """The parsed template (parsed once per text: pycep takes seconds per file). Callers
    must not modify the tree they get."""
    return _parse(path.read_text())


def leaves(node: Any) -> Iterator[Any]:
    """Every scalar in a parsed subtree (strings, numbers, booleans)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from leaves(value)
    else:
        yield node


def resources(tree: dict, type_: str, *, existing: bool = False) -> dict[str, dict]:
    """Resources of one type (declared, or ``existing`` references), by symbolic name."""
    return {
        name: res
        for name, res in tree.get("resources", {}).items()
        if res["type"].lower() == type_.lower() and bool(res.get("existing")) == existing
    }


def config(resource: dict) -> dict:
    """A resource's body; pycep nests it one level deeper under a condition when ``if (...)``."""
    body = resource["config"]
    if "condition" in body and "config" in body:
        return body["config"]
    return body


def resolve(tree: dict, value: Any, overrides: dict[str, Any] | None = None) -> Any:
    """Best-effort value of an expression that is a parameter, a variable, or a string with
    ${...} interpolations of those (enough for names such as '${jobsQueue}-poison')."""
    overrides = overrides or {}
    if not isinstance(value, str):
        return value
    if value in overrides:
        return resolve(tree, overrides[value])
    params = tree.get("parameters", {})
    variables = tree.get("variables", {})
    if value in params and params[value].get("default") is not None:
        return resolve(tree, params[value]["default"], overrides)
    if value in variables and isinstance(variables[value]["value"], (str, int, bool)):
        return resolve(tree, variables[value]["value"], overrides)

    def substitute(match: re.Match) -> str:
        resolved = resolve(tree, match.group(1), overrides)
        return str(resolved) if resolved != match.group(1) else match.group(0)

    return _INTERPOLATION.sub(substitute, value)


def role_table(path: Path) -> dict[str, str]:
    """Role name -> role definition ID from a "name<TAB>id" file (# comments)."""
    table = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, role_id = line.split("\t")
            table[name.strip()] = role_id.strip().lower()
    return table


def checkov_binary() -> str | None:
    """CHECKOV_BIN, else the repository's .venv-checkov, else checkov on PATH.

    checkov lives in its own virtualenv because its pins (networkx 2.x, packaging 23.x,
    python-dateutil 2.x) would downgrade packages the service uses."""
    candidates = [os.environ.get("CHECKOV_BIN"), str(REPO / ".venv-checkov" / "bin" / "checkov"), shutil.which("checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
