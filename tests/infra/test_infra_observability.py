"""Alerts, the workbook, the workspace cap, storage diagnostics and the telemetry settings.

The KQL is checked against the telemetry contract the app emits (metric names and their
dimensions in customMetrics): a misspelt metric name would make an alert that never fires and a
workbook tile that stays empty, and no deployment here could show it.
"""

from __future__ import annotations

import json
import re

import pytest
from infra_helpers import INFRA, REFERENCE, REPO, config, resolve, resources

# The app's OpenTelemetry metrics (the contract) and their dimensions.
CONTRACT = {
    "restore.jobs": {"outcome", "error_code"},
    "restore.poisoned_messages": set(),
    "restore.stage.duration": {"stage"},
    "restore.queue.wait": set(),
    "restore.job.duration": set(),
    "restore.faces": set(),
    "restore.refusals": {"http.status_code", "error_code"},
    "restore.queue.depth": set(),
}
CUSTOM_METRICS_COLUMNS = {"name", "value", "valueCount", "valueSum", "valueMin", "valueMax", "timestamp", "customDimensions"}


@pytest.fixture(scope="module")
def obs(bicep) -> dict:
    return bicep.module("observability")


def _query(tree: dict, value) -> str:
    """A query given as a variable name (multi-line string) or inline."""
    return resolve(tree, value) if isinstance(value, str) else value


def _all_queries(tree: dict) -> dict[str, str]:
    """The queries on the app's telemetry (customMetrics); the platform's logs are checked below."""
    queries = {name: v["value"] for name, v in tree["variables"].items() if name.endswith("Query")}
    platform = {name for name, query in queries.items() if query.lstrip().startswith("ContainerAppSystemLogs")}
    assert platform == {"replicaFailuresQuery"}, platform
    return {name: query for name, query in queries.items() if name not in platform}


def _metric_names(query: str) -> set[str]:
    return set(re.findall(r'"(restore\.[a-z_.]+)"', query))


def _dimensions(query: str) -> set[str]:
    return set(re.findall(r'customDimensions\["([^"]+)"\]', query))


def test_every_query_uses_only_contract_metrics_and_dimensions(obs):
    queries = _all_queries(obs)
    assert len(queries) >= 8
    for name, query in queries.items():
        assert query.lstrip().startswith("customMetrics"), name
        metrics = _metric_names(query)
        assert metrics, f"{name} names no metric"
        assert metrics <= set(CONTRACT), f"{name}: {metrics - set(CONTRACT)} is not a metric the app emits"
        allowed = set().union(*(CONTRACT[m] for m in metrics))
        assert _dimensions(query) <= allowed, f"{name}: dimensions {_dimensions(query) - allowed} not on {metrics}"
        for column in re.findall(r"\b(value\w*)\b", query):
            assert column in CUSTOM_METRICS_COLUMNS, f"{name}: no column {column} in customMetrics"


def test_action_group_mails_the_alert_email_parameter(obs, bicep):
    (group,) = resources(obs, "Microsoft.Insights/actionGroups").values()
    body = config(group)
    assert group["config"]["condition"] == "notify"
    assert obs["variables"]["notify"]["value"] == {"operator": {"type": "not", "operands": {"bool_value": {
        "function": {"type": "empty", "parameters": {"item_to_test": "alertEmail"}}}}}}
    (receiver,) = body["properties"]["emailReceivers"]
    assert receiver["emailAddress"] == "alertEmail"
    params = config(bicep.main["modules"]["observability"])["params"]
    assert params["alertEmail"] == "alertEmail" and "alertEmail" in bicep.main["parameters"]


def _log_alert(obs, name: str) -> tuple[dict, str]:
    rules = {config(r)["name"]: config(r) for r in resources(obs, "Microsoft.Insights/scheduledQueryRules").values()}
    rule = rules[name]
    (criterion,) = rule["properties"]["criteria"]["allOf"]
    query = _query(obs, criterion["query"])
    assert rule["properties"]["scopes"] == ["appInsightsId"], name
    assert rule["properties"]["actions"] == "logAlertActions", name
    assert criterion["metricMeasureColumn"] in query, f"{name}: measures a column its query does not make"
    return criterion, query


def test_failed_jobs_alert(obs):
    criterion, query = _log_alert(obs, "face-restore-failed-jobs")
    assert _metric_names(query) == {"restore.jobs"}
    assert 'tostring(customDimensions["outcome"]) == "failed"' in query
    assert criterion["threshold"] == "failedJobsThreshold"


def test_poison_messages_alert(obs):
    criterion, query = _log_alert(obs, "face-restore-poison-messages")
    assert _metric_names(query) == {"restore.poisoned_messages"}
    assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0


def test_queue_wait_alert(obs, bicep):
    criterion, query = _log_alert(obs, "face-restore-queue-wait")
    assert _metric_names(query) == {"restore.queue.wait"}
    assert "max(valueMax)" in query
    assert criterion["threshold"] == "queueWaitThresholdSeconds"
    params = config(bicep.main["modules"]["observability"])["params"]
    assert params["queueWaitThresholdSeconds"] == "queueWaitAlertSeconds"


def _metric_alert(obs, name: str) -> tuple[dict, dict]:
    alerts = {config(r)["name"]: (r, config(r)) for r in resources(obs, "Microsoft.Insights/metricAlerts").values()}
    resource, body = alerts[name]
    assert resource["config"]["condition"] == "hasApp", f"{name} needs the app to exist"
    assert body["properties"]["scopes"] == ["appResourceId"]
    (criterion,) = body["properties"]["criteria"]["allOf"]
    operands = criterion["operator"]["operands"]  # (hosting == 'containerapps') ? {...} : {...}
    condition = operands["condition"]["operator"]
    assert condition["type"] == "equals" and condition["operands"] == {"operand_1": "hosting", "operand_2": "containerapps"}
    return operands["true_value"], operands["false_value"]


def test_5xx_alert_uses_the_platform_request_metric(obs):
    aca, premium = _metric_alert(obs, "face-restore-5xx")
    assert aca["metricNamespace"] == "Microsoft.App/containerApps" and aca["metricName"] == "Requests"
    (dimension,) = aca["dimensions"]
    assert dimension["name"] == "statusCodeCategory" and dimension["values"] == ["5xx"]
    assert premium["metricNamespace"] == "Microsoft.Web/sites" and premium["metricName"] == "Http5xx"


# (namespace, metric) -> (aggregations, dimensions), from Azure Monitor's supported-metrics reference.
PUBLISHED_METRICS = {
    (namespace, metric): (set(aggregations.split(",")), set(dimensions.split(",")))
    for namespace, metric, aggregations, dimensions in (
        line.split("\t") for line in (REFERENCE / "platform-metrics.tsv").read_text().splitlines()
        if line and not line.startswith("#"))
}


def _criteria(value) -> list[dict]:
    """Static criteria, through the hosting conditional."""
    if isinstance(value.get("operator"), dict):  # a criterion's own "operator" is a string
        operands = value["operator"]["operands"]
        return _criteria(operands["true_value"]) + _criteria(operands["false_value"])
    return [value]


def test_metric_alerts_use_published_metrics_dimensions_and_aggregations(obs):
    seen = 0
    for resource in resources(obs, "Microsoft.Insights/metricAlerts").values():
        criteria = config(resource)["properties"]["criteria"]
        for criterion in [c for item in criteria.get("allOf", []) for c in _criteria(item)]:
            key = (criterion["metricNamespace"], criterion["metricName"])
            assert key in PUBLISHED_METRICS, f"{key} is not a published platform metric"
            aggregations, dimensions = PUBLISHED_METRICS[key]
            assert criterion["timeAggregation"] in aggregations, (key, criterion["timeAggregation"])
            assert {d["name"] for d in criterion.get("dimensions", [])} <= dimensions, key
            seen += 1
    assert seen >= 3


def test_no_alert_watches_a_cumulative_restart_count(obs):
    # Container Apps' RestartCount is a running total per replica ("Replica Restart Count is the
    # aggregate restart count", learn.microsoft.com/azure/container-apps/metrics;
    # microsoft/azure-container-apps #467, #1384): an alert on it never clears.
    for resource in resources(obs, "Microsoft.Insights/metricAlerts").values():
        assert "RestartCount" not in json.dumps(config(resource)), config(resource)["name"]


def test_replica_failures_are_counted_within_the_window_from_system_logs(obs, bicep):
    rules = {config(r)["name"]: (r, config(r)) for r in resources(obs, "Microsoft.Insights/scheduledQueryRules").values()}
    resource, rule = rules["face-restore-replica-failures"]
    props = rule["properties"]
    assert props["scopes"] == ["workspaceId"], "system logs live in the workspace, not in App Insights"
    assert props["autoMitigate"] is True and props["windowSize"] == "window"
    (criterion,) = props["criteria"]["allOf"]
    query = obs["variables"]["replicaFailuresQuery"]["value"]
    # Events in the window (count()), not a gauge: no events in a window -> 0 -> the alert clears.
    assert re.search(r"\| summarize failures = count\(\)\s*$", query)
    assert criterion["metricMeasureColumn"] == "failures" and criterion["operator"] == "GreaterThan"
    assert "ContainerTerminated" not in query, "every scale-in terminates replicas"
    for reason in ("BackOff", "ImagePullBackOff", "OOMKilled"):
        assert reason in query
    # Scoped to this app, and only where the hosting has these logs.
    assert "{app}" in query and json.dumps(criterion["query"]).count("appName") == 1
    assert json.dumps(resource["config"]["condition"]).count("containerapps") == 1
    # The environment's logs reach that workspace (categoryGroup allLogs).
    containerapps = bicep.module("hosting-containerapps")
    (setting,) = [config(r) for r in resources(containerapps, "Microsoft.Insights/diagnosticSettings").values()]
    assert {"categoryGroup": "allLogs", "enabled": True} in setting["properties"]["logs"]
    params = config(bicep.main["modules"]["observability"])["params"]
    assert json.dumps(params["workspaceId"]) == json.dumps(config(bicep.main["modules"]["containerApps"])["params"]["workspaceId"])


def test_premium_health_check_alert(obs):
    (resource,) = [r for r in resources(obs, "Microsoft.Insights/metricAlerts").values()
                   if config(r)["name"] == "face-restore-health-check"]
    (criterion,) = config(resource)["properties"]["criteria"]["allOf"]
    assert criterion["metricName"] == "HealthCheckStatus" and criterion["timeAggregation"] == "Average"


PUBLISHED_LOCATIONS = {line for line in (REFERENCE / "availability-test-locations.txt").read_text().splitlines()
                       if line and not line.startswith("#")}


def test_availability_test_probes_the_health_endpoint_from_outside(obs, bicep):
    (test,) = resources(obs, "Microsoft.Insights/webtests").values()
    body = config(test)
    assert body["kind"] == "standard" and body["properties"]["Kind"] == "standard"
    props = body["properties"]
    assert props["Request"]["RequestUrl"] == "${apiUrl}/api/health" and props["Request"]["HttpVerb"] == "GET"
    assert props["ValidationRules"]["ExpectedHttpStatusCode"] == 200
    assert props["Frequency"] in (300, 600, 900) and props["Timeout"] in (30, 60, 90, 120)
    locations = obs["variables"]["probeLocations"]["value"]
    assert len(locations) >= 5, "Microsoft recommends at least five locations"
    assert set(locations) <= PUBLISHED_LOCATIONS, set(locations) - PUBLISHED_LOCATIONS
    assert "hidden-link:${appInsightsId}" in json.dumps(body["tags"])
    assert test["config"]["condition"] == "probeApi"
    # main.bicep hands it the API's URL, and the switch.
    params = config(bicep.main["modules"]["observability"])["params"]
    assert "apiUrl" in json.dumps(params["apiUrl"]) and params["availabilityTest"] == "availabilityTest"


def test_api_unreachable_alert_uses_the_availability_test(obs):
    (resource,) = [r for r in resources(obs, "Microsoft.Insights/metricAlerts").values()
                   if config(r)["name"] == "face-restore-api-unreachable"]
    props = config(resource)["properties"]
    criteria = props["criteria"]
    assert criteria["'odata.type'"] == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria"
    assert criteria["componentId"] == "appInsightsId"
    assert json.dumps(criteria["webTestId"]) == json.dumps({"operator": {"type": "property_accessor", "operands": {
        "operand_1": "healthTest", "operand_2": "id"}}})
    # (locations - 2), as Microsoft's availability reference recommends.
    assert json.dumps(criteria["failedLocationCount"]).count("probeLocations") == 1
    assert props["autoMitigate"] is True and resource["config"]["condition"] == "probeApi"


def test_main_hands_the_app_to_the_metric_alerts(bicep):
    params = config(bicep.main["modules"]["observability"])["params"]
    text = json.dumps(params["appResourceId"])
    assert "deployApp" in text and "containerApps" in text and "premium" in text


def test_workbook_shows_throughput_stage_latency_failures_and_queue_depth(obs):
    (workbook,) = resources(obs, "Microsoft.Insights/workbooks").values()
    body = config(workbook)
    assert body["properties"]["sourceId"] == "appInsightsId"
    assert body["properties"]["category"] == "workbook"
    assert json.dumps(body["properties"]["serializedData"]).count("workbookContent") == 1
    panels = obs["variables"]["panels"]["value"]
    queries = {panel["title"]: _query(obs, panel["query"]) for panel in panels}
    joined = "\n".join(queries.values())
    assert 'summarize jobs = sum(valueSum) by outcome' in joined, "throughput by outcome"
    assert re.search(r'name == "restore.stage.duration"[\s\S]*by stage', joined), "latency per stage"
    assert re.search(r'"restore.jobs"[\s\S]*"failed"[\s\S]*by error_code', joined), "failures by code"
    assert '"restore.queue.depth"' in joined, "queue depth"
    # Every panel is turned into a workbook item.
    items = obs["variables"]["panelItems"]["value"]
    assert items["loop_type"]["detail"]["array_name"] == "panels"
    assert items["config"]["content"]["query"] == {"operator": {"type": "property_accessor",
                                                               "operands": {"operand_1": "panel", "operand_2": "query"}}}


def test_workspace_has_a_daily_cap(bicep):
    monitoring = bicep.module("monitoring")
    (workspace,) = resources(monitoring, "Microsoft.OperationalInsights/workspaces").values()
    assert config(workspace)["properties"]["workspaceCapping"]["dailyQuotaGb"] == "dailyCapGb"
    assert config(bicep.main["modules"]["monitoring"])["params"]["dailyCapGb"] == "logDailyCapGb"


def test_storage_sends_logs_and_metrics_to_the_workspace(bicep):
    storage = bicep.module("storage")
    settings = [config(r) for r in resources(storage, "Microsoft.Insights/diagnosticSettings").values()]
    scopes = {s["scope"] for s in settings}
    assert scopes == {"account", "blobService", "queueService", "tableService"}
    for setting in settings:
        assert setting["properties"]["workspaceId"] == "workspaceId"
        if setting["scope"] != "account":
            assert {"categoryGroup": "allLogs", "enabled": True} in setting["properties"]["logs"]
    passed = json.dumps(config(bicep.main["modules"]["storage"])["params"]["workspaceId"])
    assert '"monitoring"' in passed and '"workspaceId"' in passed, passed


# --- telemetry settings (the Bicep side of Entra ID ingestion) -----------------------------


def _settings(bicep) -> dict:
    return {item["name"]: item["value"] for item in bicep.main["variables"]["appSettings"]["value"]}


def test_app_insights_takes_entra_id_ingestion_only(bicep):
    (component,) = resources(bicep.module("monitoring"), "Microsoft.Insights/components").values()
    assert config(component)["properties"]["DisableLocalAuth"] is True


def test_app_authenticates_telemetry_with_its_identity(bicep):
    settings = _settings(bicep)
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identity.outputs.appIdentityClientId};Authorization=AAD"
    assert settings["OTEL_SERVICE_NAME"] == "face-restore"
    assert settings["LOG_FORMAT"] == "json"
    for module in ("hosting-containerapps", "hosting-premium"):
        assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in (INFRA / "modules" / f"{module}.bicep").read_text()


def test_worker_telemetry_switch_stays_off():
    # The app calls configure_azure_monitor itself; the worker's switch would report twice.
    for path in [*INFRA.rglob("*.bicep"), INFRA / "main.parameters.json", REPO / "azure.yaml"]:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith(("//", "#")))
        assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY" not in code, path.name


def test_functions_host_stays_in_its_default_telemetry_mode():
    # infra/README.md ("Telemetry"): the host's OpenTelemetry mode does not cover storage-queue
    # triggers and, for Python, is paired with the worker switch above; the host keeps its
    # classic Application Insights output, authenticated with the same identity.
    host = json.loads((REPO / "host.json").read_text())
    assert "telemetryMode" not in host


def test_readme_names_each_alert_with_its_failure_signal_and_delay(obs):
    readme = (INFRA / "README.md").read_text()
    section = readme.split("\n## Alerts and the workbook\n")[1].split("\n## ")[0]
    header = "| alert | the failure it catches | signal | how soon"
    assert header in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`face-restore-" in line]
    for kind in ("Microsoft.Insights/scheduledQueryRules", "Microsoft.Insights/metricAlerts"):
        for resource in resources(obs, kind).values():
            name = config(resource)["name"]
            (row,) = [line for line in rows if f"`{name}`" in line]
            assert len([cell for cell in row.split("|") if cell.strip()]) == 4, row


def test_readme_has_the_deploy_rehearsal():
    readme = (INFRA / "README.md").read_text()
    section = readme.split("\n## Before the first `azd up`: a rehearsal\n")[1].split("\n## ")[0]
    for step in ("az bicep build", "azd provision --preview", "what-if", "kedaConfiguration.version",
                 "az monitor app-insights query", "uid=10001", "Known only after a deploy"):
        assert step in section, step
