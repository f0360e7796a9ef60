"""Scaling that keeps jobs alive (issue 13) and least privilege (issue 11, part 4), on the
parsed Bicep, plus what infra/README.md must say about them.
"""

from __future__ import annotations

import json
import re

from infra_helpers import INFRA, config, resources

README = (INFRA / "README.md").read_text()


def _app(bicep) -> dict:
    (app,) = resources(bicep.module("hosting-containerapps"), "Microsoft.App/containerApps").values()
    return config(app)


def _container_env(bicep) -> dict:
    env = _app(bicep)["properties"]["template"]["containers"][0]["env"]
    args = env["function"]["parameters"]
    assert env["function"]["type"] == "concat" and args["arg_1"] == "env"
    return {item["name"]: item["value"] for item in args["arg_2"]}


# --- scaling -------------------------------------------------------------------------------


def test_container_app_sets_one_functions_host_id(bicep):
    tree = bicep.module("hosting-containerapps")
    env = _container_env(bicep)
    assert env["AzureFunctionsWebHost__hostid"] == "hostId"
    # take(toLower(appName), 32): the host's limit, and the same id on every replica.
    host_id = tree["variables"]["hostId"]["value"]["function"]
    assert host_id["type"] == "take" and host_id["parameters"]["number_to_take"] == 32
    assert host_id["parameters"]["original_value"]["function"]["parameters"]["string_to_change"] == "appName"
    # main.bicep's names keep it valid: lowercase letters, digits and single dashes.
    assert re.fullmatch(r"\$\{namePrefix\}-app", bicep.main["variables"]["names"]["value"]["containerApp"])


def test_queue_rule_counts_in_flight_messages(bicep):
    scale = _app(bicep)["properties"]["template"]["scale"]
    assert not [r for r in scale["rules"] if "azureQueue" in r], "the built-in azureQueue rule cannot pin the strategy"
    (rule,) = [r["custom"] for r in scale["rules"] if "custom" in r and r["custom"]["metadata"]["queueName"] == "jobsQueue"]
    assert rule["type"] == "azure-queue"
    assert rule["metadata"]["queueLengthStrategy"] == "all"
    assert rule["identity"] == "appIdentityId"


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n")[1].split("\n## ")[0]


def test_grace_period_is_not_sold_as_keeping_the_job(bicep):
    template = (INFRA / "modules" / "hosting-containerapps.bicep").read_text()
    for text in (template, README):
        assert "lets the running job finish" not in text
    (app,) = resources(bicep.module("hosting-containerapps"), "Microsoft.App/containerApps").values()
    grace = config(app)["properties"]["template"]["terminationGracePeriodSeconds"]
    section = _section("Scaling and jobs in flight")
    assert f"`terminationGracePeriodSeconds` ({grace} s)" in section
    assert "does **not** finish" in section


def test_readme_says_what_happens_to_a_job_on_scale_in():
    section = _section("Scaling and jobs in flight")
    for fact in ("AzureFunctionsWebHost__hostid", "queueLengthStrategy", "2.16", "10 minutes", "visibilityTimeout",
                 "JOB_LEASE_SECONDS", "maxDequeueCount", "poison", "re-enqueues"):
        assert fact in section, f"'Scaling and jobs in flight' does not mention {fact}"


# --- least privilege -----------------------------------------------------------------------


def test_no_output_anywhere_carries_the_connection_string(bicep):
    for path, tree in bicep.trees.items():
        for name, output in tree.get("outputs", {}).items():
            assert "ConnectionString" not in json.dumps(output), f"{path}: output {name}"


def test_page_lives_in_an_account_of_its_own(bicep):
    web = bicep.module("web-storage")
    (account,) = resources(web, "Microsoft.Storage/storageAccounts").values()
    props = config(account)["properties"]
    assert props["allowSharedKeyAccess"] is False and props["allowBlobPublicAccess"] is False
    containers = {config(c)["name"] for c in resources(web, "Microsoft.Storage/storageAccounts/blobServices/containers").values()}
    assert containers == {"$web"}, "the page's account holds the static website only"
    data = bicep.module("storage")
    data_containers = {config(c)["name"] for c in resources(data, "Microsoft.Storage/storageAccounts/blobServices/containers").values()}
    assert "$web" not in data_containers
    script = config(bicep.main["modules"]["staticWebsite"])["params"]
    passed = json.dumps(script["storageAccountName"])
    assert '"webStorage"' in passed and '"storage"' not in passed, "the static website is switched on in the page's account"


def _assignments(bicep) -> list[dict]:
    return [config(r) for r in resources(bicep.module("identity"), "Microsoft.Authorization/roleAssignments").values()]


def _principal(assignment) -> str:
    principal = assignment["properties"]["principalId"]
    return principal if isinstance(principal, str) else principal["operator"]["operands"]["operand_1"]


def _scope(assignment) -> str:
    scope, parts = assignment["scope"], []
    while isinstance(scope, dict):
        parts.append(scope["operator"]["operands"]["operand_1"])
        scope = scope["operator"]["operands"]["operand_2"]
    return "::".join([*parts, scope])


def test_only_the_app_identity_has_roles_on_the_data_account(bicep):
    on_data = {_principal(a) for a in _assignments(bicep) if _scope(a) == "storage"}
    assert on_data == {"appIdentity"}


def test_deploy_identity_roles_stay_on_the_page_account(bicep):
    scopes = {_scope(a) for a in _assignments(bicep) if _principal(a) == "deployIdentity"}
    assert scopes == {"webStorage"}
    assert "Storage Account Contributor" in README and "page's account" in README


def test_deployer_blob_role_is_scoped_to_the_web_container(bicep):
    (deployer,) = [a for a in _assignments(bicep) if _principal(a) == "principalId"]
    assert _scope(deployer) == "webStorage::blobService::webContainer"
    identity = bicep.module("identity")
    container = identity["resources"]["webStorage__blobService__webContainer"]
    assert container["existing"] is True and config(container)["name"] == "webContainerName"
    passed = json.dumps(config(bicep.main["modules"]["identity"])["params"]["webContainerName"])
    assert '"webStorage"' in passed and '"webContainerName"' in passed, passed


def test_readme_says_why_the_data_account_stays_public():
    network = _section("Security notes").split("**Network.**")[1].split("\n- **")[0]
    for fact in ("private endpoint", "VNet", "KEDA"):
        assert fact.lower() in network.lower(), f"the Network note does not mention {fact}"
