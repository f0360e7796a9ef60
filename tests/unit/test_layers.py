"""The dependency direction, checked rather than hoped: the import-linter contracts in
.importlinter (layers, a run time without torch, pure pixels), with the size of what they
analysed checked so that a misconfigured contract cannot pass by analysing nothing; and what
import-linter cannot express (function_app.py, a module outside the package)."""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "processing"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_import_contracts_hold_over_the_whole_package():
    run = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    analysed = re.search(r"Analyzed (\d+) files, (\d+) dependencies", output)
    assert analysed, output
    files, dependencies = map(int, analysed.groups())
    assert files >= len(list(PACKAGE.rglob("*.py"))), "a contract that analyses less than the package proves nothing"
    assert dependencies >= 200
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    contracts = [section for section in config.sections() if section.startswith("importlinter:contract:")]
    assert len(contracts) >= 3
    assert f"Contracts: {len(contracts)} kept, 0 broken." in output


def test_function_app_is_wiring_over_processing_wiring():
    assert imported_modules(ROOT / "function_app.py") == {"logging", "azure.functions", "processing"}
    tree = ast.parse((ROOT / "function_app.py").read_text())
    from_processing = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "processing"]
    assert [alias.name for node in from_processing for alias in node.names] == ["wiring"]


def test_only_function_app_imports_azure_functions():
    offenders = [str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")
                 if any(name == "azure.functions" or name.startswith("azure.functions.") for name in imported_modules(path))]
    assert offenders == []
