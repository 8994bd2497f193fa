"""The real operator (the `kuberank-operator` code path) against kmock's emulator over HTTP.

What stays here is what a real control plane cannot produce here: answers lost or refused on
the way (injected 500 / 409), a spec the CRD's CEL rules would refuse (as under an old CRD),
pod states only a kubelet writes (image pulls, crash loops, start-up), a rollout past its
deadline, and the recorded calls the chart's RBAC is checked against. Creating, updating,
repairing, scaling and deleting children, the scheduler's Unschedulable and restarts are
shown on the real control plane (test_operator_on_control_plane.py, test_server_side_apply.py).
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kmock
import pytest
from tests.operator.conftest import NAMESPACE
from tests.operator.harness import (
    AUTOSCALERS,
    CLAIMS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    EVENTS,
    PODS,
    RERANKERS,
    SECRETS,
    SERVICE_MONITORS,
    SERVICES,
    TEST_USER_AGENT,
    ApiCall,
    EmulatedCluster,
    crash_looping,
    exercise_every_code_path,
    image_pull_failing,
    ready,
    reranker,
    server_pod,
    starting,
    unschedulable,
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


async def test_api_key_mode_mounts_the_key_secret_without_ever_reading_it(
    cluster: EmulatedCluster,
) -> None:
    """The key Secret reaches the pods as a volume; the operator makes no call for it (it does
    not even exist here), so it needs no RBAC beyond what JWT Secrets already take."""
    mark = cluster.request_count()
    auth = {"mode": "apiKey", "apiKeys": {"secretRef": {"name": "rerank-api-keys"}}}
    await created(cluster, "keyed", auth=auth)

    deployment = cluster.objects(DEPLOYMENTS, NAMESPACE)["keyed"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": "rerank-api-keys",
            "items": [{"key": "apikeys.json", "path": "apikeys.json"}]}} in volumes  # fmt: skip
    assert env_of(deployment)["KUBERANK_API_KEYS_FILE"] == "/etc/kuberank/api-keys/apikeys.json"
    assert condition(cluster, "Degraded", "keyed")["status"] == "False"
    assert [c for c in cluster.calls(mark) if c.resource == "secrets"] == []


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
        ("", "pods", ""): {"list", "watch"},
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


# ---- pods diagnosed in the status ---------------------------------------------------------
POD = "ranker-7c9d8f6b5-q2x4z"


async def pod_of_a_new_service(cluster: EmulatedCluster) -> str:
    """A RerankerService and one pod of its Deployment (the ReplicaSet's stand-in); its image."""
    await created(cluster)
    deployment = cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"]
    await cluster.create(PODS, NAMESPACE, server_pod(deployment, POD))
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


async def set_pod_status(cluster: EmulatedCluster, status: dict[str, Any]) -> None:
    await cluster.patch(PODS, NAMESPACE, POD, {"status": status}, "status")


async def wait_for_reason(cluster: EmulatedCluster, reason: str, within: float = 5) -> None:
    """ "Within one reconcile of the pod changing": seconds, not the Deployment's deadline."""
    await cluster.wait_until(
        lambda: condition(cluster, "Ready").get("reason") == reason,
        f"Ready reason {reason}",
        within,
    )


def now_rfc3339(seconds_ago: int = 0) -> str:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


POD_PROBLEMS = {
    "ImagePullFailed": (
        image_pull_failing,
        [
            f"pod {POD} cannot pull image {{image}}: ImagePullBackOff: Back-off pulling image "
            '"{image}"; check spec.image'
        ],
    ),
    "CrashLooping": (
        lambda image: crash_looping(image, message="torch.OutOfMemoryError: CUDA out of memory"),
        [
            f"container server of pod {POD} keeps crashing (3 restarts)",
            "last exit: OOMKilled, exit code 137",
            "out of memory at its limit of 16Gi: raise spec.resources.memory, or lower "
            "spec.model.maxModelLen or spec.engine.maxNumSeqs",
            "its last message: torch.OutOfMemoryError: CUDA out of memory",
        ],
    ),
}


@pytest.mark.parametrize("reason", sorted(POD_PROBLEMS))
async def test_a_pod_problem_is_degraded_with_its_cause_and_clears_when_the_pod_recovers(
    cluster: EmulatedCluster, reason: str
) -> None:
    image = await pod_of_a_new_service(cluster)
    make_status, phrases = POD_PROBLEMS[reason]
    await set_pod_status(cluster, make_status(image))
    await wait_for_reason(cluster, reason)
    ready_condition, degraded = condition(cluster, "Ready"), condition(cluster, "Degraded")
    assert ready_condition["status"] == "False"
    assert ready_condition["message"] == f"0/1 replicas ready; {degraded['message']}"
    assert (degraded["status"], degraded["reason"]) == ("True", reason)
    for phrase in phrases:
        assert phrase.format(image=image) in degraded["message"]
    assert degraded["observedGeneration"] == 1 and degraded["lastTransitionTime"]
    await cluster.wait_until(
        lambda: ("Warning", reason, degraded["message"]) in events(cluster), f"{reason} Event"
    )
    # The pod recovers (a node with a free GPU came, the image was fixed...): Ready again, as
    # soon as the pod says so (the Deployment's status follows later).
    await set_pod_status(cluster, ready(image))
    await wait_for_reason(cluster, "ReplicasReady")
    assert condition(cluster, "Ready")["status"] == "True"
    assert condition(cluster, "Degraded")["status"] == "False"
    await cluster.wait_until(
        lambda: ("Normal", "Recovered", f"{reason} resolved") in events(cluster), "Recovered"
    )
    await cluster.wait_until(
        lambda: ("Normal", "ReplicasReady", "1/1 replicas ready") in events(cluster), "Event"
    )


async def test_a_starting_pod_says_how_long_it_has_been_starting(cluster: EmulatedCluster) -> None:
    image = await pod_of_a_new_service(cluster)
    # Created and not scheduled yet, it is already starting; then it runs, not ready yet.
    await wait_for_reason(cluster, "Starting")
    assert "(waiting for a node)" in condition(cluster, "Ready")["message"]
    await set_pod_status(cluster, starting(image, now_rfc3339(seconds_ago=125)))
    await cluster.wait_until(
        lambda: "(running, not ready yet)" in condition(cluster, "Ready")["message"], "running", 5
    )
    message = condition(cluster, "Ready")["message"]
    assert message.startswith(f"0/1 replicas ready; pod {POD} starting for 2m0")
    assert "(running, not ready yet); a first start downloads the model weights" in message
    assert condition(cluster, "Degraded")["status"] == "False"  # starting is no problem
    # One Event for the transition to Starting, not one per message.
    await settle(cluster)
    starting_events = [e for e in events(cluster) if e[1] == "Starting"]
    assert len(starting_events) == 1 and "(waiting for a node)" in starting_events[0][2]
    await set_pod_status(cluster, ready(image))
    await wait_for_reason(cluster, "ReplicasReady")
    await cluster.wait_until(
        lambda: ("Normal", "ReplicasReady", "1/1 replicas ready") in events(cluster), "Event"
    )


async def test_unchanged_pods_post_no_events_and_write_no_status(cluster: EmulatedCluster) -> None:
    image = await pod_of_a_new_service(cluster)
    await set_pod_status(cluster, crash_looping(image, restarts=1))
    await wait_for_reason(cluster, "CrashLooping")
    await settle(cluster)
    posted = len(events(cluster))
    # Changes to the pod that the status does not show: no status write, no Event.
    mark = cluster.request_count()
    for index in range(10):
        await cluster.patch(
            PODS, NAMESPACE, POD, {"metadata": {"annotations": {"touched": str(index)}}}
        )
        await set_pod_status(cluster, crash_looping(image, restarts=1))
    await settle(cluster)
    assert [c for c in cluster.calls(mark) if c.resource in ("rerankerservices", "events")] == []
    # The kubelet restarts it ten more times, running it between back-offs: the status follows
    # the restart count, but the condition does not change, so no Event either.
    for restarts in range(2, 12):
        await set_pod_status(cluster, crash_looping(image, restarts=restarts, backing_off=False))
        await set_pod_status(cluster, crash_looping(image, restarts=restarts))
    await cluster.wait_until(
        lambda: "(11 restarts)" in condition(cluster, "Degraded").get("message", ""), "restarts"
    )
    await settle(cluster)
    assert len(events(cluster)) == posted
    assert condition(cluster, "Ready")["reason"] == "CrashLooping"


async def test_only_the_server_pods_are_watched(cluster: EmulatedCluster) -> None:
    await created(cluster)
    other = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ranker-lookalike",
            "labels": {"app.kubernetes.io/instance": "ranker"},
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": unschedulable("0/1 nodes are available"),
    }
    mark = cluster.request_count()
    await cluster.create(PODS, NAMESPACE, other)
    await settle(cluster)
    assert cluster.calls(mark) == []  # not even sent to the operator
    assert condition(cluster, "Ready")["reason"] == "NoReplicasReady"
    selectors = {
        request.params.get("labelSelector")
        for request in cluster.emulator
        if request.resource is not None
        and request.resource.plural == "pods"
        and request.headers.get("User-Agent") != TEST_USER_AGENT
    }
    assert selectors == {
        "app.kubernetes.io/name=kuberank-server,app.kubernetes.io/managed-by=kuberank-operator,"
        "app.kubernetes.io/instance"
    }
