"""infra/deploy.sh, the scripts it shares with azd's hook (infra/scripts/, infra/hooks/), and
infra/README.md: the way from nothing to a working URL.

The Azure CLI cannot run here, so the scripts are checked for syntax (bash -n, and shellcheck
where installed), for their settings, for the order of the steps, and for never touching an
account key; the README for writing every command out.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from infra_helpers import INFRA

SCRIPT = INFRA / "deploy.sh"
PUBLISH = INFRA / "scripts" / "publish-site.sh"
SMOKE = INFRA / "scripts" / "smoke-test.sh"
HOOK = INFRA / "hooks" / "postdeploy.sh"
README = INFRA / "README.md"
SHELL_SCRIPTS = sorted([SCRIPT, *(INFRA / "scripts").glob("*.sh"), *(INFRA / "hooks").glob("*.sh")])


def code_lines(path=SCRIPT) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def _id(path) -> str:
    return path.relative_to(INFRA).as_posix()


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=_id)
def test_shell_scripts_are_valid_bash(path):
    completed = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=_id)
def test_shell_scripts_pass_shellcheck(path):
    completed = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=_id)
def test_shell_scripts_are_strict_and_executable(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert path.stat().st_mode & 0o111, f"{path.name} must be executable"


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
        "./infra/scripts/publish-site.sh",
        "./infra/scripts/smoke-test.sh",
    ]
    positions = [text.find(step) for step in steps]
    assert all(p >= 0 for p in positions), dict(zip(steps, positions))
    assert positions == sorted(positions), dict(zip(steps, positions))
    assert "az deployment group create" in text and "infra/main.bicep" in text


def test_azd_hook_runs_the_same_publish_and_smoke_steps():
    # One source of truth: azd's postdeploy hook and deploy.sh call the same two scripts.
    hook = code_lines(HOOK)
    positions = [hook.find("scripts/publish-site.sh"), hook.find("scripts/smoke-test.sh")]
    assert -1 not in positions and positions == sorted(positions), positions
    assert "az storage" not in hook and "curl" not in hook, "the hook must not grow its own copy of a step"
    assert "az storage blob upload-batch" in code_lines(PUBLISH)
    assert "/api/health" in code_lines(SMOKE)
    assert "az storage blob upload-batch" not in code_lines(), "deploy.sh publishes through publish-site.sh"


def test_page_gets_a_config_js_with_the_api_url():
    text = code_lines(PUBLISH)
    assert 'cat > "$STAGE/config.js"' in text
    assert 'cp -R "$REPO_ROOT/static_site/."' in text, "the page is uploaded from a copy; the repository's config.js is untouched"
    assert '--destination "\\$web"' in text
    # The generated file sets the same global the page's own config.js declares.
    written = re.findall(r'window\.(\w+)\s*=\s*"\$SERVICE_APP_URI"', text)
    assert written, "publish-site.sh must write window.<NAME> = \"$SERVICE_APP_URI\" into config.js"
    page_config = INFRA.parent / "static_site" / "config.js"
    if page_config.is_file():
        declared = re.findall(r"^window\.(\w+)\s*=", page_config.read_text(), re.MULTILINE)
        assert set(written) == set(declared), (written, declared)


def test_no_keys_anywhere_in_the_deploy_path():
    for path in (*SHELL_SCRIPTS, README):
        text = path.read_text()
        for forbidden in ("--account-key", "keys list", "--connection-string", "AccountKey=", "--sas-token"):
            assert forbidden not in text, f"{path.name}: {forbidden}"
    for path in SHELL_SCRIPTS:
        code = code_lines(path)
        for line in code.splitlines():
            if "az storage" in line:
                block = code[code.find(line):][:600]
                assert "--auth-mode login" in block, f"{path.name}: {line}"


def test_readme_writes_every_command_out():
    text = README.read_text()
    assert text.lstrip().startswith("# Deploying to Azure")
    first_block = text[text.find("```"):text.find("```", text.find("```") + 3)]
    assert "azd up" in first_block, "infra/README.md starts with azd up"
    for command in (
        "azd up",
        "azd down",
        "azd env refresh",
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
    assert "Scaling and jobs in flight" in text
