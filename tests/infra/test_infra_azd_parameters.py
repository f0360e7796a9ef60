"""Each azd step that deploys Bicep, fed a sample environment the way azd feeds it: the JSON type of
every value ARM receives must be the Bicep parameter's type. And azure.yaml's values have the types
azd's own schema gives them.

The substitution and conversion are re-done from azd's source (tests/infra/azd_emulation.py names
the files and functions): ``azd provision`` substitutes infra/main.parameters.json and converts
strings to bool/int; ``azd deploy`` of a container-app service deploys Bicep only when the service
has a module (infra/<module>.bicep + .parameters.json, or .bicepparam) and then converts nothing,
so "${MIN_REPLICAS=0}" would reach ARM as "0" for an int parameter ("Template parameter JToken
type is not valid").
"""

from __future__ import annotations

import datetime
import json

import jsonschema_rs
import pytest
import yaml
from azd_emulation import deploy_module, deploy_parameters, envsubst, json_type_matches, provision_parameters
from infra_helpers import INFRA, REFERENCE, REPO, parse_bicep

AZURE_YAML = REPO / "azure.yaml"
PARAMETERS = INFRA / "main.parameters.json"
# Azure/azure-dev schemas/v1.0/azure.yaml.json at ae35809f496491989273d0edefdeb70f245f399b, unchanged.
SCHEMA = REFERENCE / "azd-azure.yaml.schema.json"

SIGNED_IN = ("11111111-2222-3333-4444-555555555555", "User")
# What azd's environment holds at `azd provision` time. SERVICE_APP_RESOURCE_EXISTS is written by the
# container-app target's preprovision handler (strconv.FormatBool: "true"/"false");
# SERVICE_APP_IMAGE_NAME by its Publish step after a deploy.
FIRST_UP = {
    "AZURE_ENV_NAME": "faces-dev",
    "AZURE_LOCATION": "westeurope",
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "SERVICE_APP_RESOURCE_EXISTS": "false",
}
REPROVISION = {
    **FIRST_UP,
    "SERVICE_APP_RESOURCE_EXISTS": "true",
    "SERVICE_APP_IMAGE_NAME": "facefixacrx1y2z3.azurecr.io/face-restore/app-faces-dev:azd-deploy-1767225600",
    "AZURE_CONTAINER_REGISTRY_ENDPOINT": "facefixacrx1y2z3.azurecr.io",
    "SERVICE_APP_URI": "https://facefix-app.example.westeurope.azurecontainerapps.io",
}
SETTINGS = {
    **REPROVISION,
    "MIN_REPLICAS": "1",
    "MAX_INSTANCES": "10",
    "CPU": "1.0",
    "MEMORY": "2Gi",
    "RETENTION_DAYS": "7",
    "USE_DEPLOYMENT_SCRIPT": "false",
    "ALERT_EMAIL": "ops@example.com",
    "NAME_PREFIX": "faces",
    "AVAILABILITY_TEST": "false",
}
ENVIRONMENTS = {"first azd up": FIRST_UP, "re-provision": REPROVISION, "every setting": SETTINGS}


@pytest.fixture(scope="module")
def azd() -> dict:
    return yaml.safe_load(AZURE_YAML.read_text())


@pytest.fixture(scope="module")
def declared(bicep) -> dict[str, dict]:
    return bicep.main["parameters"]


def _decorator(param: dict, kind: str):
    return next((d["argument"] for d in param.get("decorators", []) if d["type"] == kind), None)


def _check_against_declaration(declared: dict, name: str, value) -> list[str]:
    param = declared[name]
    problems = []
    if not json_type_matches(param["type"], value):
        problems.append(f"{name}: ARM gets {json.dumps(value)} ({type(value).__name__}) for a Bicep {param['type']}")
        return problems
    allowed = _decorator(param, "allowed")
    if allowed is not None and value not in allowed:
        problems.append(f"{name}: {value!r} is not one of {allowed}")
    low, high = _decorator(param, "min_value"), _decorator(param, "max_value")
    if low is not None and value < low or high is not None and value > high:
        problems.append(f"{name}: {value} outside [{low}, {high}]")
    return problems


# --- azd provision ---------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_provision_sends_every_parameter_with_its_bicep_type(declared, environment):
    outcomes = provision_parameters(PARAMETERS, declared, environment, SIGNED_IN)
    problems = []
    for name, outcome in outcomes.items():
        assert name in declared, f"main.parameters.json passes {name}, which main.bicep does not declare"
        if outcome.sent:
            problems += _check_against_declaration(declared, name, outcome.value)
    assert not problems, "\n".join(problems)
    # Nothing required is left for azd to prompt for.
    required = {name for name, p in declared.items() if p.get("default") is None}
    assert required <= {n for n, o in outcomes.items() if o.sent}, required


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_provision_uses_every_value_the_environment_sets(declared, environment):
    # A value that does not convert (say "yes" for a bool) is silently replaced by the default in
    # azd; a setting in the environment must never be lost that way.
    raw = json.loads(PARAMETERS.read_text())["parameters"]
    outcomes = provision_parameters(PARAMETERS, declared, environment, SIGNED_IN)
    for name, entry in raw.items():
        names = envsubst(json.dumps(entry), lambda _: "").names
        if any(variable in environment for variable in names):
            assert outcomes[name].sent, f"{name}: {names} set in the environment, but ARM gets the default ({outcomes[name].note})"


def test_first_provision_creates_the_app_and_a_reprovision_keeps_its_image(declared):
    first = provision_parameters(PARAMETERS, declared, FIRST_UP, SIGNED_IN)
    assert first["appExists"].value is False
    assert not first["image"].sent, "no image yet: main.bicep starts the app on its placeholder"
    again = provision_parameters(PARAMETERS, declared, REPROVISION, SIGNED_IN)
    assert again["appExists"].value is True
    assert again["image"].value == REPROVISION["SERVICE_APP_IMAGE_NAME"]
    assert again["principalId"].value == SIGNED_IN[0] and again["principalType"].value == "User"
    settings = provision_parameters(PARAMETERS, declared, SETTINGS, SIGNED_IN)
    assert (settings["minReplicas"].value, settings["maxInstances"].value, settings["retentionDays"].value) == (1, 10, 7)
    assert settings["enableStaticWebsiteScript"].value is False and settings["availabilityTest"].value is False


# --- azd deploy --------------------------------------------------------------------------------


def test_azd_deploy_deploys_no_bicep_it_cannot_type(azd):
    """The container-app target deploys Bicep on `azd deploy` only when the service has a module;
    then its parameters are substituted without conversion, so every non-string parameter fed
    from the environment would reach ARM as a string. This service has none: azd sets the image."""
    for service in azd["services"]:
        module = deploy_module(azd, service, INFRA)
        if module is None:
            continue
        kind, path = module
        assert kind == "parameters.json", f"{path}: a .bicepparam deploy is not emulated here; check it by hand"
        outcomes = deploy_parameters(path, {**REPROVISION, "SERVICE_APP_IMAGE_NAME": "registry/app:new"})
        declared = parse_bicep(path.with_name(path.name.replace(".parameters.json", ".bicep")))
        problems = [p for name, o in outcomes.items() if o.sent for p in _check_against_declaration(declared["parameters"], name, o.value)]
        assert not problems, f"azd deploy of service {service} ({path.name}):\n" + "\n".join(problems)


def test_the_deploy_emulation_sees_the_defect_of_module_main(declared):
    # The shape this repository had (`module: main`): azd deploy sends strings for bool/int.
    outcomes = deploy_parameters(PARAMETERS, REPROVISION)
    assert outcomes["appExists"].value == "true" and outcomes["minReplicas"].value == "0"
    assert _check_against_declaration(declared, "minReplicas", outcomes["minReplicas"].value)


def test_the_container_app_is_found_by_its_tag_and_updated_with_the_templates_api_version(azd, bicep):
    (service, config), = azd["services"].items()
    assert config["host"] == "containerapp" and "module" not in config
    assert deploy_module(azd, service, INFRA) is None
    # azd looks the app up by azd-service-name (AddRevision then GETs and PUTs it with apiVersion).
    assert bicep.main["variables"]["azdServiceName"]["value"] == service


def test_envsubst_emulation_follows_drone_envsubst():
    env = {"SET": "x", "EMPTY": ""}
    assert envsubst("${SET}|${UNSET}|${UNSET=d}|${EMPTY=d}|${EMPTY:-d}|$SET|$$", env.get).text == "x||d|d|d|$SET|$"
    assert envsubst("${UNSET=}", env.get).unset is True


# --- azure.yaml against azd's schema ------------------------------------------------------------


def _json_document(node, path="") -> object:
    """The YAML document as JSON types; a value YAML reads as something else (a date) is an error."""
    if isinstance(node, dict):
        return {key: _json_document(value, f"{path}.{key}") for key, value in node.items()}
    if isinstance(node, list):
        return [_json_document(value, f"{path}[{i}]") for i, value in enumerate(node)]
    if isinstance(node, (datetime.date, datetime.datetime)):
        raise AssertionError(f"azure.yaml{path}: YAML reads {node!r} (a {type(node).__name__}); quote it")
    assert node is None or isinstance(node, (str, int, float, bool)), f"azure.yaml{path}: {type(node).__name__}"
    return node


def _schema_errors(document: dict) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    # The AI-extension sub-schemas it references by URL are not needed for this file (offline).
    validator = jsonschema_rs.validator_for(schema, retriever=lambda uri: {})
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_azure_yaml_has_the_types_azds_schema_says():
    document = _json_document(yaml.safe_load(AZURE_YAML.read_text()))
    assert not _schema_errors(document)
    assert isinstance(document["services"]["app"]["apiVersion"], str)


def test_a_yaml_date_or_a_wrong_type_fails_the_schema_check():
    text = AZURE_YAML.read_text()
    with pytest.raises(AssertionError, match="quote it"):
        _json_document(yaml.safe_load(text.replace('apiVersion: "2025-07-01"', "apiVersion: 2025-07-01")))
    wrong = yaml.safe_load(text)
    wrong["services"]["app"]["docker"]["remoteBuild"] = "yes"
    assert _schema_errors(wrong)
