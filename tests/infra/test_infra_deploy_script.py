"""infra/deploy.sh and infra/README.md: the way from nothing to a working URL.

The Azure CLI cannot run here, so the script is checked for syntax (bash -n, and shellcheck
where installed), for its settings, for the order of its steps, and for never touching an
account key; the README for writing every command out.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from infra_helpers import INFRA

SCRIPT = INFRA / "deploy.sh"
README = INFRA / "README.md"


def code_lines() -> str:
    return "\n".join(line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#"))


def test_deploy_script_is_valid_bash():
    completed = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)")
def test_deploy_script_passes_shellcheck():
    completed = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout


def test_deploy_script_is_strict_and_executable():
    lines = SCRIPT.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert SCRIPT.stat().st_mode & 0o111, "deploy.sh must be executable"


@pytest.mark.parametrize("name", ["RESOURCE_GROUP", "LOCATION", "PREFIX", "HOSTING"])
def test_settings_come_from_the_environment_with_defaults(name: str):
    assert re.search(rf"^{name}=\$\{{{name}:-[^}}]+\}}", SCRIPT.read_text(), re.MULTILINE), name


def test_steps_run_in_order():
    text = code_lines()
    steps = [
        "az group create",
        'deploy "$PREFIX-infra" ""',  # everything but the app (the registry must exist first)
        "az acr build",
        'deploy "$PREFIX-app" "$IMAGE"',
        "az storage blob upload-batch",
        "/api/health",
    ]
    positions = [text.find(step) for step in steps]
    assert all(p >= 0 for p in positions), dict(zip(steps, positions))
    assert positions == sorted(positions), dict(zip(steps, positions))
    assert "az deployment group create" in text and "infra/main.bicep" in text


def test_page_gets_a_config_js_with_the_api_url():
    text = code_lines()
    assert 'cat > "$STAGE/config.js"' in text
    assert "cp -R static_site/." in text, "the page is uploaded from a copy; the repository's config.js is untouched"
    # The generated file sets the same global the page's own config.js declares.
    written = re.findall(r'window\.(\w+)\s*=\s*"\$API_URL"', text)
    assert written, "deploy.sh must write window.<NAME> = \"$API_URL\" into config.js"
    page_config = INFRA.parent / "static_site" / "config.js"
    if page_config.is_file():
        declared = re.findall(r"^window\.(\w+)\s*=", page_config.read_text(), re.MULTILINE)
        assert set(written) == set(declared), (written, declared)


def test_no_keys_anywhere_in_the_deploy_path():
    for path in (SCRIPT, README):
        text = path.read_text()
        for forbidden in ("--account-key", "keys list", "--connection-string", "AccountKey=", "--sas-token"):
            assert forbidden not in text, f"{path.name}: {forbidden}"
    for line in code_lines().splitlines():
        if line.strip().startswith("az storage"):
            block = code_lines()[code_lines().find(line):][:600]
            assert "--auth-mode login" in block, line


def test_readme_writes_every_command_out():
    text = README.read_text()
    for command in (
        "az login",
        "az group create",
        "az deployment group create",
        "az acr build",
        "az storage blob upload-batch",
        "--auth-mode login",
        "config.js",
        "curl",
        "infra/deploy.sh",
    ):
        assert command in text, command
    assert "Why this hosting" in text
