"""Azure's REST API models, from the azure-mgmt-* packages, as a schema to walk a template's payload with.

Each resource type the templates deploy maps to the model of its PUT body in the package that
carries it. Two generations of generated models are read:

- msrest style (multi-API packages: monitor, applicationinsights, authorization, msi,
  resource-deploymentscripts): ``_attribute_map`` gives each attribute's REST key (``properties.x``
  for flattened properties, ``odata\\.type`` for a key with a dot) and type string (``[Model]``,
  ``{Model}``, ``str`` ...), ``_validation`` marks read-only ones, ``_subtype_map`` the polymorphic
  ones, and ``__init__``'s annotations name the enum of a string property.
- TypeSpec style (single-API packages: appcontainers, storage, loganalytics, containerregistry,
  web): ``rest_field(name=..., visibility=[...])`` on the class (read-only: visibility ``["read"]``),
  the attribute's annotation for its type, ``__mapping__`` and ``rest_discriminator`` for
  polymorphism.

A multi-API package is read at the template's API version, or at the nearest version it has for
that model; a single-API package at the one version it has. ``Schema.note`` says which.
"""

from __future__ import annotations

import datetime
import enum
import importlib
import inspect
import pkgutil
import re
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# Resource type -> (package, PUT-body model). Child resources are full types, as ARM names them.
MODELS: dict[str, tuple[str, str]] = {
    "Microsoft.App/containerApps": ("azure.mgmt.appcontainers", "ContainerApp"),
    "Microsoft.App/managedEnvironments": ("azure.mgmt.appcontainers", "ManagedEnvironment"),
    "Microsoft.Authorization/roleAssignments": ("azure.mgmt.authorization", "RoleAssignmentCreateParameters"),
    "Microsoft.ContainerRegistry/registries": ("azure.mgmt.containerregistry", "Registry"),
    "Microsoft.Insights/actionGroups": ("azure.mgmt.monitor", "ActionGroupResource"),
    "Microsoft.Insights/components": ("azure.mgmt.applicationinsights", "ApplicationInsightsComponent"),
    "Microsoft.Insights/diagnosticSettings": ("azure.mgmt.monitor", "DiagnosticSettingsResource"),
    "Microsoft.Insights/metricAlerts": ("azure.mgmt.monitor", "MetricAlertResource"),
    "Microsoft.Insights/scheduledQueryRules": ("azure.mgmt.monitor", "ScheduledQueryRuleResource"),
    "Microsoft.Insights/webtests": ("azure.mgmt.applicationinsights", "WebTest"),
    "Microsoft.Insights/workbooks": ("azure.mgmt.applicationinsights", "Workbook"),
    "Microsoft.ManagedIdentity/userAssignedIdentities": ("azure.mgmt.msi", "Identity"),
    "Microsoft.OperationalInsights/workspaces": ("azure.mgmt.loganalytics", "Workspace"),
    "Microsoft.Resources/deploymentScripts": ("azure.mgmt.resource.deploymentscripts", "DeploymentScript"),
    "Microsoft.Storage/storageAccounts": ("azure.mgmt.storage", "StorageAccountCreateParameters"),
    "Microsoft.Storage/storageAccounts/blobServices": ("azure.mgmt.storage", "BlobServiceProperties"),
    "Microsoft.Storage/storageAccounts/blobServices/containers": ("azure.mgmt.storage", "BlobContainer"),
    "Microsoft.Storage/storageAccounts/managementPolicies": ("azure.mgmt.storage", "ManagementPolicy"),
    "Microsoft.Storage/storageAccounts/queueServices": ("azure.mgmt.storage", "QueueServiceProperties"),
    "Microsoft.Storage/storageAccounts/queueServices/queues": ("azure.mgmt.storage", "StorageQueue"),
    "Microsoft.Storage/storageAccounts/tableServices": ("azure.mgmt.storage", "TableServiceProperties"),
    "Microsoft.Storage/storageAccounts/tableServices/tables": ("azure.mgmt.storage", "Table"),
    "Microsoft.Web/serverfarms": ("azure.mgmt.web", "AppServicePlan"),
    "Microsoft.Web/sites": ("azure.mgmt.web", "Site"),
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": ("azure.mgmt.web", "CsmPublishingCredentialsPoliciesEntity"),
}

_VERSION_MODULE = re.compile(r"v(\d{4})_(\d{2})_(\d{2})(_preview)?$")


def _version_of_module(name: str) -> str:
    year, month, day, preview = _VERSION_MODULE.fullmatch(name).groups()
    return f"{year}-{month}-{day}" + ("-preview" if preview else "")


def _date(version: str) -> datetime.date:
    return datetime.date.fromisoformat(version[:10])


def _single_api_version(package) -> str:
    source = inspect.getsource(importlib.import_module(f"{package.__name__}._configuration"))
    return re.search(r'api_version: str = kwargs\.pop\("api_version", "([^"]+)"\)', source).group(1)


@dataclass
class Schema:
    models: typing.Any  # the models module
    model: type
    version: str  # the API version the model was read at
    note: str  # "exact" or how the version was chosen


@lru_cache(maxsize=None)
def schema_for(resource_type: str, api_version: str) -> Schema:
    package_name, model_name = MODELS[resource_type]
    package = importlib.import_module(package_name)
    versions = {
        _version_of_module(info.name): info.name
        for info in pkgutil.iter_modules(package.__path__) if _VERSION_MODULE.fullmatch(info.name)
    }
    if versions:  # multi-API: the versions that have this model (found in the source: importing all is slow)
        declares = re.compile(rf"^class {model_name}\(", re.MULTILINE)
        having = [version for version, module_name in versions.items()
                  if any(declares.search(path.read_text())
                         for path in (Path(package.__path__[0]) / module_name / "models").glob("*.py"))]
        assert having, f"{package_name} has no {model_name} in any API version"
        chosen = api_version if api_version in having else min(
            having, key=lambda v: (abs((_date(v) - _date(api_version)).days), v.endswith("preview")))
        models = importlib.import_module(f"{package_name}.{versions[chosen]}.models")
        note = "exact" if chosen == api_version else \
            f"{api_version} is not in {package_name}; checked against the nearest it has, {chosen}"
        return Schema(models, getattr(models, model_name), chosen, note)
    models = importlib.import_module(f"{package_name}.models")
    version = _single_api_version(package)
    note = "exact" if version == api_version else (
        f"{api_version} is not in {package_name} (it carries {version} only); checked against {version}")
    return Schema(models, getattr(models, model_name), version, note)


# --- the schema as nodes -------------------------------------------------------------------------


@dataclass
class Leaf:
    kind: str  # str, int, float, bool, any
    enum: type | None = None


@dataclass
class ListOf:
    item: typing.Any


@dataclass
class DictOf:
    value: typing.Any


@dataclass
class Field:
    node: typing.Any
    readonly: bool = False


@dataclass
class ModelNode:
    cls: type
    models: typing.Any
    fields: dict[str, Field] = field(default_factory=dict)
    open: bool = False  # accepts keys it does not declare (msrest additional_properties)
    discriminator: str | None = None  # REST key
    subtypes: dict[str, type] = field(default_factory=dict)


_MSREST_LEAVES = {"str": "str", "int": "int", "long": "int", "float": "float", "bool": "bool", "object": "any",
                  "iso-8601": "str", "rfc-1123": "str", "duration": "str", "date": "str", "bytearray": "str",
                  "base64": "str", "unix-time": "int", "decimal": "float"}


def _is_typespec(cls: type) -> bool:
    return not hasattr(cls, "_attribute_map")


def _enum_named_in(annotation, models) -> type | None:
    for name in re.findall(r"_models\.(\w+)", str(annotation)):
        candidate = getattr(models, name, None)
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def _split_key(key: str) -> list[str]:
    return [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", key)]


def node_for(cls: type, models) -> ModelNode:
    return _typespec_node(cls, models) if _is_typespec(cls) else _msrest_node(cls, models)


def _msrest_type(type_string: str, models, enum_type=None):
    if type_string.startswith("[") and type_string.endswith("]"):
        return ListOf(_msrest_type(type_string[1:-1], models))
    if type_string.startswith("{") and type_string.endswith("}"):
        return DictOf(_msrest_type(type_string[1:-1], models))
    if type_string in _MSREST_LEAVES:
        return Leaf(_MSREST_LEAVES[type_string], enum_type)
    target = getattr(models, type_string, None)
    if isinstance(target, type) and issubclass(target, enum.Enum):
        return Leaf("str", target)
    assert isinstance(target, type), f"unknown msrest type {type_string}"
    return target  # a model class: made a node lazily (models refer to each other)


def _msrest_node(cls: type, models) -> ModelNode:
    node = ModelNode(cls, models)
    annotations = {}
    try:
        annotations = {name: p.annotation for name, p in inspect.signature(cls.__init__).parameters.items()}
    except (TypeError, ValueError):
        pass
    validation = getattr(cls, "_validation", {}) or {}
    for attr, spec in cls._attribute_map.items():
        if spec["key"] == "":
            node.open = True
            continue
        path = _split_key(spec["key"])
        target = _msrest_type(spec["type"], models, _enum_named_in(annotations.get(attr, ""), models))
        readonly = bool(validation.get(attr, {}).get("readonly"))
        holder = node
        for part in path[:-1]:  # flattened: properties.x -> a nested virtual object
            existing = holder.fields.get(part)
            if existing is None:
                existing = Field(ModelNode(cls, models))
                holder.fields[part] = existing
            holder = existing.node
        holder.fields[path[-1]] = Field(target, readonly)
    subtype_map = getattr(cls, "_subtype_map", None) or {}
    for attr, mapping in subtype_map.items():
        node.discriminator = _split_key(cls._attribute_map[attr]["key"])[-1]
        node.subtypes = {value: getattr(models, name) for value, name in mapping.items()}
    return node


def _typespec_annotation(annotation, models, namespace):
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        annotation = eval(annotation, namespace)  # noqa: S307 - the package's own annotation text
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        candidates = [_typespec_annotation(a, models, namespace) if isinstance(a, (str, typing.ForwardRef)) else a
                      for a in args if a is not type(None)]
        enums = [a for a in candidates if isinstance(a, Leaf) and a.enum is not None]
        if enums:
            return enums[0]
        if len(candidates) == 1:
            return _typespec_annotation(candidates[0], models, namespace) if not isinstance(candidates[0], Leaf) \
                else candidates[0]
        return Leaf("any")
    if origin in (list, typing.List):
        return ListOf(_typespec_annotation(args[0], models, namespace))
    if origin in (dict, typing.Dict):
        return DictOf(_typespec_annotation(args[1], models, namespace))
    if annotation in (str, datetime.datetime, datetime.timedelta, bytes):
        return Leaf("str")
    if annotation is bool:
        return Leaf("bool")
    if annotation is int:
        return Leaf("int")
    if annotation is float:
        return Leaf("float")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return Leaf("str", annotation)
    if isinstance(annotation, type) and annotation is not object:
        return annotation  # a model class
    return Leaf("any")


def _typespec_node(cls: type, models) -> ModelNode:
    node = ModelNode(cls, models)
    module = importlib.import_module(cls.__module__)
    namespace = dict(vars(module), _models=models)
    for klass in reversed(cls.__mro__):
        hints = getattr(klass, "__annotations__", {})
        for attr, value in vars(klass).items():
            if attr.startswith("_") or not hasattr(value, "_rest_name_input") or not hasattr(value, "_visibility"):
                continue
            rest_name = value._rest_name_input or attr
            readonly = value._visibility == ["read"]
            node.fields[rest_name] = Field(_typespec_annotation(hints.get(attr, typing.Any), models, namespace), readonly)
            if getattr(value, "_is_discriminator", False):
                node.discriminator = rest_name
    mapping = getattr(cls, "__mapping__", None)
    if mapping and node.discriminator:
        node.subtypes = dict(mapping)
    return node


def resolve(target, models):
    """A field's node: model classes become ModelNodes when first walked."""
    return node_for(target, models) if isinstance(target, type) else target


# --- walking a parsed template value (pycep) against the schema ----------------------------------

# Keys of a Bicep resource body that ARM never receives as such.
TEMPLATE_ONLY = {"name", "parent", "scope", "dependsOn"}


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def is_expression(value, symbols: set[str]) -> bool:
    """A value the template computes: a reference, an interpolated string, a function or operator."""
    if isinstance(value, str):
        return "${" in value or value in symbols or bool(re.fullmatch(r"\w+(\.\w+)+", value) and value.split(".")[0] in symbols)
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("function", "operator")


@dataclass
class Walk:
    symbols: set[str]
    findings: list[str] = field(default_factory=list)
    checked: int = 0  # property names checked

    def value(self, value, target, models, path: str) -> None:
        target = resolve(target, models)
        if isinstance(value, dict) and "loop_type" in value:
            if isinstance(target, ListOf):
                self.value(value["config"], target.item, models, f"{path}[for]")
            elif not (isinstance(target, Leaf) and target.kind == "any"):
                self.findings.append(f"{path}: a for-loop (an array) where the API wants {_describe(target)}")
            return
        if is_expression(value, self.symbols):
            if isinstance(value, dict):
                self._expression(value, target, models, path)
            return
        if isinstance(target, Leaf):
            self._leaf(value, target, path)
        elif isinstance(target, ListOf):
            if not isinstance(value, list):
                self.findings.append(f"{path}: {value!r} where the API wants an array")
                return
            for index, item in enumerate(value):
                self.value(item, target.item, models, f"{path}[{index}]")
        elif isinstance(target, DictOf):
            if not isinstance(value, dict):
                self.findings.append(f"{path}: {value!r} where the API wants an object (a map)")
                return
            for key, item in value.items():
                self.value(item, target.value, models, f"{path}.{_unquote(key)}")
        else:
            self.model(value, target, models, path)

    def model(self, value, node: ModelNode, models, path: str, skip: set[str] = frozenset()) -> None:
        if not isinstance(value, dict):
            self.findings.append(f"{path}: {value!r} where the API wants an object ({node.cls.__name__})")
            return
        keys = {_unquote(k): v for k, v in value.items()}
        if node.subtypes and node.discriminator in keys and isinstance(keys[node.discriminator], str) \
                and not is_expression(keys[node.discriminator], self.symbols):
            chosen = keys[node.discriminator]
            matches = {k.lower(): v for k, v in node.subtypes.items()}
            if chosen.lower() not in matches:
                self.findings.append(f"{path}.{node.discriminator}: '{chosen}' is none of {sorted(node.subtypes)}")
                return
            subtype = matches[chosen.lower()]
            if subtype is not node.cls:
                node = node_for(subtype, models)
        for key, item in keys.items():
            if key in skip:
                continue
            where = f"{path}.{key}" if path else key
            if "${" in key:
                continue
            found = node.fields.get(key)
            if found is None:
                if node.open:
                    continue
                close = [name for name in node.fields if name.lower() == key.lower()]
                self.findings.append(f"{where}: no such property in {node.cls.__name__}"
                                     + (f" (did you mean '{close[0]}'?)" if close else f"; it has {sorted(node.fields)}"))
                continue
            self.checked += 1
            if found.readonly:
                self.findings.append(f"{where}: read-only in {node.cls.__name__}; ARM ignores or refuses it")
                continue
            self.value(item, found.node, models, where)

    def _leaf(self, value, leaf: Leaf, path: str) -> None:
        kinds = {"str": str, "int": int, "float": (int, float), "bool": bool}
        if leaf.kind == "any":
            return
        expected = kinds[leaf.kind]
        if isinstance(value, bool) and leaf.kind != "bool" or not isinstance(value, expected):
            self.findings.append(f"{path}: {value!r} ({type(value).__name__}) where the API wants {leaf.kind}")
            return
        if leaf.enum is not None and isinstance(value, str):
            allowed = [member.value for member in leaf.enum]
            if value.lower() not in {str(a).lower() for a in allowed}:
                self.findings.append(f"{path}: '{value}' is not a {leaf.enum.__name__} value {allowed}")

    def _expression(self, value: dict, target, models, path: str) -> None:
        if "operator" in value and value["operator"]["type"] == "conditional":
            operands = value["operator"]["operands"]
            for branch in ("true_value", "false_value"):
                self.value(operands[branch], target, models, f"{path}<{branch.split('_')[0]}>")
        elif "function" in value and value["function"]["type"] in ("union", "concat"):
            for argument in value["function"]["parameters"].values():
                if isinstance(argument, (dict, list)) and not is_expression(argument, self.symbols):
                    self.value(argument, target, models, f"{path}<{value['function']['type']}>")


def _describe(target) -> str:
    if isinstance(target, ModelNode):
        return f"an object ({target.cls.__name__})"
    if isinstance(target, Leaf):
        return target.kind
    return type(target).__name__


def symbols_of(tree: dict) -> set[str]:
    """Names a bare word can refer to in one template (pycep gives references as plain strings)."""
    names = set()
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        names |= set(tree.get(section, {}))

    def loops(node):
        if isinstance(node, dict):
            if "loop_type" in node:
                detail = node["loop_type"].get("detail", {})
                names.update(v for k, v in detail.items() if k.endswith("_name") and k != "array_name" and isinstance(v, str))
            for child in node.values():
                loops(child)
        elif isinstance(node, list):
            for child in node:
                loops(child)

    loops(tree)
    return names
