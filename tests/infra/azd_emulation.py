"""What the Azure Developer CLI does with infra/*.parameters.json, re-done in Python from its source.

azd cannot run here, so the tests re-do the steps that turn an azd environment into the parameter
values ARM receives, each as read in Azure/azure-dev (commit ae35809f496491989273d0edefdeb70f245f399b)
and drone/envsubst (commit 179042472c46cbed86d44ecbb11a03236efbb73a), which azd uses for `${...}`:

- ``envsubst``: drone/envsubst's ``Eval`` (parse/parse.go, template.go ``lookupFunc``): only
  ``${NAME}`` and ``${NAME<op>default}`` are substituted; every default operator (``=``, ``:=``,
  ``:-``, ``-``, ``?``, ``:?``, ``+``, ``:+``) is ``toDefault`` (funcs.go): the value when it is not
  empty, else the default. ``$NAME`` without braces stays text; ``$$`` is a ``$``.
- ``provision_parameters``: ``azd provision`` (cli/azd/pkg/infra/provisioning/bicep/bicep_provider.go):
  ``loadParameters`` substitutes each parameter's JSON on its own (AZURE_PRINCIPAL_ID and
  AZURE_PRINCIPAL_TYPE come from the signed-in principal, ``evalParamEnvSubst``) and drops a value
  that ends up "" when a variable it names is unset; ``ensureParameters`` then converts with
  ``armParameterFileValue``: for a bool parameter Go's ``strconv.ParseBool``, for an int one
  ``strconv.ParseInt(s, 10, 64)``; a string that does not convert becomes nil, and the template's
  default (or a prompt, if there is none) takes its place.
- ``deploy_parameters``: ``azd deploy`` of a container-app service that has a module
  (cli/azd/pkg/project/service_target_containerapp.go ``Deploy`` -> ``compileBicep`` in
  service_target_dotnet_containerapp.go): the whole parameters file through ``envsubst.Eval`` with
  the environment, then ``json.Unmarshal``: no conversion at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# drone/envsubst: ${NAME} or ${NAME<op>default}; default operators all mean "default if empty".
_SUBST = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:=|:-|:\?|:\+|=|-|\?|\+)(?P<default>[^}]*))?\}")

# Go's strconv.ParseBool.
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_GO_INT = re.compile(r"[+-]?[0-9]+")

PRINCIPAL_ID = "AZURE_PRINCIPAL_ID"
PRINCIPAL_TYPE = "AZURE_PRINCIPAL_TYPE"


@dataclass
class Substitution:
    text: str
    names: list[str] = field(default_factory=list)
    unset: bool = False


def envsubst(text: str, lookup) -> Substitution:
    """drone/envsubst Eval with azd's mapping function; ``lookup(name)`` -> value or None (unset)."""
    result = Substitution(text="")

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name")
        result.names.append(name)
        value = lookup(name)
        if value is None:
            result.unset = True
            value = ""
        if match.group("op") is not None and value == "":
            return match.group("default")
        return value

    result.text = _SUBST.sub(replace, text)
    leftover = re.search(r"\$\{[^}]*\}", result.text)
    assert not leftover, f"substitution form not emulated: {leftover.group(0)} in {text}"
    return result


def _go_parse_bool(value: str) -> bool | None:
    return True if value in _GO_TRUE else False if value in _GO_FALSE else None


def _go_parse_int(value: str) -> int | None:
    return int(value) if _GO_INT.fullmatch(value) and -(2**63) <= int(value) < 2**63 else None


@dataclass
class Outcome:
    """What ARM gets for one parameter: ``value`` (absent: the template default applies)."""

    value: Any = None
    sent: bool = False
    note: str = ""


def provision_parameters(parameters_file: Path, declared: dict[str, dict], environment: dict[str, str],
                         principal: tuple[str, str]) -> dict[str, Outcome]:
    """``azd provision``: loadParameters + ensureParameters -> the value per parameter."""
    principal_id, principal_type = principal
    raw = json.loads(parameters_file.read_text())["parameters"]
    outcomes: dict[str, Outcome] = {}

    def lookup(name: str) -> str | None:
        if name == PRINCIPAL_ID:
            return principal_id
        if name == PRINCIPAL_TYPE:
            return principal_type
        return environment.get(name)

    for name, entry in raw.items():
        bicep_type = declared[name]["type"] if name in declared else None
        if bicep_type in ("object", "array") and isinstance(entry.get("value"), str):
            substituted = envsubst(entry["value"], lookup)
            if substituted.text == "" and substituted.unset:
                outcomes[name] = Outcome(note="omitted: unset variable")
                continue
            outcomes[name] = Outcome(value=json.loads(substituted.text), sent=True)
            continue
        substituted = envsubst(json.dumps(entry), lookup)
        value = json.loads(substituted.text).get("value")
        if value is None or (value == "" and substituted.unset):
            outcomes[name] = Outcome(note="omitted: unset variable")
            continue
        outcomes[name] = _arm_parameter_file_value(bicep_type, value, declared.get(name, {}).get("default"))
    return outcomes


def _arm_parameter_file_value(bicep_type: str | None, value: Any, default: Any) -> Outcome:
    """bicep_provider.go armParameterFileValue (nil -> the template default, or a prompt)."""
    if not isinstance(value, str):
        return Outcome(value=value, sent=True)
    if bicep_type == "bool":
        converted = _go_parse_bool(value)
        return Outcome(value=converted, sent=True) if converted is not None else Outcome(note=f"'{value}' is no Go bool: default")
    if bicep_type == "int":
        converted = _go_parse_int(value)
        return Outcome(value=converted, sent=True) if converted is not None else Outcome(note=f"'{value}' is no Go int: default")
    if bicep_type == "string":
        if value != "":
            return Outcome(value=value, sent=True)
        if isinstance(default, str) and default != value:
            return Outcome(value=value, sent=True)
        return Outcome(note="empty string: default")
    return Outcome(value=value, sent=True)


def deploy_parameters(parameters_file: Path, environment: dict[str, str]) -> dict[str, Outcome]:
    """``azd deploy`` with a service module: the whole file through envsubst, then JSON; no conversion."""
    substituted = envsubst(parameters_file.read_text(), environment.get)
    raw = json.loads(substituted.text)["parameters"]
    return {name: Outcome(value=entry.get("value"), sent="value" in entry) for name, entry in raw.items()}


def deploy_module(azure_yaml: dict, service: str, infra: Path) -> tuple[str, Path] | None:
    """service_target_containerapp.go Deploy: which Bicep azd deploys for a service, if any.

    The module is ``module:`` or else the service's name; infra/<module>.bicepparam wins, else
    infra/<module>.bicep together with infra/<module>.parameters.json; else azd only sets the image."""
    module = azure_yaml["services"][service].get("module") or service
    bicepparam, bicep, parameters = (infra / f"{module}.bicepparam", infra / f"{module}.bicep",
                                     infra / f"{module}.parameters.json")
    if bicepparam.exists():
        return "bicepparam", bicepparam
    if bicep.exists() and parameters.exists():
        return "parameters.json", parameters
    return None


JSON_TYPES = {"string": str, "int": int, "bool": bool, "object": dict, "array": list}


def json_type_matches(bicep_type: str, value: Any) -> bool:
    if bicep_type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, JSON_TYPES[bicep_type])
