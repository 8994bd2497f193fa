"""The operator on the real control plane: the real Deployment and ReplicaSet controllers,
scheduler, garbage collector and Pod Security admission, with kwok's fake GPU nodes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.control_plane import GPU_NODES
from tests.operator.harness import (
    AUTOSCALERS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    EVENTS,
    PODS,
    RERANKERS,
    SERVICES,
    reranker,
)
from tests.operator.real_cluster import REPLICA_SETS, Cluster

pytestmark = pytest.mark.control_plane

CHILDREN = (DEPLOYMENTS, SERVICES, AUTOSCALERS, DISRUPTION_BUDGETS)
SERVER_PODS = "app.kubernetes.io/name=kuberank-server,app.kubernetes.io/instance="


def condition(kube: Cluster, kind: str, name: str = "ranker") -> dict[str, Any]:
    conditions = ((kube.get(RERANKERS, name) or {}).get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def is_ready(kube: Cluster, name: str = "ranker") -> bool:
    return condition(kube, "Ready", name).get("status") == "True"


def pods(kube: Cluster, name: str = "ranker") -> list[dict[str, Any]]:
    return kube.list(PODS, SERVER_PODS + name)


def test_a_reranker_service_becomes_pods_bound_to_a_gpu_node_and_a_ready_status(
    kube: Cluster,
) -> None:
    kube.operator.start()
    mark = kube.audit.mark()
    kube.create(RERANKERS, reranker())
    kube.wait_until(lambda: is_ready(kube), "Ready", within=60)

    deployment = kube.get(DEPLOYMENTS, "ranker")
    assert deployment is not None
    (replica_set,) = kube.list(REPLICA_SETS)
    assert replica_set["metadata"]["ownerReferences"][0]["uid"] == deployment["metadata"]["uid"]
    (pod,) = pods(kube)
    # Bound by the real scheduler to a GPU node (past its taint), admitted under `restricted`.
    assert pod["spec"]["nodeName"] in GPU_NODES
    assert pod["metadata"]["ownerReferences"][0]["uid"] == replica_set["metadata"]["uid"]
    assert pod["status"]["phase"] == "Running"
    for resource in CHILDREN:
        child = kube.get(resource, "ranker")
        assert child is not None, resource.plural
        assert child["metadata"]["ownerReferences"][0]["kind"] == "RerankerService"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kuberank-operator"
    status = kube.get(RERANKERS, "ranker")["status"]  # type: ignore[index]
    assert status["endpoint"] == f"http://ranker.{kube.namespace}.svc:8000"
    assert (status["readyReplicas"], status["observedGeneration"]) == (1, 1)
    assert condition(kube, "Degraded")["status"] == "False"
    # This cluster serves no ServiceMonitor API: none is made, and none asked for.
    requests = kube.audit.operator_requests(mark)
    assert not [r for r in requests if r.resource == "servicemonitors"]
    created = {
        e["message"] for e in kube.list(EVENTS) if e["reason"] == "Created"
    }  # fmt: skip
    assert created == {f"Created {kind} ranker" for kind in (
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")}  # fmt: skip


def test_two_gpus_on_one_gpu_nodes_show_the_schedulers_message_then_a_two_gpu_node_helps(
    kube: Cluster,
) -> None:
    kube.operator.start()
    kube.create(RERANKERS, reranker("big", resources={"gpu": 2}))
    began = time.monotonic()
    kube.wait_until(
        lambda: condition(kube, "Ready", "big").get("reason") == "Unschedulable",
        "Unschedulable",
        within=20,
    )
    seconds = time.monotonic() - began
    (pod,) = pods(kube, "big")
    degraded = condition(kube, "Degraded", "big")
    assert degraded["reason"] == "Unschedulable"
    assert f"pod {pod['metadata']['name']} cannot be scheduled: 0/" in degraded["message"]
    assert "Insufficient nvidia.com/gpu" in degraded["message"]  # the scheduler's own words
    assert "(it requests cpu: 4, memory: 16Gi, nvidia.com/gpu: 2)" in degraded["message"]
    print(f"Unschedulable in the status {seconds:.1f} s after the RerankerService was created")

    kube.cp.add_node("gpu-node-two-gpus", gpus=2)
    try:
        kube.wait_until(lambda: is_ready(kube, "big"), "Ready on the 2-GPU node", 60)
        (pod,) = pods(kube, "big")
        assert pod["spec"]["nodeName"] == "gpu-node-two-gpus"
        assert condition(kube, "Degraded", "big")["status"] == "False"
    finally:
        kube.cp.remove_node("gpu-node-two-gpus")


def test_deleting_the_reranker_service_removes_every_child_by_garbage_collection(
    kube: Cluster,
) -> None:
    kube.operator.start()
    kube.create(RERANKERS, reranker())
    kube.wait_until(lambda: is_ready(kube), "Ready", within=60)
    kube.delete(RERANKERS, "ranker")

    def gone() -> bool:
        return not any(kube.get(r, "ranker") for r in CHILDREN) and not (
            kube.list(REPLICA_SETS) or pods(kube)
        )

    kube.wait_until(gone, "every child gone", within=60)


def test_autoscaling_off_removes_the_hpa_and_sets_replicas(kube: Cluster) -> None:
    kube.operator.start()
    kube.create(RERANKERS, reranker())
    kube.wait_until(lambda: is_ready(kube), "Ready", within=60)
    kube.patch(RERANKERS, "ranker", {"spec": {"autoscaling": {"enabled": False}, "replicas": 2}})
    kube.wait_until(lambda: kube.get(AUTOSCALERS, "ranker") is None, "the HPA gone")
    kube.wait_until(lambda: len(pods(kube)) == 2, "two pods")
    kube.wait_until(
        lambda: (kube.get(RERANKERS, "ranker") or {}).get("status", {}).get("readyReplicas") == 2,
        "2 ready replicas in the status",
    )
    time.sleep(2)  # its delete event must not bring the HPA back
    assert kube.get(AUTOSCALERS, "ranker") is None
    assert kube.get(RERANKERS, "ranker")["status"]["desiredReplicas"] == 2  # type: ignore[index]
    deleted = {e["message"] for e in kube.list(EVENTS) if e["reason"] == "Deleted"}
    assert deleted == {"Deleted HorizontalPodAutoscaler ranker"}
