"""The RerankerService CRD, generated from the typed models (as kubebuilder does from Go types).

`spec.RerankerSpec` and `status_model.RerankerServiceStatus` carry every field's type,
description (their docstrings), default, enum, bound and CEL rule; `build_crd()` turns them
into a structural OpenAPI v3 schema. `make manifests` writes the result to
`crd/rerankerservices.yaml`, which the charts and manifests/ copy; nobody edits it by hand.

Pydantic's JSON Schema differs from a CRD's structural schema in a few ways, translated here:
`$ref`s are inlined, `X | None` becomes `nullable` (spec scalars only: an absent object or
enum is simply unset), `int | str` becomes `x-kubernetes-int-or-string`, `dict[str, Any]`
keeps unknown fields, numeric exclusive bounds take OpenAPI 3.0's boolean form, and defaults
come from the models themselves (`default_factory` included; a nested object defaults to `{}`
so the API server fills in its own fields' defaults).
"""

from __future__ import annotations

import copy
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from kuberank_contract import LABEL_NAME, OPERATOR_NAME
from kuberank_operator import API_GROUP, API_VERSION, KIND, PLURAL
from kuberank_operator.spec import RerankerSpec
from kuberank_operator.status_model import RerankerServiceStatus

Schema = dict[str, Any]

SHORT_NAMES = ["rrs"]
CATEGORIES = ["kuberank"]
READY = '.status.conditions[?(@.type=="Ready")]'
PRINTER_COLUMNS: list[Schema] = [
    {
        "name": "Model",
        "type": "string",
        "jsonPath": ".spec.model.name",
        "description": "The model served.",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": f"{READY}.status",
        "description": "Whether at least the wanted number of replicas answer requests.",
    },
    {
        "name": "Replicas",
        "type": "string",
        "jsonPath": ".status.replicas",
        "description": "Replicas running the server.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": f"{READY}.reason",
        "description": "Why the service is or is not ready, in one word.",
    },
    {
        "name": "Endpoint",
        "type": "string",
        "jsonPath": ".status.endpoint",
        "description": "In-cluster URL of the rerank API.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Message",
        "type": "string",
        "jsonPath": f"{READY}.message",
        "description": "What happened and what to do about it (kubectl get -o wide).",
        "priority": 1,
    },
]

# Keys of pydantic's JSON Schema kept as they are (after the translations below).
_KEPT = ("enum", "minimum", "maximum", "minLength", "maxLength", "pattern", "minItems",
         "maxItems", "format")  # fmt: skip


def build_crd() -> Schema:
    """The whole CustomResourceDefinition object."""
    root: Schema = {
        "type": "object",
        "description": (
            "RerankerService serves a text reranking model behind an authenticated HTTP API, "
            "on GPU (or CPU) pods that are autoscaled, monitored and protected from disruption."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation "
                "of an object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource this "
                "object represents.",
            },
            "metadata": {"type": "object"},
            "spec": model_schema(RerankerSpec, nullable_optionals=True),
            "status": model_schema(RerankerServiceStatus, nullable_optionals=False),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{API_GROUP}",
            "labels": {
                LABEL_NAME: OPERATOR_NAME,
                "app.kubernetes.io/part-of": "kuberank",
            },
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def model_schema(model: type[BaseModel], *, nullable_optionals: bool) -> Schema:
    """The structural schema of one model (an object), with its fields' defaults."""
    raw = model.model_json_schema(by_alias=True)
    return _Translator(raw.get("$defs", {}), nullable_optionals).object(raw, model)


class _Translator:
    def __init__(self, definitions: Schema, nullable_optionals: bool) -> None:
        self.definitions = definitions
        self.nullable_optionals = nullable_optionals

    def _resolve(self, node: Schema) -> Schema:
        if "$ref" not in node:
            return node
        target = self.definitions[node["$ref"].rsplit("/", 1)[-1]]
        # The field's own keys (its description, default) win over the model's.
        return {**target, **{key: value for key, value in node.items() if key != "$ref"}}

    def object(self, node: Schema, model: type[BaseModel]) -> Schema:
        node = self._resolve(node)
        schema: Schema = {"type": "object"}
        if node.get("description"):
            schema["description"] = _one_line(node["description"])
        if node.get("required"):
            schema["required"] = list(node["required"])  # a copy: a model used twice is no alias
        cel_rules = getattr(model, "cel_rules", ())
        if cel_rules:
            schema["x-kubernetes-validations"] = [dict(rule) for rule in cel_rules]
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        schema["properties"] = {
            alias: self.field(node["properties"][alias], field) for alias, field in fields.items()
        }
        return schema

    def field(self, node: Schema, field: FieldInfo) -> Schema:
        schema = self.value(node, field.annotation)
        default = field.get_default(call_default_factory=True)
        if default is not PydanticUndefined and default is not None:
            # A nested object defaults to {}: the API server then applies its fields' defaults.
            # Models inside a list default to what they say (no nulls: absent is unset).
            schema["default"] = (
                {}
                if isinstance(default, BaseModel)
                else to_jsonable_python(default, by_alias=True, exclude_none=True)
            )
        return _ordered(schema)

    def value(self, node: Schema, annotation: Any) -> Schema:
        node = self._resolve(node)
        annotation, optional = _unwrap_optional(annotation)
        if "anyOf" in node:
            node = self._any_of(node)
        model = _model_in(annotation)
        if model is not None and node.get("type") == "object":
            schema = self.object(node, model)
        elif model is not None and node.get("type") == "array":
            schema = {"type": "array", "items": self.object(node["items"], model)}
            schema |= {key: copy.deepcopy(node[key]) for key in _KEPT if key in node}
        else:
            schema = self._scalar_or_container(node, annotation)
        if node.get("description"):
            schema["description"] = _one_line(node["description"])
        for key, value in node.items():
            if key.startswith("x-kubernetes-"):
                schema[key] = value
        nullable = node.get("nullable", optional and self.nullable_optionals)
        if nullable and schema.get("type") not in ("object", "array") and "enum" not in schema:
            schema["nullable"] = True
        return schema

    def _any_of(self, node: Schema) -> Schema:
        options = [self._resolve(option) for option in node["anyOf"]]
        rest = {key: value for key, value in node.items() if key != "anyOf"}
        present = [option for option in options if option.get("type") != "null"]
        if len(present) == 1:
            return {**present[0], **rest}
        if sorted(option.get("type", "") for option in present) == ["integer", "string"]:
            return {"x-kubernetes-int-or-string": True, **rest}
        raise TypeError(f"no structural schema for anyOf {node['anyOf']}")

    def _scalar_or_container(self, node: Schema, annotation: Any) -> Schema:
        if node.get("x-kubernetes-int-or-string"):
            return {
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
            }
        schema: Schema = {"type": node["type"]} if "type" in node else {}
        if "const" in node:
            schema["enum"] = [node["const"]]
        for key in _KEPT:
            if key in node:
                schema[key] = copy.deepcopy(node[key])
        for bound in ("Minimum", "Maximum"):
            exclusive = node.get(f"exclusive{bound}")
            if exclusive is not None:  # JSON Schema's number -> OpenAPI 3.0's flag
                schema[bound.lower()] = exclusive
                schema[f"exclusive{bound}"] = True
        if node.get("type") == "array":
            item_annotation = (typing.get_args(annotation) or (Any,))[0]
            schema["items"] = self.value(node.get("items", {}), item_annotation)
        if node.get("type") == "object":
            extra = node.get("additionalProperties", True)
            if extra is True or extra == {}:
                schema["x-kubernetes-preserve-unknown-fields"] = True
            else:
                value_annotation = (typing.get_args(annotation) or (str, Any))[-1]
                schema["additionalProperties"] = self.value(extra, value_annotation)
        return schema


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return annotation, False


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: `Model` itself or the items of `list[Model]`."""
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


_ORDER = ("type", "x-kubernetes-int-or-string", "anyOf", "nullable", "default", "enum",
          "format", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength",
          "maxLength", "minItems", "maxItems", "pattern", "description")  # fmt: skip


def _ordered(schema: Schema) -> Schema:
    """Keys in a stable, readable order: the kind of value first, its children last."""
    rank = {key: index for index, key in enumerate(_ORDER)}
    return dict(sorted(schema.items(), key=lambda item: rank.get(item[0], len(_ORDER))))
