"""The real operator's two autoscaling drivers against kmock's emulator: a KEDA ScaledObject
where KEDA's API is served, the HPA elsewhere, and KEDA asked for where it is absent.

The emulator runs no KEDA: where KEDA would make its HPA (named after the service, as the
ScaledObject asks) the tests do (with the labels, owner and status KEDA gives it). The API
server checking every ScaledObject against KEDA's CRD, drift put back and switching drivers
(one HPA handed over, watched) are on the real control plane:
tests/operator/test_keda_on_control_plane.py; the offline CRD check is test_scaled_object.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.operator.conftest import NAMESPACE
from tests.operator.harness import (
    AUTOSCALERS,
    DEPLOYMENTS,
    RERANKERS,
    SCALED_OBJECTS,
    SECRETS,
    EmulatedCluster,
    emulated_cluster,
    jwt_secret,
    reranker,
)
from tests.operator.test_operator import condition, created, events, status
from tests.operator.test_scaled_object import keda_errors

from kuberank_operator.settings import OperatorSettings

KEDA_HPA = "ranker"  # the ScaledObject names the hpa driver's HPA


@pytest.fixture
async def keda_cluster(tmp_path: Path) -> AsyncIterator[EmulatedCluster]:
    """A cluster serving KEDA's API, the operator on its defaults (driver auto)."""
    async with emulated_cluster(tmp_path, keda=True) as emulated:
        await emulated.create(SECRETS, NAMESPACE, jwt_secret())
        await emulated.start_operator()
        yield emulated


def live(cluster: EmulatedCluster, resource: Any, name: str = "ranker") -> dict[str, Any] | None:
    return cluster.objects(resource, NAMESPACE).get(name)


async def keda_makes_its_hpa(cluster: EmulatedCluster, desired: int) -> None:
    """What KEDA's operator does for our ScaledObject: the HPA it names, with the
    ScaledObject's labels but the excluded managed-by, owned by the ScaledObject."""
    scaled = live(cluster, SCALED_OBJECTS)
    assert scaled is not None
    excluded = scaled["metadata"]["annotations"]["scaledobject.keda.sh/hpa-excluded-labels"]
    labels = {k: v for k, v in scaled["metadata"]["labels"].items() if k != excluded}
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": KEDA_HPA,
            "labels": {
                "app.kubernetes.io/managed-by": "keda-operator",
                "app.kubernetes.io/part-of": "ranker",
                **labels,
            },
            "ownerReferences": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "name": "ranker",
                    "uid": scaled["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "scaleTargetRef": scaled["spec"]["scaleTargetRef"],
            "minReplicas": scaled["spec"]["minReplicaCount"],
            "maxReplicas": scaled["spec"]["maxReplicaCount"],
            "metrics": [],
        },
    }
    await cluster.create(AUTOSCALERS, NAMESPACE, hpa)
    await kedas_hpa_wants(cluster, desired)


async def kedas_hpa_wants(cluster: EmulatedCluster, desired: int) -> None:
    await cluster.patch(
        AUTOSCALERS,
        NAMESPACE,
        KEDA_HPA,
        {"status": {"currentReplicas": desired, "desiredReplicas": desired}},
        "status",
    )


async def test_with_keda_served_the_default_is_a_scaled_object_and_no_hpa(
    keda_cluster: EmulatedCluster,
) -> None:
    cluster = keda_cluster
    await created(cluster)
    scaled = live(cluster, SCALED_OBJECTS)
    assert scaled is not None and live(cluster, AUTOSCALERS) is None
    assert keda_errors(scaled) == []
    assert scaled["metadata"]["ownerReferences"][0]["kind"] == "RerankerService"
    assert ("Normal", "Created", "Created ScaledObject ranker") in events(cluster)
    assert condition(cluster, "Degraded")["status"] == "False"
    deployment = live(cluster, DEPLOYMENTS)
    assert deployment is not None and "replicas" not in deployment["spec"]


async def test_status_shows_the_replicas_kedas_hpa_wants(keda_cluster: EmulatedCluster) -> None:
    cluster = keda_cluster
    await created(cluster, autoscaling={"minReplicas": 2})
    assert status(cluster)["desiredReplicas"] == 2  # KEDA has made no HPA yet: the minimum
    await keda_makes_its_hpa(cluster, desired=3)
    await cluster.wait_until(lambda: status(cluster)["desiredReplicas"] == 3, "KEDA's 3")
    await kedas_hpa_wants(cluster, desired=2)
    await cluster.wait_until(lambda: status(cluster)["desiredReplicas"] == 2, "KEDA's 2")
    # The operator never writes KEDA's HPA.
    writes = [c for c in cluster.calls() if c.resource == "horizontalpodautoscalers"]
    assert {c.verb for c in writes} <= {"list", "watch", "get"}


async def test_a_drifted_or_deleted_scaled_object_is_put_back(
    keda_cluster: EmulatedCluster,
) -> None:
    cluster = keda_cluster
    await created(cluster)
    await cluster.patch(SCALED_OBJECTS, NAMESPACE, "ranker", {"spec": {"maxReplicaCount": 40}})
    await cluster.wait_until(
        lambda: (live(cluster, SCALED_OBJECTS) or {}).get("spec", {}).get("maxReplicaCount") == 4,
        "maxReplicaCount put back",
    )
    await cluster.delete(SCALED_OBJECTS, NAMESPACE, "ranker")
    await cluster.wait_for_object(SCALED_OBJECTS, NAMESPACE, "ranker")


async def test_keda_asked_for_where_it_is_absent_is_degraded_and_keeps_the_hpa(
    cluster: EmulatedCluster,
) -> None:
    await created(cluster)
    assert live(cluster, AUTOSCALERS) is not None  # no KEDA: the default driver is the HPA
    await cluster.patch(
        RERANKERS, NAMESPACE, "ranker", {"spec": {"autoscaling": {"driver": "keda"}}}
    )
    await cluster.wait_until(
        lambda: condition(cluster, "Degraded").get("reason") == "KedaMissing", "KedaMissing"
    )
    message = condition(cluster, "Degraded")["message"]
    assert message.startswith("autoscaling driver keda (spec.autoscaling.driver), but this")
    assert "keda.sh/v1alpha1" in message and "spec.autoscaling.driver: hpa" in message
    await cluster.wait_until(
        lambda: ("Warning", "KedaMissing", message) in events(cluster), "the Warning event"
    )
    mark = cluster.request_count()
    await asyncio.sleep(3)
    retries = [c for c in cluster.calls(mark) if c.resource == "secrets"]
    assert 1 <= len(retries) <= 2  # retried after 2 s, then 4 s: backoff, not a crash loop
    assert live(cluster, AUTOSCALERS) is not None, "the HPA stays until KEDA can take over"
    await cluster.patch(
        RERANKERS, NAMESPACE, "ranker", {"spec": {"autoscaling": {"driver": "hpa"}}}
    )
    await cluster.wait_until(
        lambda: condition(cluster, "Degraded").get("status") == "False", "recovered"
    )


async def test_the_operators_default_keda_where_it_is_absent_says_where_it_comes_from(
    tmp_path: Path,
) -> None:
    async with emulated_cluster(tmp_path) as cluster:
        await cluster.create(SECRETS, NAMESPACE, jwt_secret())
        await cluster.start_operator(
            OperatorSettings(liveness_port=0, json_logs=False, autoscaling_driver="keda")
        )
        await cluster.create(RERANKERS, NAMESPACE, reranker())
        await cluster.wait_until(
            lambda: condition(cluster, "Degraded").get("reason") == "KedaMissing", "KedaMissing"
        )
        message = condition(cluster, "Degraded")["message"]
        assert "the operator's default, KUBERANK_OPERATOR_AUTOSCALING_DRIVER" in message
        assert not cluster.objects(DEPLOYMENTS, NAMESPACE), "nothing half-applied"
