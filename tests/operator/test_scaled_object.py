"""The KEDA ScaledObject the operator writes (driver keda), and which autoscaler a spec gets.

Every ScaledObject is validated against KEDA's own CRD (copied from KEDA's Go module at the
pinned release by scripts.upstream_crds): its openAPIV3Schema with jsonschema, unknown fields
refused (the API server would prune them silently), and its CEL rules with cel-python. The
API server itself checks them on the real control plane (issue 17's fixture).
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from scripts.upstream_crds import KEDA, UPSTREAM_CRDS, UpstreamCrd
from tests.operator.test_builders import OWNER, SETTINGS, SPECS

from kuberank_operator.autoscaling_metrics import (
    CONCURRENCY_METRIC_LABEL,
    GPU_UTILIZATION,
    REQUESTS_IN_PROGRESS,
)
from kuberank_operator.builders import (
    AUTOSCALER,
    SCALED_OBJECT,
    autoscaling_driver,
    desired_children,
)
from kuberank_operator.builders.scaled_object import build_scaled_object
from kuberank_operator.settings import OperatorSettings
from kuberank_operator.spec import parse_spec

Schema = dict[str, Any]


def _keda_crd() -> dict[str, Any]:
    return dict(yaml.safe_load(KEDA.copy.read_text()))


def _strict(schema: Schema) -> Schema:
    """The CRD's schema with every object closed: a field KEDA does not know is an error here,
    where the API server would drop it without a word."""
    schema = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in schema:
        schema["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        schema.setdefault("additionalProperties", False)
    elif isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = _strict(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = _strict(schema["items"])
    return schema


def _cel_violations(obj: Any, schema: Schema) -> list[str]:
    """Every x-kubernetes-validations rule of the schema, evaluated where it applies."""
    found = []
    environment = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        program = environment.program(environment.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(obj)}):
            found.append(rule["message"])
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in schema.get("properties", {}):
                found += _cel_violations(value, schema["properties"][key])
    if isinstance(obj, list) and "items" in schema:
        for item in obj:
            found += _cel_violations(item, schema["items"])
    return found


def keda_errors(manifest: dict[str, Any]) -> list[str]:
    """What KEDA's CRD (schema and CEL rules) says against a ScaledObject; [] when valid."""
    crd = _keda_crd()
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    assert manifest["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert manifest["kind"] == crd["spec"]["names"]["kind"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
    validator = jsonschema.Draft4Validator(_strict(schema))
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]
    return errors + _cel_violations(body, schema)


def scaled_object(spec: dict[str, Any], settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    return build_scaled_object(OWNER, parse_spec(spec), settings)


AUTOSCALED = [case for case, spec in SPECS.items() if parse_spec(spec).autoscaling.enabled]


@pytest.mark.parametrize("crd", UPSTREAM_CRDS, ids=lambda crd: crd.copy.name)
def test_each_copied_crd_is_from_the_pinned_release(crd: UpstreamCrd) -> None:
    assert crd.pinned(), f"{crd.copy.name}: not {crd.version}; run python -m scripts.upstream_crds"
    plural, group = dict(yaml.safe_load(crd.copy.read_text()))["metadata"]["name"].split(".", 1)
    assert crd.copy.name == f"{group}_{plural}.yaml"


@pytest.mark.parametrize("case", AUTOSCALED)
def test_every_scaled_object_is_valid_for_kedas_crd(case: str) -> None:
    assert keda_errors(scaled_object(SPECS[case])) == []


def test_with_authentication_it_is_still_valid() -> None:
    settings = OperatorSettings(
        keda_authentication_name="prometheus-auth",
        keda_authentication_kind="ClusterTriggerAuthentication",
    )
    manifest = scaled_object(SPECS["cache-on"], settings)
    assert keda_errors(manifest) == []
    for trigger in manifest["spec"]["triggers"]:
        assert trigger["authenticationRef"] == {
            "name": "prometheus-auth",
            "kind": "ClusterTriggerAuthentication",
        }
    assert "authenticationRef" not in scaled_object(SPECS["cache-on"])["spec"]["triggers"][0]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda so: so["spec"].update(minReplicas=1), "'minReplicas' was unexpected"),
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(threshold=16), "is not of type"),
        (lambda so: so["spec"].update(triggers=[]), "should be non-empty"),
        (
            lambda so: so["spec"].update(minReplicaCount=5, maxReplicaCount=2),
            "minReplicaCount must be less than or equal to maxReplicaCount",
        ),
    ],
    ids=["unknown-field", "number-in-metadata", "no-trigger", "min-above-max"],
)
def test_the_check_refuses_what_keda_would_not_keep(change: Any, complaint: str) -> None:
    manifest = scaled_object(SPECS["cache-on"])
    change(manifest)
    assert any(complaint in error for error in keda_errors(manifest)), keda_errors(manifest)


def test_gpu_pods_scale_on_gpu_utilization_and_requests_in_progress_like_the_hpa() -> None:
    spec = {
        **SPECS["cache-on"],
        "autoscaling": {
            "minReplicas": 2,
            "maxReplicas": 7,
            "targetGPUUtilization": 60,
            "scaleDownStabilizationSeconds": 120,
        },
    }
    manifest = scaled_object(spec)
    hpa = desired_children(
        OWNER, parse_spec(spec), SETTINGS, service_monitors=True, certificates=True, keda=False
    )[AUTOSCALER]
    assert hpa is not None
    so = manifest["spec"]
    assert so["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (2, 7)
    assert so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]
    # The same metrics, in the same order, with the same per-pod targets as the HPA's.
    hpa_targets = [
        (m["pods"]["metric"]["name"], m["pods"]["target"]["averageValue"])
        for m in hpa["spec"]["metrics"]
    ]
    assert [
        (metric.name, trigger["metadata"]["threshold"])
        for metric, trigger in zip(
            (GPU_UTILIZATION, REQUESTS_IN_PROGRESS), so["triggers"], strict=True
        )
    ] == hpa_targets
    for metric, trigger in zip(
        (GPU_UTILIZATION, REQUESTS_IN_PROGRESS), so["triggers"], strict=True
    ):
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
        assert trigger["metadata"]["query"] == metric.keda_query(OWNER.namespace, OWNER.name)
        assert trigger["metadata"]["serverAddress"] == SETTINGS.keda_prometheus_url


def test_cpu_pods_scale_on_requests_in_progress_alone() -> None:
    manifest = scaled_object({**SPECS["cpu"], "autoscaling": {"targetConcurrency": 4}})
    (trigger,) = manifest["spec"]["triggers"]
    assert trigger["metadata"]["threshold"] == "4"
    assert "kuberank_requests_in_progress" in trigger["metadata"]["query"]
    assert "DCGM" not in trigger["metadata"]["query"]


def test_kedas_hpa_is_the_hpa_drivers_by_name_and_keeps_our_labels() -> None:
    manifest = scaled_object(SPECS["cache-on"])
    assert manifest["metadata"]["annotations"] == {
        "scaledobject.keda.sh/hpa-excluded-labels": "app.kubernetes.io/managed-by",
        # KEDA's webhook lets the ScaledObject take over the HPA it names.
        "scaledobject.keda.sh/transfer-hpa-ownership": "true",
    }
    assert manifest["metadata"]["ownerReferences"] == [OWNER.reference]
    # KEDA's HPA gets the name of ours (not KEDA's default keda-hpa-<name>): one HPA is
    # handed over between the drivers.
    hpa_config = manifest["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa_config["name"] == OWNER.name


def test_the_prometheus_address_comes_from_the_operators_settings() -> None:
    settings = OperatorSettings(keda_prometheus_url="http://prometheus.obs.svc:9090")
    for trigger in scaled_object(SPECS["cache-on"], settings)["spec"]["triggers"]:
        assert trigger["metadata"]["serverAddress"] == "http://prometheus.obs.svc:9090"


def _with(driver: str | None = None, enabled: bool = True) -> dict[str, Any]:
    return {**SPECS["cache-on"], "autoscaling": {"driver": driver, "enabled": enabled}}


@pytest.mark.parametrize(
    ("driver", "default", "keda", "chosen"),
    [
        (None, "auto", True, "keda"),
        (None, "auto", False, "hpa"),
        (None, "hpa", True, "hpa"),
        (None, "keda", False, "keda"),  # asked for and absent: the reconcile reports it
        ("hpa", "keda", True, "hpa"),
        ("keda", "hpa", True, "keda"),
        ("keda", "auto", False, "keda"),
    ],
)
def test_the_driver_is_the_specs_else_the_operators_default(
    driver: str | None, default: str, keda: bool, chosen: str
) -> None:
    settings = OperatorSettings(autoscaling_driver=default)  # type: ignore[arg-type]
    assert autoscaling_driver(parse_spec(_with(driver)), settings, keda=keda) == chosen


def _autoscalers(spec: dict[str, Any], keda: bool) -> list[tuple[str, bool]]:
    """(kind, made) of the autoscalers in the order they are applied."""
    made = desired_children(
        OWNER, parse_spec(spec), SETTINGS, service_monitors=True, certificates=True, keda=keda
    )
    return [
        (kind.kind, manifest is not None)
        for kind, manifest in made.items()
        if kind in (AUTOSCALER, SCALED_OBJECT)
    ]


def test_exactly_one_autoscaler_and_the_old_one_goes_first() -> None:
    # Driver keda leaves the HPA alone: KEDA takes ours over (same name) or makes it.
    assert _autoscalers(_with("keda"), keda=True) == [("ScaledObject", True)]
    assert _autoscalers(_with("hpa"), keda=True) == [
        ("ScaledObject", False),
        ("HorizontalPodAutoscaler", True),
    ]
    assert _autoscalers(_with(enabled=False), keda=True) == [
        ("ScaledObject", False),
        ("HorizontalPodAutoscaler", False),
    ]
    # No KEDA API: the HPA alone is managed; a ScaledObject cannot exist.
    assert _autoscalers(_with("hpa"), keda=False) == [("HorizontalPodAutoscaler", True)]
    # KEDA asked for and absent: neither made nor removed (the reconcile says why).
    assert _autoscalers(_with("keda"), keda=False) == []


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        (SPECS["cache-on"], "s1-prometheus"),  # GPU trigger s0, concurrency s1
        ({**SPECS["cpu"], "autoscaling": {"targetConcurrency": 4}}, "s0-prometheus"),
        ({**SPECS["cache-on"], "autoscaling": {"targetConcurrency": None}}, None),
    ],
    ids=["gpu-and-concurrency", "cpu-concurrency", "gpu-only"],
)
def test_a_label_names_the_metric_kedas_hpa_gives_the_concurrency_trigger(
    spec: dict[str, Any], label: str | None
) -> None:
    """KEDA names its HPA's metrics s<trigger index>-prometheus; the alert on concurrency
    finds the target by this label, which KEDA copies onto its HPA."""
    manifest = scaled_object(spec)
    assert manifest["metadata"]["labels"].get(CONCURRENCY_METRIC_LABEL) == label
    if label is not None:
        index = int(label.removeprefix("s").split("-")[0])
        concurrency = manifest["spec"]["triggers"][index]
        assert concurrency["metadata"]["query"] == REQUESTS_IN_PROGRESS.keda_query(
            OWNER.namespace, OWNER.name
        )
