"""Server-side apply of the children on the real API server: what we own is put back, what others
own stays theirs, and nothing is written at steady state (counted in the audit log)."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from tests.operator.harness import (
    DEPLOYMENTS,
    EVENTS,
    PODS,
    RERANKERS,
    SERVICES,
    reranker,
)
from tests.operator.real_cluster import REPLICA_SETS, AuditEntry, Cluster
from tests.operator.test_operator_on_control_plane import CHILDREN, is_ready, pods

pytestmark = pytest.mark.control_plane
STEADY_STATE_SECONDS = 60


def child_writes(entries: list[AuditEntry]) -> list[tuple[str, str, str]]:
    """Writes to children: not the RerankerService's status, not Events."""
    return [
        (e.verb, e.resource, e.name)
        for e in entries
        if e.resource not in ("rerankerservices", "events")
    ]


def scale(kube: Cluster, replicas: int, manager: str) -> None:
    """What the HPA controller does: the Deployment's scale subresource, as its own manager."""
    kube.patch(DEPLOYMENTS, "ranker", {"spec": {"replicas": replicas}}, manager=manager,
                  sub="scale")  # fmt: skip


def container(deployment: dict[str, Any] | None) -> dict[str, Any]:
    assert deployment is not None
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def settle(kube: Cluster, quiet_seconds: float = 2.0, within: float = 30) -> None:
    """Wait until the operator has written nothing for a while."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        mark = kube.audit.mark()
        time.sleep(quiet_seconds)
        if not kube.audit.operator_writes(mark):
            return
    raise AssertionError(f"the operator kept writing for {within} s")


def ready_service(kube: Cluster, name: str = "ranker", **spec: Any) -> None:
    kube.create(RERANKERS, reranker(name, **spec))
    kube.wait_until(lambda: is_ready(kube, name), f"{name} Ready", within=60)
    settle(kube)


def test_steady_state_while_another_manager_changes_replicas_writes_nothing(
    kube: Cluster,
) -> None:
    kube.operator.start()
    ready_service(kube)
    mark = kube.audit.mark()
    changes = 0
    began = time.monotonic()
    while time.monotonic() - began < STEADY_STATE_SECONDS:
        changes += 1
        scale(kube, 1 + changes % 2, manager="autoscaler-stand-in")
        time.sleep(3)
    entries = kube.audit.operator_writes(mark)
    deployment = kube.get(DEPLOYMENTS, "ranker")
    assert deployment is not None and deployment["spec"]["replicas"] == 1 + changes % 2
    assert child_writes(entries) == []
    requests = kube.audit.operator_requests(mark)
    print(
        f"{changes} replica changes in {STEADY_STATE_SECONDS} s: {len(requests)} operator "
        f"requests, {len(entries)} writes (all to the status or Events)"
    )


def test_a_spec_change_applies_the_deployment_once_and_leaves_replicas_to_their_owner(
    kube: Cluster,
) -> None:
    kube.operator.start()
    ready_service(kube)
    scale(kube, 3, manager="autoscaler-stand-in")
    kube.wait_until(lambda: len(pods(kube)) == 3, "three pods")
    settle(kube)
    mark = kube.audit.mark()
    kube.patch(RERANKERS, "ranker", {"spec": {"model": {"name": "BAAI/bge-reranker-v2-m3"}}})

    def model_env() -> str:
        env = container(kube.get(DEPLOYMENTS, "ranker"))["env"]
        return str(next(e["value"] for e in env if e["name"] == "KUBERANK_MODEL"))

    kube.wait_until(lambda: model_env() == "BAAI/bge-reranker-v2-m3", "the new model")
    settle(kube)
    assert kube.get(DEPLOYMENTS, "ranker")["spec"]["replicas"] == 3  # type: ignore[index]
    assert child_writes(kube.audit.operator_writes(mark)) == [("patch", "deployments", "ranker")]
    assert kube.get(RERANKERS, "ranker")["status"]["model"] == "BAAI/bge-reranker-v2-m3"  # type: ignore[index]
    updated = {e["message"] for e in kube.list(EVENTS) if e["reason"] == "Updated"}
    assert updated == {"Updated Deployment ranker"}


def test_an_edit_of_a_field_we_own_is_put_back_and_foreign_labels_and_annotations_survive(
    kube: Cluster,
) -> None:
    kube.operator.start()
    ready_service(kube)
    image = container(kube.get(DEPLOYMENTS, "ranker"))["image"]
    kube.kubectl("annotate", "deployment/ranker", "team.example/owner=search")
    kube.kubectl("label", "deployment/ranker", "cost-center=42")
    kube.kubectl("annotate", "service/ranker", "lb.example/tier=internal")
    kube.kubectl("set", "image", "deployment/ranker", "server=evil/miner:latest")
    kube.wait_until(
        lambda: container(kube.get(DEPLOYMENTS, "ranker"))["image"] == image,
        "the image put back",
    )
    kube.delete(SERVICES, "ranker")
    kube.wait_until(lambda: kube.get(SERVICES, "ranker"), "the Service put back")
    # A spec change re-applies the Deployment: what others added stays.
    kube.patch(RERANKERS, "ranker", {"spec": {"limits": {"maxDocuments": 500}}})
    kube.wait_until(
        lambda: "500" in str(container(kube.get(DEPLOYMENTS, "ranker"))["env"]), "applied"
    )
    settle(kube)
    deployment = kube.get(DEPLOYMENTS, "ranker")
    assert deployment is not None
    assert deployment["metadata"]["annotations"]["team.example/owner"] == "search"
    assert deployment["metadata"]["labels"]["cost-center"] == "42"
    assert container(deployment)["image"] == image
    managers = {e["manager"] for e in deployment["metadata"]["managedFields"]}
    assert "kuberank-operator" in managers and "kubectl-annotate" in managers
    assert "kuberank.io/last-applied" not in deployment["metadata"]["annotations"]


def test_a_restart_writes_nothing_to_children_already_right(kube: Cluster) -> None:
    kube.operator.start()
    ready_service(kube)
    ready_service(kube, "second", autoscaling={"enabled": False})
    kube.operator.stop()
    mark = kube.audit.mark()
    kube.operator.start()
    kube.wait_until(
        lambda: [r for r in kube.audit.operator_requests(mark) if r.resource == "deployments"],
        "the operator's resume",
    )
    settle(kube)
    assert kube.audit.operator_writes(mark) == []


def test_the_operator_killed_mid_reconcile_converges_with_no_duplicates(kube: Cluster) -> None:
    kube.operator.start()
    kube.create(RERANKERS, reranker())
    kube.wait_until(lambda: kube.get(DEPLOYMENTS, "ranker"), "the first child", within=30)
    kube.operator.stop(signal.SIGKILL)
    made = [r.plural for r in CHILDREN if kube.get(r, "ranker")]
    print(f"killed with {made} made")
    kube.operator.start()
    kube.wait_until(lambda: is_ready(kube), "Ready", within=60)
    settle(kube)
    for resource in (*CHILDREN, REPLICA_SETS, PODS):
        assert len(kube.list(resource)) == 1, resource.plural
