"""Every resource payload in infra/ against Azure's own REST API models (the azure-mgmt-* packages),
offline: each property name and its nesting exists for that resource type, no read-only property is
set, literal values have the JSON type the API wants, and literal enum values are allowed ones.

The models are Azure's REST API definitions as generated into its Python SDK (tests/infra/api_models.py
says how they are read). Where a package lacks the template's API version, the nearest one it has is
used: the test id shows the version checked, and a NearestApiVersion warning says so in the summary.
"""

from __future__ import annotations

import copy
import warnings

import pytest
from api_models import MODELS, TEMPLATE_ONLY, Walk, node_for, schema_for, symbols_of
from infra_helpers import INFRA, bicep_files, config, parse_bicep

from tests.conftest import NearestApiVersion


def _resources() -> list[tuple[str, str, str, str, dict, set[str]]]:
    found = []
    for path in bicep_files():
        tree = parse_bicep(path)
        symbols = symbols_of(tree)
        for symbol, resource in tree.get("resources", {}).items():
            if resource.get("existing"):
                continue
            found.append((path.relative_to(INFRA).as_posix(), symbol, resource["type"], resource["api_version"],
                          config(resource), symbols))
    return found


RESOURCES = _resources()


def _id(entry) -> str:
    where, symbol, type_, version, *_ = entry
    checked = schema_for(type_, version).version
    return f"{where}:{symbol}:{type_}@{version}" + ("" if checked == version else f"(checked@{checked})")


def test_every_resource_type_in_infra_has_a_model():
    types = {entry[2] for entry in RESOURCES}
    assert len(RESOURCES) >= 40, len(RESOURCES)
    assert types <= set(MODELS), f"no model mapped for {types - set(MODELS)}"


@pytest.mark.parametrize("entry", RESOURCES, ids=[_id(e) for e in RESOURCES])
def test_payload_matches_the_api_model(entry):
    where, symbol, type_, version, body, symbols = entry
    schema = schema_for(type_, version)
    if schema.note != "exact":
        warnings.warn(NearestApiVersion(f"{type_}@{version}: {schema.note}"))
    walk = Walk(symbols)
    walk.model(body, node_for(schema.model, schema.models), schema.models, "", skip=TEMPLATE_ONLY)
    assert not walk.findings, f"{where} {symbol} ({type_}@{version}, model {schema.model.__name__} at {schema.version}):\n" + \
        "\n".join(walk.findings)
    if set(body) - TEMPLATE_ONLY:
        assert walk.checked, "nothing was checked"


def test_the_checker_sees_a_misspelled_property_a_read_only_one_and_a_bad_enum():
    # The same walk on a copy of the container app with one defect each.
    (entry,) = [e for e in RESOURCES if e[2] == "Microsoft.App/containerApps"]
    where, symbol, type_, version, body, symbols = entry
    schema = schema_for(type_, version)
    node = node_for(schema.model, schema.models)

    def findings(change) -> list[str]:
        changed = copy.deepcopy(body)
        change(changed)
        walk = Walk(symbols)
        walk.model(changed, node, schema.models, "", skip=TEMPLATE_ONLY)
        return walk.findings

    assert findings(lambda b: b["properties"].update(enviromentId=b["properties"].pop("environmentId")))
    assert findings(lambda b: b["properties"]["configuration"]["ingress"].update(fqdn="x.example.com"))
    assert findings(lambda b: b["properties"]["configuration"].update(activeRevisionsMode="Several"))
    assert findings(lambda b: b["properties"]["configuration"]["ingress"].update(allowInsecure="no"))
    assert not findings(lambda b: None)
