"""azure.yaml (Azure Developer CLI) against infra/main.bicep, main.parameters.json, the hook
scripts and deploy.sh: the names must line up, since nothing here can run azd.

- the service: a container app built remotely from ./Dockerfile at the repository root, found
  by its azd-service-name tag, its image set by azd deploy (test_infra_azd_parameters.py checks
  the types azd's steps send);
- the parameters azd passes exist in main.bicep, the usual azd ones are wired to azd's
  variables, and the re-provision trap is closed (SERVICE_<APP>_RESOURCE_EXISTS -> appExists);
- every variable a hook script requires is an output of main.bicep (or one azd sets itself);
  deploy.sh reads the same outputs and hands the scripts the same names.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from infra_helpers import INFRA, REPO, config, resources

AZURE_YAML = REPO / "azure.yaml"
PARAMETERS = INFRA / "main.parameters.json"
SCRIPTS = [INFRA / "hooks" / "postdeploy.sh", INFRA / "scripts" / "publish-site.sh", INFRA / "scripts" / "smoke-test.sh"]
# Variables azd itself puts in a hook's environment (not outputs of the template).
AZD_BUILTINS = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_PRINCIPAL_ID"}
# What a person may set (azd env set / environment) that is no output.
OPTIONAL_SETTINGS = {"SMOKE_IMAGE", "STATIC_WEBSITE_BY_SCRIPT"}


@pytest.fixture(scope="module")
def azd() -> dict:
    return yaml.safe_load(AZURE_YAML.read_text())


@pytest.fixture(scope="module")
def service(azd) -> tuple[str, dict]:
    (name, svc), = azd["services"].items()
    return name, svc


@pytest.fixture(scope="module")
def parameters() -> dict[str, str]:
    raw = json.loads(PARAMETERS.read_text())["parameters"]
    return {name: entry["value"] for name, entry in raw.items()}


def _env_refs(value: str) -> list[str]:
    """${NAME} / ${NAME=default} references in a parameters-file value."""
    return re.findall(r"\$\{(\w+)(?:=[^}]*)?\}", str(value))


def test_azure_yaml_names_the_infra_and_the_service(azd, service):
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", azd["name"])
    infra = azd["infra"]
    assert infra.get("provider", "bicep") == "bicep"
    assert (REPO / infra["path"] / f"{infra['module']}.bicep") == INFRA / "main.bicep"
    name, svc = service
    assert svc["host"] == "containerapp"
    assert (REPO / svc["project"]).resolve() == REPO
    docker = svc["docker"]
    assert docker["path"] == "./Dockerfile" and (REPO / docker["path"]).is_file()
    assert docker["context"] == "."
    assert docker["remoteBuild"] is True, "the image is built in the registry (no local Docker)"
    assert any(arg.startswith("WEIGHTS_FROM=") for arg in docker.get("buildArgs", []))


def test_service_api_version_is_the_templates(service, bicep):
    # azd deploy round-trips the container app through this API version; an older one would
    # drop properties it does not know (the custom scale rule's identity).
    _, svc = service
    (app,) = resources(bicep.module("hosting-containerapps"), "Microsoft.App/containerApps").values()
    assert str(svc["apiVersion"]) == app["api_version"]


def test_container_app_carries_the_azd_service_tag(bicep, service):
    name, _ = service
    assert bicep.main["variables"]["azdServiceName"]["value"] == name
    params = config(bicep.main["modules"]["containerApps"])["params"]
    assert {key.strip("'"): value for key, value in params["appTags"].items()} == {"azd-service-name": "azdServiceName"}
    (app,) = resources(bicep.module("hosting-containerapps"), "Microsoft.App/containerApps").values()
    assert "appTags" in json.dumps(config(app)["tags"])


def test_parameters_file_matches_main_bicep(bicep, parameters, service):
    declared = bicep.main["parameters"]
    assert set(parameters) <= set(declared), f"unknown parameters {set(parameters) - set(declared)}"
    required = {name for name, p in declared.items() if p.get("default") is None}
    assert required <= set(parameters), f"azd would prompt for {required - set(parameters)}"
    name, _ = service
    svc = name.upper()
    expected = {
        "environmentName": "AZURE_ENV_NAME",
        "location": "AZURE_LOCATION",
        "principalId": "AZURE_PRINCIPAL_ID",
        "principalType": "AZURE_PRINCIPAL_TYPE",
        "appExists": f"SERVICE_{svc}_RESOURCE_EXISTS",
        "image": f"SERVICE_{svc}_IMAGE_NAME",
    }
    for param, variable in expected.items():
        assert _env_refs(parameters[param]) == [variable], (param, parameters[param])
    # At azd deploy time nothing injects these, so they need defaults that keep the template valid.
    for param in ("principalId", "principalType", "appExists", "image"):
        assert "=" in parameters[param], f"{param} needs a ${{VAR=default}}"
    assert parameters["hosting"] == "containerapps", "azd deploys the container app; premium is deploy.sh's"


def test_reprovision_keeps_the_running_image(bicep):
    # appExists with no image: the app is still deployed, with the image it runs now.
    # ... and with neither, the container app is still created (on a placeholder): azd deploy
    # only swaps the image of an app it finds by its tag.
    main = (INFRA / "main.bicep").read_text()
    assert re.search(r"var deployApp = !empty\(image\) \|\| hosting == 'containerapps'", main)
    module = bicep.main["modules"]["existingImage"]
    assert module["detail"]["path"] == "modules/existing-image.bicep"
    assert config(module)["params"]["exists"] == "appExists"
    assert re.search(r"var appImage = !empty\(image\) \? image : \(appExists \? existingImage\.outputs\.image : placeholderImage\)", main)
    assert config(bicep.main["modules"]["containerApps"])["params"]["image"] == "appImage"


def test_main_outputs_what_azd_needs(bicep):
    outputs = bicep.main["outputs"]
    assert "AZURE_CONTAINER_REGISTRY_ENDPOINT" in outputs, "azd pushes the image to this registry"
    for name, output in outputs.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{name}: azd environment names are UPPER_SNAKE"
        assert "ConnectionString" not in json.dumps(output), f"{name} leaks a connection string"


def _required_vars(path) -> set[str]:
    text = path.read_text()
    return set(re.findall(r'\$\{(\w+):\?', text))


def _used_vars(path) -> set[str]:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    return set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", text))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_hook_scripts_read_only_template_outputs(bicep, path):
    outputs = set(bicep.main["outputs"])
    for name in _required_vars(path):
        assert name in outputs | AZD_BUILTINS, f"{path.name} requires {name}, which main.bicep does not output"
    set_here = set(re.findall(r"^\s*(?:local\s+)?([A-Z][A-Z0-9_]*)=", path.read_text(), re.MULTILINE))
    environment_vars = _used_vars(path) - set_here - {"BASH_SOURCE"}
    unknown = environment_vars - outputs - AZD_BUILTINS - OPTIONAL_SETTINGS
    assert not unknown, f"{path.name} reads {unknown}: neither outputs of main.bicep nor known settings"


def test_postdeploy_hook_is_wired(azd):
    hook = azd["hooks"]["postdeploy"]["posix"]
    assert hook["shell"] == "sh"  # azd runs sh hooks with bash
    script = REPO / hook["run"]
    assert script.resolve() == (INFRA / "hooks" / "postdeploy.sh").resolve()
    assert script.stat().st_mode & 0o111


def test_deploy_script_reads_the_same_outputs(bicep):
    text = (INFRA / "deploy.sh").read_text()
    read = set(re.findall(r'output "\$PREFIX-\w+" (\w+)', text))
    assert read, "deploy.sh reads no outputs?"
    assert read <= set(bicep.main["outputs"]), f"deploy.sh reads outputs main.bicep lacks: {read - set(bicep.main['outputs'])}"
    exported = set(re.findall(r"^export (.+)$", text, re.MULTILINE)[0].split())
    needed = set().union(*(_required_vars(p) for p in SCRIPTS[1:]))
    assert needed <= exported, f"deploy.sh does not hand the scripts {needed - exported}"


def test_deploy_script_passes_only_declared_parameters(bicep):
    text = (INFRA / "deploy.sh").read_text()
    block = text[text.find("deploy() {"):text.find("\n}", text.find("deploy() {"))]
    passed = set(re.findall(r"^\s+(\w+)=\"", block, re.MULTILINE))
    assert passed, "no --parameters found in deploy()"
    assert passed <= set(bicep.main["parameters"]), passed - set(bicep.main["parameters"])


def test_azd_state_stays_out_of_the_build_context():
    lines = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert ".azure" in lines, "azd's .azure/ (environments, outputs) must not be uploaded to the registry build"
