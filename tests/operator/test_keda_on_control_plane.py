"""Driver keda on the real control plane: KEDA's own CRD (tests/operator/keda/, copied from its
Go module by scripts.keda_crd) installed on the real API server, which then validates every
ScaledObject the operator writes with KEDA's schema and CEL rules, and prunes what KEDA does not
know; drift is put back by server-side apply like any other child. No KEDA operator runs here:
the ScaledObjects make no HPA (the benchmark runs the real one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from scripts import keda_crd
from scripts.control_plane.cluster import ControlPlane
from tests.operator.harness import (
    AUTOSCALERS,
    DEPLOYMENTS,
    EVENTS,
    RERANKERS,
    SCALED_OBJECTS,
    reranker,
)
from tests.operator.real_cluster import WRITE_VERBS, Cluster
from tests.operator.test_operator_on_control_plane import condition
from tests.operator.test_server_side_apply import settle

from kuberank_operator.apply import contains
from kuberank_operator.builders.common import Owner
from kuberank_operator.builders.scaled_object import build_scaled_object
from kuberank_operator.settings import OperatorSettings
from kuberank_operator.spec import parse_spec

pytestmark = pytest.mark.control_plane
KEDA_CRD_NAME = "scaledobjects.keda.sh"
# The operator's KEDA settings, as the chart's values set them (env of its process).
TRIGGER_AUTHENTICATION = {"KUBERANK_OPERATOR_KEDA_AUTHENTICATION_NAME": "prometheus-auth"}
CLUSTER_TRIGGER_AUTHENTICATION = {
    "KUBERANK_OPERATOR_KEDA_AUTHENTICATION_NAME": "prometheus-auth",
    "KUBERANK_OPERATOR_KEDA_AUTHENTICATION_KIND": "ClusterTriggerAuthentication",
}
# Spec variants: every trigger combination, targets and bounds away from the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "gpu-both-triggers": {},
    "gpu-utilization-only": {
        "autoscaling": {
            "targetGPUUtilization": 50,
            "targetConcurrency": None,
            "minReplicas": 2,
            "maxReplicas": 8,
            "scaleDownStabilizationSeconds": 60,
        }
    },
    "two-gpus-low-targets": {
        "resources": {"gpu": 2},
        "autoscaling": {"targetGPUUtilization": 1, "targetConcurrency": 1, "maxReplicas": 1},
    },
    "cpu-concurrency": {
        "resources": {"gpu": 0, "cpu": "2", "memory": "4Gi"},
        "autoscaling": {"targetConcurrency": 4, "minReplicas": 1, "maxReplicas": 3},
    },
}


def install_keda_crd(cp: ControlPlane) -> None:
    cp.kubectl("apply", "--server-side", "-f", str(keda_crd.KEDA_CRD))
    cp.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{KEDA_CRD_NAME}")


def remove_keda_crd(cp: ControlPlane) -> None:
    cp.kubectl("delete", "crd", KEDA_CRD_NAME, "--wait=true", "--timeout=60s")


@pytest.fixture(scope="module")
def keda_api(reranker_crd: ControlPlane) -> Iterator[ControlPlane]:
    """The control plane serving keda.sh/v1alpha1 ScaledObjects from KEDA's CRD; removed after
    this module (the other modules' operators default to the HPA where KEDA is absent)."""
    install_keda_crd(reranker_crd)
    try:
        yield reranker_crd
    finally:
        remove_keda_crd(reranker_crd)


def scaled_object(kube: Cluster, name: str) -> dict[str, Any] | None:
    return kube.get(SCALED_OBJECTS, name)


def built(kube: Cluster, name: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """What the operator's builder makes for this service, under the operator's settings."""
    rerank = kube.get(RERANKERS, name)
    assert rerank is not None
    owner = Owner(name=name, namespace=kube.namespace, uid=rerank["metadata"]["uid"])
    full = reranker(name, **spec)["spec"]
    settings = OperatorSettings(
        **{k.removeprefix("KUBERANK_OPERATOR_").lower(): v for k, v in env.items()}
    )
    return build_scaled_object(owner, parse_spec(full), settings)


def stored_as_built(kube: Cluster, name: str, spec: dict[str, Any], env: dict[str, str]) -> bool:
    """The API server kept every field the builder wrote (pruning would drop a field KEDA's
    schema does not have, silently)."""
    live = scaled_object(kube, name)
    want = built(kube, name, spec, env)
    return (
        live is not None
        and contains(live["spec"], want["spec"])
        and contains(live["metadata"], {k: want["metadata"][k] for k in ("labels", "annotations")})
    )


def refused_writes(kube: Cluster, mark: int, resource: str) -> list[tuple[str, int]]:
    return [
        (e.verb, e.code)
        for e in kube.audit.operator_requests(mark)
        if e.resource == resource and e.verb in WRITE_VERBS and e.code >= 400
    ]


def test_keda_asked_for_where_its_api_is_absent_is_degraded_with_the_reason(
    kube: Cluster,
) -> None:
    assert (
        kube.cp.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{KEDA_CRD_NAME}")
        is None
    )
    kube.operator.env = {"KUBERANK_OPERATOR_AUTOSCALING_DRIVER": "keda"}
    kube.operator.start()
    mark = kube.audit.mark()
    kube.create(RERANKERS, reranker("asked", autoscaling={"driver": "keda"}))
    kube.create(RERANKERS, reranker("defaulted"))
    for name, source in (
        ("asked", "spec.autoscaling.driver"),
        ("defaulted", "the operator's default, KUBERANK_OPERATOR_AUTOSCALING_DRIVER"),
    ):
        kube.wait_until(
            lambda name=name: condition(kube, "Degraded", name).get("reason") == "KedaMissing",
            f"{name} Degraded: KedaMissing",
        )
        message = condition(kube, "Degraded", name)["message"]
        assert message.startswith(f"autoscaling driver keda ({source}), but this cluster")
        assert "keda.sh/v1alpha1" in message and "spec.autoscaling.driver: hpa" in message
    time.sleep(5)
    assert kube.operator.process is not None and kube.operator.process.poll() is None
    # Nothing half-made: no Deployment without its autoscaler, no HPA in KEDA's place.
    assert kube.list(DEPLOYMENTS) == [] and kube.list(AUTOSCALERS) == []
    writes = {(e.verb, e.resource) for e in kube.audit.operator_writes(mark)}
    assert writes <= {("patch", "rerankerservices"), ("create", "events"), ("patch", "events")}
    # Retried with a growing back-off (2, 4, 8 s...), not in a loop: a few Secret reads each.
    reads = [e for e in kube.audit.operator_requests(mark) if e.resource == "secrets"]
    assert len(reads) <= 8, len(reads)


def test_every_scaled_object_the_operator_writes_is_accepted_by_kedas_crd(
    keda_api: ControlPlane, kube: Cluster
) -> None:
    mark = kube.audit.mark()
    env: dict[str, str] = {}
    kube.operator.start()
    for name, spec in VARIANTS.items():
        kube.create(RERANKERS, reranker(name, **spec))
    for name, spec in VARIANTS.items():
        kube.wait_until(
            lambda name=name, spec=spec: stored_as_built(kube, name, spec, env),
            f"{name}'s ScaledObject",
        )
    # The operator's Prometheus credentials: a TriggerAuthentication, then a cluster-wide one.
    # A restarted operator applies them to every ScaledObject it has (an update, checked too).
    for env in (TRIGGER_AUTHENTICATION, CLUSTER_TRIGGER_AUTHENTICATION):
        kube.operator.stop()
        kube.operator.env = env
        kube.operator.start()
        for name, spec in VARIANTS.items():
            kube.wait_until(
                lambda name=name, spec=spec, env=env: stored_as_built(kube, name, spec, env),
                f"{name} with {env}",
                within=60,
            )
    settle(kube)
    assert refused_writes(kube, mark, "scaledobjects") == []
    for name in VARIANTS:
        assert condition(kube, "Degraded", name).get("reason") not in ("ApiRejected", "KedaMissing")
        live = scaled_object(kube, name)
        assert live is not None
        assert live["metadata"]["ownerReferences"][0]["kind"] == "RerankerService"
        for trigger in live["spec"]["triggers"]:
            assert trigger["authenticationRef"] == {
                "name": "prometheus-auth",
                "kind": "ClusterTriggerAuthentication",
            }
    # The operator owns no HPA under driver keda (and no KEDA runs to make one).
    assert kube.list(AUTOSCALERS) == []
    assert not [
        e for e in kube.audit.operator_writes(mark) if e.resource == "horizontalpodautoscalers"
    ]
    # The server does check: what KEDA's CRD refuses, it refuses (server-side dry run).
    broken = built(kube, "gpu-both-triggers", {}, {})
    for change, complaint in (
        ({"minReplicaCount": 5, "maxReplicaCount": 2}, "minReplicaCount must be less than"),
        ({"triggers": []}, "spec.triggers"),
    ):
        manifest = {**broken, "metadata": {"name": "broken"}, "spec": {**broken["spec"], **change}}
        answer = kube.http.post(kube.path(SCALED_OBJECTS), params={"dryRun": "All"}, json=manifest)
        assert answer.status_code == 422 and complaint in answer.text, answer.text


def test_a_kubectl_edit_of_the_scaled_object_is_put_back_and_foreign_metadata_stays(
    keda_api: ControlPlane, kube: Cluster
) -> None:
    kube.operator.start()
    kube.create(RERANKERS, reranker())
    kube.wait_until(lambda: stored_as_built(kube, "ranker", {}, {}), "the ScaledObject")
    settle(kube)
    kube.kubectl("label", "scaledobject/ranker", "cost-center=42")
    kube.kubectl("annotate", "scaledobject/ranker", "team.example/owner=search")
    patch = {"spec": {"maxReplicaCount": 40, "minReplicaCount": 3}}
    kube.kubectl("patch", "scaledobject/ranker", "--type=merge", "-p", yaml.safe_dump(patch))
    kube.wait_until(lambda: stored_as_built(kube, "ranker", {}, {}), "the bounds put back")
    # A trigger's query rewritten with kubectl edit's whole-object replace.
    live = scaled_object(kube, "ranker")
    assert live is not None
    live["spec"]["triggers"][0]["metadata"]["query"] = "vector(1000)"
    kube.kubectl("replace", "-f", "-", input=yaml.safe_dump(live))
    kube.wait_until(lambda: stored_as_built(kube, "ranker", {}, {}), "the query put back")
    kube.delete(SCALED_OBJECTS, "ranker")
    kube.wait_until(lambda: stored_as_built(kube, "ranker", {}, {}), "the ScaledObject remade")
    kube.kubectl("label", "scaledobject/ranker", "cost-center=42")
    kube.patch(RERANKERS, "ranker", {"spec": {"autoscaling": {"maxReplicas": 6}}})
    spec = {"autoscaling": {"maxReplicas": 6}}
    kube.wait_until(lambda: stored_as_built(kube, "ranker", spec, {}), "maxReplicas 6 applied")
    settle(kube)
    live = scaled_object(kube, "ranker")
    assert live is not None and live["metadata"]["labels"]["cost-center"] == "42"
    events = {e["message"] for e in kube.list(EVENTS)}
    assert {"Updated ScaledObject ranker", "Created ScaledObject ranker"} <= events
