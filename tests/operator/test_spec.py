"""The CRD's schema, defaults and CEL rules, and spec.py agreeing with them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from pydantic.alias_generators import to_camel
from tests.operator.spec_cases import CASES, HS_KEY

from kuberank_operator.spec import InvalidSpecError, RerankerSpec, parse_spec

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator/kuberank_operator"
CRD = yaml.safe_load((OPERATOR_DIR / "crd/rerankerservices.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SAMPLES = sorted((OPERATOR_DIR / "samples").glob("*.yaml"))


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it: a default fills an absent field."""
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def to_openapi_jsonschema(schema: Any) -> Any:
    """OpenAPI v3 `nullable` -> JSON Schema, so jsonschema can check the same thing."""
    if isinstance(schema, dict):
        converted = {
            k: to_openapi_jsonschema(v) for k, v in schema.items() if not k.startswith("x-")
        }
        if converted.pop("nullable", False) and "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if converted.get("exclusiveMinimum") is True:
            converted["exclusiveMinimum"] = converted.pop("minimum")
        return converted
    if isinstance(schema, list):
        return [to_openapi_jsonschema(item) for item in schema]
    return schema


EACH = "[]"  # a path step: every item of a list


def cel_rules(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    found = [(path, rule) for rule in schema.get("x-kubernetes-validations", [])]
    for key, sub in schema.get("properties", {}).items():
        found += cel_rules(sub, (*path, key))
    if "items" in schema:
        found += cel_rules(schema["items"], (*path, EACH))
    return found


def _targets(value: Any, path: tuple[str, ...]) -> list[Any]:
    """What a rule at `path` is evaluated on; none where an optional field is absent."""
    if not path:
        return [value]
    step, rest = path[0], path[1:]
    if step == EACH:
        return [found for item in value or [] for found in _targets(item, rest)]
    if not isinstance(value, dict) or step not in value:
        return []
    return _targets(value[step], rest)


def cel_violations(obj: dict[str, Any]) -> list[str]:
    """Evaluate every CEL rule of the CRD on a defaulted object with cel-python."""
    environment = celpy.Environment()
    messages = []
    for path, rule in cel_rules(SCHEMA):
        program = environment.program(environment.compile(rule["rule"]))
        for target in _targets(obj, path):
            if not program.evaluate({"self": celpy.json_to_cel(target)}):
                messages.append(rule["message"])
    return messages


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    return apply_defaults(copy.deepcopy(obj), SCHEMA)


def rrs(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kuberank.io/v1alpha1",
        "kind": "RerankerService",
        "metadata": {"name": "r"},
        "spec": {"model": {"name": "m"}, **spec},
    }


@pytest.mark.parametrize(("spec", "expected"), CASES)
def test_cel_rules_and_spec_model_agree(spec: dict[str, Any], expected: str | None) -> None:
    obj = defaulted(rrs(**spec))
    violations = cel_violations(obj)
    if expected is None:
        assert violations == []
        parse_spec(obj["spec"])
    else:
        assert len(violations) == 1 and expected in violations[0]
        with pytest.raises(InvalidSpecError, match=expected):
            parse_spec(obj["spec"])


def test_parallel_flags_in_extra_args_are_refused_with_the_numbers() -> None:
    spec = {
        "model": {"name": "m"},
        "auth": HS_KEY,
        "resources": {"gpu": 2},
        "engine": {"extraArgs": ["--enforce-eager", "--tensor-parallel-size", "4", "-dp=2"]},
    }
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec)
    assert str(caught.value).endswith(
        "engine.extraArgs has '--tensor-parallel-size 4', '-dp=2' while the spec asks for"
        " resources.gpu: 2 with engine.parallelism: tensor"
    )


def test_parallelism_is_tensor_or_data() -> None:
    obj = defaulted(rrs(auth=HS_KEY, engine={"parallelism": "pipeline"}))
    with pytest.raises(jsonschema.ValidationError, match="'pipeline' is not one of"):
        jsonschema.validate(obj, to_openapi_jsonschema(SCHEMA))
    with pytest.raises(InvalidSpecError, match=r"spec\.engine\.parallelism: Input should be"):
        parse_spec(obj["spec"])


def test_gpu_rule_is_evaluated() -> None:
    obj = defaulted(rrs(auth=HS_KEY, resources={"gpu": -1}))
    assert cel_violations(obj) == ["resources.gpu must be 0 (a CPU pod) or more"]
    with pytest.raises(InvalidSpecError, match=r"spec\.resources\.gpu"):
        parse_spec(obj["spec"])


def test_spec_model_defaults_are_the_crds() -> None:
    minimal = defaulted(rrs(auth=HS_KEY))["spec"]
    model_view = RerankerSpec.model_validate({"model": {"name": "m"}, "auth": HS_KEY}).model_dump(
        by_alias=True, exclude_none=True
    )
    # The CRD leaves optional objects (cache, hfTokenSecretRef) absent; so does the model.
    assert model_view == minimal


def test_every_field_has_a_description() -> None:
    def undocumented(schema: dict[str, Any], path: str) -> list[str]:
        missing = [] if "description" in schema or path in ("", ".metadata") else [path]
        for key, sub in schema.get("properties", {}).items():
            missing += undocumented(sub, f"{path}.{key}")
        if schema.get("items", {}).get("type") == "object":  # scalar items: the list's text
            missing += undocumented(schema["items"], f"{path}[]")
        return missing

    assert undocumented(SCHEMA, "") == []


def test_crd_names_columns_and_status() -> None:
    names = CRD["spec"]["names"]
    assert (names["shortNames"], names["categories"]) == (["rrs"], ["kuberank"])
    assert VERSION["subresources"] == {"status": {}}
    columns = [column["name"] for column in VERSION["additionalPrinterColumns"]]
    assert columns == ["Model", "Ready", "Replicas", "Reason", "Endpoint", "Age", "Message"]
    wide_only = [column["name"] for column in VERSION["additionalPrinterColumns"]
                 if column.get("priority", 0) > 0]  # fmt: skip
    assert wide_only == ["Message"]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: f"{path.stem}-sample")
def test_samples_validate_against_the_crd(sample: Path) -> None:
    obj = defaulted(yaml.safe_load(sample.read_text()))
    jsonschema.validate(obj, to_openapi_jsonschema(SCHEMA))
    assert cel_violations(obj) == []
    parse_spec(obj["spec"])


def test_there_is_a_gpu_and_a_cpu_sample() -> None:
    gpus = {yaml.safe_load(path.read_text())["spec"]["resources"]["gpu"] for path in SAMPLES}
    assert 0 in gpus and any(gpu > 0 for gpu in gpus)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": {"name": "m"}, "auth": HS_KEY, "image": "Bad Image"}, r"spec\.image"),
        (
            {
                "model": {"name": "m"},
                "auth": HS_KEY,
                "resources": {"gpu": 0},
                "autoscaling": {"targetConcurrency": None},
            },
            r"CPU pod \(resources\.gpu: 0\) needs autoscaling\.targetConcurrency",
        ),
        (
            {"model": {"name": "m"}, "auth": HS_KEY, "autoscaling": {"targetConcurrency": 0}},
            r"spec\.autoscaling\.targetConcurrency: Input should be greater than or equal to 1",
        ),
        (
            {"model": {"name": "m"}, "auth": HS_KEY, "traffic": {"maxRequestsPerConnection": -1}},
            r"spec\.traffic\.maxRequestsPerConnection: Input should be greater than or equal to 0",
        ),
        (
            {"model": {"name": "m"}, "auth": HS_KEY, "traffic": {"maxConnectionAgeSeconds": -1}},
            r"spec\.traffic\.maxConnectionAgeSeconds: Input should be greater than or equal to 0",
        ),
        (
            {"model": {"name": "m"}, "auth": HS_KEY, "autoscaling": {"targetRequestsWaiting": 8}},
            r"spec\.autoscaling\.targetRequestsWaiting: Extra inputs",
        ),
        ({"model": {"name": "m"}, "auth": HS_KEY, "replicaz": 2}, r"spec\.replicaz: Extra inputs"),
        ({"auth": HS_KEY}, r"spec\.model: Field required"),
    ],
)
def test_bad_specs_get_a_message_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        parse_spec(spec)


def test_cpu_pods_scale_on_concurrency_and_may_turn_autoscaling_off() -> None:
    cpu = {"model": {"name": "m"}, "auth": HS_KEY, "resources": {"gpu": 0}}
    assert parse_spec(cpu).autoscaling.target_concurrency == 16
    off = {**cpu, "autoscaling": {"enabled": False, "targetConcurrency": None}}
    assert parse_spec(off).autoscaling.enabled is False


def test_traffic_defaults_are_the_servers() -> None:
    """spec.traffic and the server's settings share one model (kuberank_contract): the CRD's
    defaults and bounds are the server's."""
    from kuberank_contract import ConnectionRecycling

    traffic = SCHEMA["properties"]["spec"]["properties"]["traffic"]["properties"]
    for name, field in ConnectionRecycling.model_fields.items():
        crd_field = traffic[field.alias or to_camel(name)]
        assert crd_field["default"] == field.default, name
        assert crd_field["description"] == field.description, name
        (bound,) = (item.ge for item in field.metadata if hasattr(item, "ge"))
        assert crd_field["minimum"] == bound == 0, name  # 0 turns that trigger off
