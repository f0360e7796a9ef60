"""Every role definition ID in infra/ is a published Azure built-in role, and the one its name says.

A wrong ID is not caught by Bicep, nor by checkov: ARM answers RoleDefinitionDoesNotExist (or,
worse, grants another role) at deploy time. The expected IDs come from Microsoft's "Azure
built-in roles" reference, copied into tests/infra/reference/builtin-roles.tsv (which names its
source), never from the templates; where the project's shared list of the roles it may use
(../shared/azure/builtin-roles.tsv beside the repository) exists, the two lists must agree.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from infra_helpers import INFRA, REFERENCE, REPO, bicep_files, config, parse_bicep, resources, role_table

PUBLISHED = role_table(REFERENCE / "builtin-roles.tsv")
SHARED = REPO.parent / "shared" / "azure" / "builtin-roles.tsv"
GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def _key(name: str) -> str:
    """'storageTableDataContributor', 'acrPullRoleId', 'Storage Table Data Contributor' -> one spelling."""
    name = re.sub(r"(RoleId|RoleDefinitionId|Role|Id)$", "", name.strip())
    return re.sub(r"[^a-z0-9]", "", name.lower())


BY_KEY = {_key(name): (name, role_id) for name, role_id in PUBLISHED.items()}


def _published(claimed: str) -> tuple[str, str]:
    assert _key(claimed) in BY_KEY, f"'{claimed}' names no role in the published table ({REFERENCE / 'builtin-roles.tsv'})"
    return BY_KEY[_key(claimed)]


def _guid_literals() -> list[tuple[str, int, str, str]]:
    """(file, line, guid, the name the line gives it: object key, variable name or // comment)."""
    found = []
    for path in bicep_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for guid in re.findall(rf"'({GUID})'", line):
                named = (re.search(rf"(\w+)\s*:\s*'{guid}'", line) or re.search(rf"var\s+(\w+)\s*=\s*'{guid}'", line)
                         or re.search(r"//\s*(.+?)\s*$", line))
                assert named, f"{path.name}:{number}: {guid} carries no name (key, variable or // comment)"
                found.append((path.relative_to(INFRA).as_posix(), number, guid.lower(), named.group(1)))
    return found


def _role_of(tree: dict, text: str, expression) -> tuple[str, str]:
    """(claimed name, guid) of a roleDefinitionId expression:
    subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <roles.key | variable | 'guid'>)."""
    function = expression["function"]
    assert function["type"] == "subscription_resource_id", f"roleDefinitionId built in a way this test cannot read: {expression}"
    parameters = function["parameters"]
    assert parameters["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    name = parameters["resource_name_1"]
    variables = tree.get("variables", {})
    if isinstance(name, dict) and name.get("operator", {}).get("type") == "property_accessor":
        operands = name["operator"]["operands"]
        return operands["operand_2"], variables[operands["operand_1"]]["value"][operands["operand_2"]].lower()
    if isinstance(name, str) and name in variables:
        return name, variables[name]["value"].lower()
    if isinstance(name, str) and re.fullmatch(GUID, name):
        comment = re.search(rf"'{name}'.*//\s*(.+?)\s*$", text, re.MULTILINE)
        assert comment, f"{name}: a literal role ID needs a // <role name> comment"
        return comment.group(1), name.lower()
    raise AssertionError(f"roleDefinitionId this test cannot read: {expression}")


def _assignments() -> list[tuple[str, str, str, str]]:
    """(file, assignment, claimed role name, guid) for every role assignment in infra/."""
    found = []
    for path in bicep_files():
        tree, text = parse_bicep(path), path.read_text()
        for symbol, resource in resources(tree, "Microsoft.Authorization/roleAssignments").items():
            claimed, guid = _role_of(tree, text, config(resource)["properties"]["roleDefinitionId"])
            found.append((path.relative_to(INFRA).as_posix(), symbol, claimed, guid))
    return found


ASSIGNMENTS = _assignments()


def test_the_templates_assign_roles():
    # The tests below would pass vacuously if the parser found nothing.
    assert len(ASSIGNMENTS) >= 5, ASSIGNMENTS


@pytest.mark.parametrize("where, symbol, claimed, guid", ASSIGNMENTS, ids=lambda v: v if isinstance(v, str) and "-" not in v else "")
def test_every_role_assignment_is_the_published_role_it_names(where, symbol, claimed, guid):
    name, published = _published(claimed)
    assert guid == published, (
        f"{where} {symbol}: '{claimed}' is {guid} in the template, but the published ID of {name} is {published}"
        + (f" ({guid} is {[n for n, i in PUBLISHED.items() if i == guid][0]})" if guid in PUBLISHED.values() else
           " (no published built-in role has that ID: ARM would answer RoleDefinitionDoesNotExist)")
    )


def test_every_role_id_written_in_infra_is_the_published_role_it_names():
    literals = _guid_literals()
    assert literals, "no role IDs found in infra/"
    for where, line, guid, claimed in literals:
        name, published = _published(claimed)
        assert guid == published, f"{where}:{line}: {claimed} = {guid}, published {name} = {published}"


def test_the_reference_table_agrees_with_the_projects_shared_list():
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} is not beside this checkout (it is in the project's workspace and in CI)")
    shared = role_table(SHARED)
    common = set(shared) & set(PUBLISHED)
    assert len(common) >= 10, "the two lists hardly overlap: is one of them the wrong file?"
    for name in sorted(common):
        assert shared[name] == PUBLISHED[name], f"{name}: shared list {shared[name]}, reference copy {PUBLISHED[name]}"
    # The shared list is the set of roles this project may use.
    used = {BY_KEY[_key(claimed)][0] for _, _, claimed, _ in ASSIGNMENTS}
    assert used <= set(shared), f"roles outside the project's list: {used - set(shared)}"


def test_reference_table_is_well_formed():
    assert len(PUBLISHED) == len(set(PUBLISHED.values())), "two names with one ID"
    for name, role_id in PUBLISHED.items():
        assert re.fullmatch(GUID, role_id), name
    source = Path(REFERENCE / "builtin-roles.tsv").read_text()
    assert "learn.microsoft.com/azure/role-based-access-control/built-in-roles" in source
