"""What infra/*.bicep must say, checked on the parsed templates (pycep-parser, as checkov uses).

checkov covers generic hygiene; these cover what this service needs and checkov does not
check: no keys anywhere, identity-based settings, lifecycle rules on our two prefixes, the
roles the app identity gets, scale to zero, and that main.bicep wires its modules correctly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from infra_helpers import INFRA, REFERENCE, bicep_files, config, leaves, parse_bicep, resolve, resources, role_table

# Published built-in role IDs (tests/infra/reference/builtin-roles.tsv, copied from Microsoft's
# "Azure built-in roles" reference), not the templates' own values.
ROLE_IDS = role_table(REFERENCE / "builtin-roles.tsv")


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path):
    tree = parse_bicep(path)
    assert tree.get("resources") or tree.get("modules"), f"{path.name} declares nothing"


def test_main_parameters_and_defaults(bicep):
    params = bicep.main["parameters"]
    for name in ("location", "namePrefix", "hosting", "image", "cpu", "memory", "maxInstances", "retentionDays",
                 "environmentName", "principalId", "principalType", "appExists", "alertEmail"):
        assert name in params, f"main.bicep lacks parameter {name}"
    allowed = next(d["argument"] for d in params["hosting"]["decorators"] if d["type"] == "allowed")
    assert sorted(allowed) == ["containerapps", "premium"]
    assert params["cpu"]["default"] == "2.0"
    assert params["memory"]["default"] == "4Gi"
    min_retention = next(d["argument"] for d in params["retentionDays"]["decorators"] if d["type"] == "min_value")
    assert min_retention >= 1


def test_main_outputs(bicep):
    outputs = bicep.main["outputs"]
    for name in ("SERVICE_APP_URI", "SITE_URL", "SITE_ORIGIN", "AZURE_CONTAINER_REGISTRY_ENDPOINT",
                 "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_WEB_STORAGE_ACCOUNT_NAME", "APP_IDENTITY_CLIENT_ID"):
        assert name in outputs, f"main.bicep lacks output {name}"


def test_modules_exist_and_get_exactly_their_parameters(bicep):
    for symbol, module in bicep.main["modules"].items():
        path = INFRA / module["detail"]["path"]
        assert path.is_file(), f"module {symbol}: {path} does not exist"
        declared = bicep.trees[path.relative_to(INFRA).as_posix()]["parameters"]
        passed = set(config(module)["params"])
        assert passed <= set(declared), f"module {symbol} gets undeclared parameters {passed - set(declared)}"
        required = {name for name, p in declared.items() if p.get("default") is None}
        assert required <= passed, f"module {symbol} misses required parameters {required - passed}"


def test_module_outputs_used_by_main_exist(bicep):
    text = (INFRA / "main.bicep").read_text()
    for symbol, output in set(re.findall(r"\b(\w+)\.outputs\.(\w+)", text)):
        module = bicep.main["modules"][symbol]
        outputs = bicep.trees[module["detail"]["path"]]["outputs"]
        assert output in outputs, f"main.bicep reads {symbol}.outputs.{output}, which the module does not declare"


# --- storage -----------------------------------------------------------------------------


def _account(bicep) -> dict:
    (account,) = resources(bicep.module("storage"), "Microsoft.Storage/storageAccounts").values()
    return config(account)


def test_storage_is_keyless_private_and_https_only(bicep):
    props = _account(bicep)["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["defaultToOAuthAuthentication"] is True


def test_no_storage_account_anywhere_allows_shared_keys(bicep):
    for path, tree in bicep.trees.items():
        for name, account in resources(tree, "Microsoft.Storage/storageAccounts").items():
            assert config(account)["properties"].get("allowSharedKeyAccess") is False, f"{path}: {name}"


def test_containers_queues_and_table(bicep):
    storage = bicep.module("storage")
    main_values = {
        name: bicep.main["variables"][name]["value"]
        for name in ("uploadsContainer", "resultsContainer", "jobsQueue", "jobsTable")
    }

    def names(type_: str) -> set[str]:
        return {resolve(storage, config(r)["name"]) for r in resources(storage, type_).values()}

    containers = names("Microsoft.Storage/storageAccounts/blobServices/containers")
    queues = names("Microsoft.Storage/storageAccounts/queueServices/queues")
    tables = names("Microsoft.Storage/storageAccounts/tableServices/tables")
    assert containers == {"uploads", "results"}
    assert queues == {"restore-jobs", "restore-jobs-poison"}
    assert tables == {"jobs", "ratelimits", "apikeys"}  # apikeys/ratelimits: RATE_LIMIT_TABLE, API_KEYS_TABLE defaults
    # main.bicep passes the same names (and the app settings below use them).
    assert main_values == {
        "uploadsContainer": "uploads",
        "resultsContainer": "results",
        "jobsQueue": "restore-jobs",
        "jobsTable": "jobs",
    }
    for container in resources(storage, "Microsoft.Storage/storageAccounts/blobServices/containers").values():
        assert config(container)["properties"]["publicAccess"] == "None"


def test_lifecycle_rules_delete_uploads_and_results_after_retention(bicep):
    storage = bicep.module("storage")
    (policy,) = resources(storage, "Microsoft.Storage/storageAccounts/managementPolicies").values()
    covered = set()
    for rule in config(policy)["properties"]["policy"]["rules"]:
        assert rule["enabled"] is True and rule["type"] == "Lifecycle"
        definition = rule["definition"]
        assert "blockBlob" in definition["filters"]["blobTypes"]
        days = definition["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
        assert days == "retentionDays", "lifecycle must follow the retentionDays parameter"
        covered |= {resolve(storage, prefix) for prefix in definition["filters"]["prefixMatch"]}
    assert {"uploads/", "results/"} <= covered
    min_days = next(
        d["argument"] for d in storage["parameters"]["retentionDays"]["decorators"] if d["type"] == "min_value"
    )
    assert min_days >= 1
    # main.bicep hands its retentionDays through.
    assert config(bicep.main["modules"]["storage"])["params"]["retentionDays"] == "retentionDays"


def test_data_account_allows_no_cross_origin_reads(bicep):
    # Browsers never talk to the data account: results are streamed through the API.
    storage = bicep.module("storage")
    (service,) = resources(storage, "Microsoft.Storage/storageAccounts/blobServices").values()
    assert config(service)["properties"]["cors"]["corsRules"] == []


# --- identity and roles ------------------------------------------------------------------


def _assignments(tree: dict) -> list[dict]:
    return [config(r) for r in resources(tree, "Microsoft.Authorization/roleAssignments").values()]


def test_app_identity_has_the_data_roles_and_acrpull(bicep):
    identity = bicep.module("identity")
    roles = identity["variables"]["roles"]["value"]
    role_of_key = {key: guid for key, guid in roles.items()}
    granted: dict[str, set[str]] = {}
    for assignment in _assignments(identity):
        principal = assignment["properties"]["principalId"]
        # 'principalId' (the deployer parameter) or '<identity>.properties.principalId'.
        who = principal if isinstance(principal, str) else principal["operator"]["operands"]["operand_1"]
        role_keys = set(leaves(assignment["properties"]["roleDefinitionId"])) & set(role_of_key)
        assert len(role_keys) == 1, f"unclear role in {assignment}"
        assert who in {"appIdentity", "deployIdentity", "principalId"}, who
        granted.setdefault(who, set()).add(role_of_key[role_keys.pop()])
    app = granted["appIdentity"]
    assert ROLE_IDS["Storage Blob Data Owner"] in app or ROLE_IDS["Storage Blob Data Contributor"] in app
    assert ROLE_IDS["Storage Queue Data Contributor"] in app
    assert ROLE_IDS["Storage Table Data Contributor"] in app
    assert ROLE_IDS["AcrPull"] in app
    assert ROLE_IDS["Monitoring Metrics Publisher"] in app, "Entra ID telemetry ingestion needs it"
    # Data plane only: no Owner/Contributor/Storage Account Contributor for the running app.
    app_roles = ("Storage Blob Data Owner", "Storage Blob Data Contributor", "Storage Queue Data Contributor",
                 "Storage Table Data Contributor", "AcrPull", "Monitoring Metrics Publisher")
    assert app <= {ROLE_IDS[name] for name in app_roles}


def _scope(assignment: dict) -> str:
    """'storage', 'registry', ... or 'webStorage::blobService::webContainer' for a nested accessor."""
    scope = assignment["scope"]
    parts = []
    while isinstance(scope, dict):
        operands = scope["operator"]["operands"]
        parts.append(operands["operand_1"])
        scope = operands["operand_2"]
    return "::".join([*parts, scope])


def test_role_assignments_are_scoped_to_our_resources(bicep):
    identity = bicep.module("identity")
    allowed = {"storage", "webStorage", "webStorage::blobService::webContainer", "registry", "appInsights"}
    for assignment in _assignments(identity):
        assert _scope(assignment) in allowed, _scope(assignment)
    for name in ("storage", "webStorage", "registry", "appInsights"):
        assert name in {n for n, r in identity["resources"].items() if r.get("existing")}


def test_registry_has_no_admin_user_or_anonymous_pull(bicep):
    (registry,) = resources(bicep.module("registry"), "Microsoft.ContainerRegistry/registries").values()
    props = config(registry)["properties"]
    assert props["adminUserEnabled"] is False
    assert props["anonymousPullEnabled"] is False


# --- no secrets in settings ----------------------------------------------------------------


def test_no_account_keys_or_list_keys_anywhere():
    for path in bicep_files():
        text = path.read_text()
        assert "listKeys" not in text, f"{path.name} calls listKeys()"
        assert "AccountKey" not in text, f"{path.name} mentions AccountKey"
        assert "primarySharedKey" not in text, f"{path.name} uses a workspace shared key"
        assert "passwordSecretRef" not in text, f"{path.name} uses a registry password"


def _app_settings(bicep) -> dict[str, object]:
    return {item["name"]: item["value"] for item in bicep.main["variables"]["appSettings"]["value"]}


def test_app_settings_use_the_identity_based_storage_connection(bicep):
    settings = _app_settings(bicep)
    assert "AzureWebJobsStorage" not in settings, "the connection-string form must not be used"
    for suffix in ("accountName", "blobServiceUri", "queueServiceUri", "tableServiceUri", "clientId"):
        assert f"AzureWebJobsStorage__{suffix}" in settings
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    for name, value in settings.items():
        assert "AccountKey" not in " ".join(map(str, leaves(value))), name


def test_app_settings_match_the_service_contract(bicep):
    settings = _app_settings(bicep)
    assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert settings["FUNCTIONS_EXTENSION_VERSION"] == "~4"
    assert settings["STANDIN_WEIGHTS"] == "false"
    assert settings["MODELS_DIR"] == "/opt/models" and "WEIGHTS_DIR" not in settings
    assert settings["JOBS_QUEUE"] == "jobsQueue" and resolve(bicep.main, "jobsQueue") == "restore-jobs"
    assert settings["CORS_ORIGINS"] == "siteOrigin", "CORS must be the static website's origin"
    for name in ("JOBS_TABLE", "UPLOADS_CONTAINER", "RESULTS_CONTAINER", "TRUST_FORWARDED_FOR", "ENGINE_THREADS",
                 "MAX_FACES", "JOB_RETENTION_HOURS", "MAX_UPLOAD_BYTES", "MAX_PIXELS", "MAX_QUEUE_DEPTH"):
        assert name in settings, name
    assert "TORCH_THREADS" not in settings, "renamed ENGINE_THREADS (the app keeps TORCH_THREADS as an alias)"


def test_hosting_modules_add_no_secret_settings(bicep):
    for module in ("hosting-containerapps", "hosting-premium"):
        text = (INFRA / "modules" / f"{module}.bicep").read_text()
        assert "AzureWebJobsStorage'" not in text and 'AzureWebJobsStorage"' not in text
        assert not re.search(r"connectionstring\s*=", text, re.IGNORECASE)
        tree = bicep.module(module)
        # The telemetry connection string is read from the component in the module itself: it
        # is neither a parameter (so no caller holds it) nor anyone's output.
        assert "appInsightsConnectionString" not in tree["parameters"]
        assert resources(tree, "Microsoft.Insights/components", existing=True), module
        assert "properties.ConnectionString" in text.replace("appInsights.properties", "properties"), module


# --- hosting ---------------------------------------------------------------------------------


def test_container_app_scales_to_zero_on_the_queue_with_the_identity(bicep):
    tree = bicep.module("hosting-containerapps")
    (app,) = resources(tree, "Microsoft.App/containerApps").values()
    body = config(app)
    assert body["identity"]["type"] == "UserAssigned"
    scale = body["properties"]["template"]["scale"]
    assert scale["minReplicas"] == "minReplicas"
    assert tree["parameters"]["minReplicas"]["default"] == 0
    assert bicep.main["parameters"]["minReplicas"]["default"] == 0, "scale to zero by default"
    assert scale["maxReplicas"] == "maxReplicas"
    queue_rules = [r["custom"] for r in scale["rules"] if r.get("custom", {}).get("type") == "azure-queue"]
    assert queue_rules, "no azure-queue scale rule"
    (rule,) = queue_rules
    assert rule["identity"] == "appIdentityId" and "auth" not in rule
    metadata = rule["metadata"]
    assert metadata["accountName"] == "storageAccountName" and metadata["queueName"] == "jobsQueue"
    assert metadata["queueLength"] == "1", "one job per replica"
    registry = body["properties"]["configuration"]["registries"][0]
    assert registry["identity"] == "appIdentityId"
    container = body["properties"]["template"]["containers"][0]
    assert container["image"] == "image"
    assert body["properties"]["configuration"]["ingress"]["allowInsecure"] is False
    # main.bicep passes the CPU/memory parameters (defaults 2.0 / 4Gi) and maxInstances through.
    params = config(bicep.main["modules"]["containerApps"])["params"]
    assert params["cpu"] == "cpu" and params["memory"] == "memory" and params["maxReplicas"] == "maxInstances"
    assert params["minReplicas"] == "minReplicas"


def test_container_app_probes_stay_within_arm_limits(bicep):
    (app,) = resources(bicep.module("hosting-containerapps"), "Microsoft.App/containerApps").values()
    template = config(app)["properties"]["template"]
    assert 0 < template["terminationGracePeriodSeconds"] <= 600
    probes = template["containers"][0]["probes"]
    assert {p["type"] for p in probes} >= {"Readiness", "Startup"}
    # The limits as Azure's API definition documents them (the ContainerAppProbe model of
    # azure-mgmt-appcontainers: "Minimum value is 1. Maximum value is 10."), not copied by hand.
    from azure.mgmt.appcontainers.models import ContainerAppProbe

    def documented_range(attr: str) -> tuple[int, int]:
        block = re.search(rf":ivar {attr}:(.*?)(?=:vartype)", ContainerAppProbe.__doc__, re.S).group(1)
        low, high = re.search(r"Minimum\s+value\s+is\s+(\d+)\.\s+Maximum\s+value\s+is\s+(\d+)", block).groups()
        return int(low), int(high)

    for probe in probes:
        for key, attr in (("failureThreshold", "failure_threshold"), ("initialDelaySeconds", "initial_delay_seconds"),
                          ("periodSeconds", "period_seconds"), ("timeoutSeconds", "timeout_seconds")):
            low, high = documented_range(attr)
            assert low <= probe[key] <= high, (probe["type"], key, probe[key], (low, high))
    readiness = next(p for p in probes if p["type"] == "Readiness")
    assert readiness["httpGet"]["path"] == "/api/health"


def test_container_apps_environment_needs_no_workspace_key(bicep):
    tree = bicep.module("hosting-containerapps")
    (environment,) = resources(tree, "Microsoft.App/managedEnvironments").values()
    assert config(environment)["properties"]["appLogsConfiguration"]["destination"] == "azure-monitor"
    assert resources(tree, "Microsoft.Insights/diagnosticSettings")


def test_premium_plan_is_elastic_with_one_always_ready_instance(bicep):
    tree = bicep.module("hosting-premium")
    (plan,) = resources(tree, "Microsoft.Web/serverfarms").values()
    plan = config(plan)
    assert plan["sku"]["tier"] == "ElasticPremium"
    assert resolve(tree, plan["sku"]["name"]) == "EP1"
    assert plan["properties"]["maximumElasticWorkerCount"] == "maxInstances"
    (site,) = resources(tree, "Microsoft.Web/sites").values()
    site = config(site)
    assert "container" in site["kind"] and "functionapp" in site["kind"]
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["httpsOnly"] is True
    site_config = site["properties"]["siteConfig"]
    assert site_config["minimumElasticInstanceCount"] == 1
    assert site_config["functionAppScaleLimit"] == "maxInstances"
    assert site_config["acrUseManagedIdentityCreds"] is True
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["ftpsState"] == "Disabled"


def test_static_website_is_enabled_by_a_deployment_script(bicep):
    tree = bicep.module("static-website")
    (script,) = resources(tree, "Microsoft.Resources/deploymentScripts").values()
    body = config(script)
    assert body["kind"] == "AzureCLI"
    assert body["identity"]["type"] == "UserAssigned"
    command = body["properties"]["scriptContent"]
    for part in ("az storage blob service-properties update", "--static-website", "--auth-mode login",
                 "--index-document index.html"):
        assert part in command
    assert body["properties"]["cleanupPreference"] == "Always"
