"""The real operator (the `kuberank-operator` code path) against kmock's emulator over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
from tests.operator.conftest import NAMESPACE
from tests.operator.harness import (
    AUTOSCALERS,
    CLAIMS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    EVENTS,
    RERANKERS,
    SECRETS,
    SERVICE_MONITORS,
    SERVICES,
    ApiCall,
    EmulatedCluster,
    emulated_cluster,
    exercise_every_code_path,
    reranker,
)

CHILDREN = (DEPLOYMENTS, SERVICES, AUTOSCALERS, DISRUPTION_BUDGETS, SERVICE_MONITORS)
WRITES = {"create", "patch", "update", "delete"}


def status(cluster: EmulatedCluster, name: str = "ranker") -> dict[str, Any]:
    return dict(cluster.objects(RERANKERS, NAMESPACE).get(name, {}).get("status") or {})


def condition(cluster: EmulatedCluster, kind: str, name: str = "ranker") -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions", []) if c["type"] == kind), {})


def events(cluster: EmulatedCluster) -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["reason"], e["message"]) for e in cluster.objects(EVENTS, NAMESPACE).values()
    ]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def child_writes(cluster: EmulatedCluster, since: int) -> list[ApiCall]:
    return [
        c
        for c in cluster.calls(since)
        if c.verb in WRITES and c.api_group != "kuberank.io" and c.resource != "events"
    ]


async def settle(cluster: EmulatedCluster, quiet_seconds: float = 0.6, within: float = 15) -> None:
    """Wait until the operator has made no request for a while."""

    async def quiet() -> None:
        while True:
            before = cluster.request_count()
            await asyncio.sleep(quiet_seconds)
            if cluster.request_count() == before:
                return

    await asyncio.wait_for(quiet(), within)


async def created(cluster: EmulatedCluster, name: str = "ranker", **spec: Any) -> None:
    await cluster.create(RERANKERS, NAMESPACE, reranker(name, **spec))
    await cluster.wait_until(lambda: condition(cluster, "Degraded", name), f"status of {name}")
    await settle(cluster)


async def test_create_makes_every_child_and_a_status(cluster: EmulatedCluster) -> None:
    await created(cluster)
    for resource in CHILDREN:
        child = cluster.objects(resource, NAMESPACE)["ranker"]
        assert child["metadata"]["ownerReferences"][0]["kind"] == "RerankerService"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kuberank-operator"
    current = status(cluster)
    assert current["endpoint"] == f"http://ranker.{NAMESPACE}.svc:8000"
    assert (current["model"], current["observedGeneration"]) == ("Qwen/Qwen3-Reranker-0.6B", 1)
    assert (current["replicas"], current["readyReplicas"], current["desiredReplicas"]) == (0, 0, 1)
    assert condition(cluster, "Ready")["status"] == "False"
    assert condition(cluster, "Progressing")["status"] == "True"
    assert condition(cluster, "Degraded")["status"] == "False"
    created_events = {message for kind, reason, message in events(cluster) if reason == "Created"}
    assert created_events == {
        "Created Deployment ranker",
        "Created Service ranker",
        "Created HorizontalPodAutoscaler ranker",
        "Created PodDisruptionBudget ranker",
        "Created ServiceMonitor ranker",
    }


async def test_status_follows_the_deployment(cluster: EmulatedCluster) -> None:
    await created(cluster)
    ready_before = condition(cluster, "Ready")
    # Stand-in for the Deployment controller: the pod passed its readiness probe.
    await cluster.patch(
        DEPLOYMENTS,
        NAMESPACE,
        "ranker",
        {
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
            }
        },
        "status",
    )
    await cluster.wait_until(
        lambda: condition(cluster, "Ready").get("status") == "True", "Ready=True"
    )
    assert status(cluster)["readyReplicas"] == 1
    assert condition(cluster, "Progressing")["status"] == "False"
    assert condition(cluster, "Ready")["lastTransitionTime"] >= ready_before["lastTransitionTime"]
    await cluster.wait_until(
        lambda: ("Normal", "ReplicasReady", "1/1 replicas ready") in events(cluster), "event"
    )
    # A rollout that cannot finish (e.g. an image that does not exist) is Degraded.
    await cluster.patch(
        DEPLOYMENTS,
        NAMESPACE,
        "ranker",
        {
            "status": {
                "readyReplicas": 0,
                "conditions": [
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ],
            }
        },
        "status",
    )
    await cluster.wait_until(
        lambda: condition(cluster, "Degraded").get("status") == "True", "Degraded"
    )
    assert condition(cluster, "Degraded")["reason"] == "RolloutStuck"
    assert "kubectl describe pods" in condition(cluster, "Degraded")["message"]


async def test_update_patches_the_deployment_and_leaves_the_hpa_its_replicas(
    cluster: EmulatedCluster,
) -> None:
    await created(cluster)
    # Stand-in for the HPA controller: it scaled the Deployment to 3.
    await cluster.patch(DEPLOYMENTS, NAMESPACE, "ranker", {"spec": {"replicas": 3}})
    await settle(cluster)
    mark = cluster.request_count()
    await cluster.patch(
        RERANKERS,
        NAMESPACE,
        "ranker",
        {"spec": {"model": {"name": "BAAI/bge-reranker-v2-m3"}, "replicas": 2}},
    )
    await cluster.wait_until(
        lambda: (
            env_of(cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"])["KUBERANK_MODEL"]
            == "BAAI/bge-reranker-v2-m3"
        ),
        "the new model in the Deployment",
    )
    await settle(cluster)
    deployment = cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"]
    assert deployment["spec"]["replicas"] == 3  # the HPA's, not spec.replicas
    assert child_writes(cluster, mark) == [ApiCall("patch", "apps", "deployments", "", NAMESPACE)]
    assert status(cluster)["model"] == "BAAI/bge-reranker-v2-m3"
    assert ("Normal", "Updated", "Updated Deployment ranker") in events(cluster)


async def test_deleted_or_edited_children_are_put_back(cluster: EmulatedCluster) -> None:
    await created(cluster)
    original_image = cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"]["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    await cluster.delete(SERVICES, NAMESPACE, "ranker")
    await cluster.wait_for_object(SERVICES, NAMESPACE, "ranker")
    await cluster.patch(
        DEPLOYMENTS,
        NAMESPACE,
        "ranker",
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "server", "image": "evil/miner:latest"}]}
                }
            }
        },
    )
    await cluster.wait_until(
        lambda: (
            cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"]["spec"]["template"]["spec"][
                "containers"
            ][0].get("image")
            == original_image
        ),
        "the Deployment's image put back",
    )
    await settle(cluster)
    assert len(cluster.objects(SERVICES, NAMESPACE)) == 1


async def test_autoscaling_off_removes_the_hpa_and_sets_replicas(cluster: EmulatedCluster) -> None:
    await created(cluster)
    await cluster.patch(
        RERANKERS, NAMESPACE, "ranker", {"spec": {"autoscaling": {"enabled": False}, "replicas": 2}}
    )
    await cluster.wait_until(
        lambda: "ranker" not in cluster.objects(AUTOSCALERS, NAMESPACE), "the HPA gone"
    )
    await cluster.wait_until(
        lambda: cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"]["spec"].get("replicas") == 2,
        "replicas: 2",
    )
    await settle(cluster)
    assert "ranker" not in cluster.objects(
        AUTOSCALERS, NAMESPACE
    )  # not re-created by its delete event
    assert status(cluster)["desiredReplicas"] == 2
    assert ("Normal", "Deleted", "Deleted HorizontalPodAutoscaler ranker") in events(cluster)


async def test_invalid_spec_is_degraded_with_an_event_and_no_retry_storm(
    cluster: EmulatedCluster,
) -> None:
    await cluster.create(
        RERANKERS, NAMESPACE, reranker("broken", autoscaling={"minReplicas": 5, "maxReplicas": 2})
    )
    await cluster.wait_until(
        lambda: condition(cluster, "Degraded", "broken").get("status") == "True", "Degraded"
    )
    degraded = condition(cluster, "Degraded", "broken")
    assert degraded["reason"] == "InvalidSpec"
    assert (
        degraded["message"]
        == "spec: autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"
    )
    await cluster.wait_until(
        lambda: ("Warning", "InvalidSpec", degraded["message"]) in events(cluster), "event"
    )
    await settle(cluster)
    mark = cluster.request_count()
    await asyncio.sleep(3)
    assert cluster.calls(mark) == []  # a permanent error: no retries until the spec changes
    assert all(not cluster.objects(r, NAMESPACE) for r in CHILDREN)  # nothing half-applied
    # Fixing the spec recovers.
    await cluster.patch(
        RERANKERS, NAMESPACE, "broken", {"spec": {"autoscaling": {"minReplicas": 1}}}
    )
    await cluster.wait_until(
        lambda: condition(cluster, "Degraded", "broken").get("status") == "False", "recovered"
    )
    assert "broken" in cluster.objects(DEPLOYMENTS, NAMESPACE)


async def test_two_gpus_reach_the_pods_and_a_conflicting_split_is_degraded_with_the_numbers(
    cluster: EmulatedCluster,
) -> None:
    await created(cluster, resources={"gpu": 2}, engine={"parallelism": "data"})
    env = env_of(cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"])
    assert (env["KUBERANK_GPUS"], env["KUBERANK_PARALLELISM"]) == ("2", "data")
    # The CRD's CEL rule refuses this; the emulator, like an old CRD, lets it through.
    await cluster.patch(
        RERANKERS,
        NAMESPACE,
        "ranker",
        {"spec": {"engine": {"extraArgs": ["--tensor-parallel-size", "4"]}}},
    )
    await cluster.wait_until(
        lambda: condition(cluster, "Degraded").get("status") == "True", "Degraded"
    )
    degraded = condition(cluster, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert degraded["message"].endswith(
        "engine.extraArgs has '--tensor-parallel-size 4' while the spec asks for"
        " resources.gpu: 2 with engine.parallelism: data"
    )
    await settle(cluster)
    # Nothing half-applied: the pods keep the split they had.
    env = env_of(cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"])
    assert (env["KUBERANK_GPUS"], "KUBERANK_ENGINE_EXTRA_ARGS" in env) == ("2", False)


async def test_missing_secret_is_degraded_then_converges_with_backoff(
    cluster: EmulatedCluster,
) -> None:
    spec = {"auth": {"secretRef": {"name": "not-yet"}}}
    await cluster.create(RERANKERS, NAMESPACE, reranker("waiting", **spec))
    await cluster.wait_until(
        lambda: condition(cluster, "Degraded", "waiting").get("reason") == "MissingSecret",
        "Degraded",
    )
    assert (
        "Secret 'not-yet' named in spec.auth.secretRef does not exist"
        in condition(cluster, "Degraded", "waiting")["message"]
    )
    mark = cluster.request_count()
    await asyncio.sleep(3)
    secret_reads = [c for c in cluster.calls(mark) if c.resource == "secrets"]
    assert 1 <= len(secret_reads) <= 2  # retried after 2 s, then 4 s: backoff, not a storm
    assert not cluster.objects(DEPLOYMENTS, NAMESPACE)
    await cluster.create(
        SECRETS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "not-yet"},
            "data": {"secret": "eA=="},
        },
    )
    await cluster.wait_for_object(DEPLOYMENTS, NAMESPACE, "waiting", within=30)
    await cluster.wait_until(
        lambda: condition(cluster, "Degraded", "waiting").get("status") == "False", "recovered"
    )


async def test_conflict_and_server_error_converge_without_duplicates(
    cluster: EmulatedCluster,
) -> None:
    # The 500 comes after the emulator stored the Deployment (an answer lost on the way back);
    # the 409 is a Service that already exists when the operator creates it.
    cluster.emulator["post", kmock.resource("apps", "v1", "deployments")][:1] << 500
    cluster.emulator["post", kmock.resource("", "v1", "services")][:1] << 409
    cluster.emulator["patch", kmock.resource("policy", "v1", "poddisruptionbudgets")][:1] << 500
    await cluster.create(RERANKERS, NAMESPACE, reranker())
    for resource in CHILDREN:
        await cluster.wait_for_object(resource, NAMESPACE, "ranker")
    await settle(cluster)
    assert condition(cluster, "Degraded")["status"] == "False"
    for resource in CHILDREN:
        assert list(cluster.objects(resource, NAMESPACE)) == ["ranker"]
    creates = [c for c in cluster.calls() if c.verb == "create" and c.resource == "deployments"]
    assert len(creates) == 1  # the retry found it and did not create a second


async def test_restart_writes_nothing_to_children_already_right(cluster: EmulatedCluster) -> None:
    await created(cluster)
    await created(
        cluster, "second", autoscaling={"enabled": False}, model={"name": "m", "cache": {}}
    )
    await cluster.stop_operator()
    mark = cluster.request_count()
    await cluster.start_operator()
    await cluster.wait_until(
        lambda: any(c.verb == "get" and c.resource == "deployments" for c in cluster.calls(mark)),
        "resume",
    )
    await settle(cluster)
    assert child_writes(cluster, mark) == []
    assert [c for c in cluster.calls(mark) if c.subresource == "status"] == []


async def test_no_service_monitor_api_no_service_monitor(tmp_path: Any) -> None:
    async with emulated_cluster(tmp_path, service_monitors=False) as cluster:
        await cluster.create(
            SECRETS,
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "rerank-jwt"},
                "data": {"secret": "eA=="},
            },
        )
        await cluster.start_operator()
        await created(cluster)
        assert "ranker" in cluster.objects(DEPLOYMENTS, NAMESPACE)
        assert condition(cluster, "Degraded")["status"] == "False"
        assert not [
            c for c in cluster.calls() if c.resource == "servicemonitors" and c.verb != "list"
        ]


async def test_the_api_calls_the_operator_needs(cluster: EmulatedCluster) -> None:
    """What the chart's RBAC must allow, no more (colleague D's chart test compares the two)."""
    await exercise_every_code_path(cluster, NAMESPACE)
    await settle(cluster)
    needed = {(c.api_group, c.resource, c.subresource): set() for c in cluster.calls()}
    for call in cluster.calls():
        needed[call.api_group, call.resource, call.subresource].add(call.verb)
    # Deployments, Services and PDBs always exist while their RerankerService does (garbage
    # collection removes them with it); a claim is patched only to grow.
    keep = {"get", "list", "watch", "create", "patch"}
    assert needed == {
        ("apiextensions.k8s.io", "customresourcedefinitions", ""): {"list", "watch"},
        ("kuberank.io", "rerankerservices", ""): {"list", "watch", "patch"},
        ("kuberank.io", "rerankerservices", "status"): {"patch"},
        ("", "secrets", ""): {"get"},
        ("", "events", ""): {"create"},
        ("apps", "deployments", ""): keep,
        ("", "services", ""): keep,
        ("policy", "poddisruptionbudgets", ""): keep,
        ("autoscaling", "horizontalpodautoscalers", ""): keep | {"delete"},
        ("monitoring.coreos.com", "servicemonitors", ""): keep | {"delete"},
        ("", "persistentvolumeclaims", ""): keep | {"delete"},
        ("cert-manager.io", "certificates", ""): keep | {"delete"},
        ("networking.k8s.io", "networkpolicies", ""): keep | {"delete"},
    }


async def test_the_cache_claim_only_grows(cluster: EmulatedCluster) -> None:
    cache = {"size": "20Gi", "storageClassName": "fast"}
    await created(cluster, model={"name": "m", "cache": cache})
    claim = cluster.objects(CLAIMS, NAMESPACE)["ranker"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    await cluster.patch(
        RERANKERS,
        NAMESPACE,
        "ranker",
        {"spec": {"model": {"cache": {"size": "40Gi", "storageClassName": "slow"}}}},
    )
    await cluster.wait_until(
        lambda: (
            cluster.objects(CLAIMS, NAMESPACE)["ranker"]["spec"]["resources"]["requests"]["storage"]
            == "40Gi"
        ),
        "the claim grown",
    )
    # A bound claim's class cannot change: it is not sent (the API server would refuse it).
    assert cluster.objects(CLAIMS, NAMESPACE)["ranker"]["spec"]["storageClassName"] == "fast"
