"""The CRD generated from the typed models is a structural schema the API server accepts,
and it is the file the operator, the chart and manifests/ ship."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml
from tests.operator.test_spec import to_openapi_jsonschema

from kuberank_operator.crd_schema import build_crd, model_schema
from kuberank_operator.spec import SpecModel
from kuberank_operator.status import compute_status
from kuberank_operator.status_model import RerankerServiceStatus

CRD_FILE = Path(__file__).parents[2] / "operator/kuberank_operator/crd/rerankerservices.yaml"
# What a structural schema node may hold (apiextensions.k8s.io/v1 JSONSchemaProps).
ALLOWED = {
    "type", "description", "default", "enum", "format", "nullable", "pattern", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems",
    "maxItems", "required", "properties", "items", "additionalProperties", "anyOf",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}  # fmt: skip


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """The rules of a structural schema that pydantic's JSON Schema would break."""
    problems = [f"{path}: {key}" for key in node if key not in ALLOWED]
    if "type" not in node and not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties beside additionalProperties")
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: anyOf outside int-or-string")
    if "default" in node and node.get("nullable") and node["default"] is None:
        problems.append(f"{path}: null default")
    for key, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


def test_the_generated_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert structural_problems(schema) == []


def test_the_shipped_file_is_the_generated_crd() -> None:
    assert yaml.safe_load(CRD_FILE.read_text()) == build_crd()


def test_translation_of_optional_quantity_map_and_bounds() -> None:
    from typing import Any as AnyValue

    from pydantic import Field

    class Sample(SpecModel):
        """A sample."""

        size: int | str = "1Gi"
        """A quantity."""
        ratio: float = Field(0.5, gt=0, le=1)
        """A fraction."""
        note: str | None = None
        """Optional text."""
        extra: dict[str, AnyValue] = Field(default_factory=dict)
        """Anything."""
        labels: dict[str, str] = Field(default_factory=dict)
        """Labels."""

    schema = model_schema(Sample, nullable_optionals=True)
    props = schema["properties"]
    assert props["size"] == {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "default": "1Gi",
        "description": "A quantity.",
    }
    assert props["ratio"] == {
        "type": "number", "default": 0.5, "minimum": 0, "exclusiveMinimum": True,
        "maximum": 1, "description": "A fraction.",
    }  # fmt: skip
    assert props["note"] == {"type": "string", "nullable": True, "description": "Optional text."}
    assert props["extra"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["labels"]["additionalProperties"] == {"type": "string"}
    assert schema["description"] == "A sample."


def test_what_the_operator_writes_fits_the_status_schema() -> None:
    status = compute_status(
        previous={},
        generation=3,
        model="m",
        endpoint="http://ranker.ns.svc:8000",
        wanted_replicas=2,
        deployment={
            "metadata": {"name": "ranker", "generation": 1},
            "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 1},
        },
        autoscaler=None,
        problem=None,
    )
    RerankerServiceStatus.model_validate(status)


def _defaults(node: dict[str, Any], path: str = "") -> list[tuple[str, Any, dict[str, Any]]]:
    found = [(path, node["default"], node)] if "default" in node else []
    for key, child in node.get("properties", {}).items():
        found += _defaults(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += _defaults(node["items"], f"{path}[]")
    return found


def test_every_default_fits_its_own_schema() -> None:
    """The API server refuses a CRD whose default does not validate (a list of peers
    defaulted with `namespaceSelector: null` where the field is a non-nullable object)."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    defaults = _defaults(schema)
    assert any(path == ".spec.network.allowFrom" for path, _, _ in defaults)
    for path, default, node in defaults:
        checked = to_openapi_jsonschema({k: v for k, v in node.items() if k != "default"})
        try:
            jsonschema.validate(default, checked)
        except jsonschema.ValidationError as error:
            raise AssertionError(f"default of {path}: {error.message}") from None


def test_the_shipped_file_has_no_yaml_aliases() -> None:
    # A model used twice (a label selector) must not come out as YAML anchors and aliases.
    assert "&id0" not in CRD_FILE.read_text()
