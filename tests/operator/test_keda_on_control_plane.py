"""Driver keda on the real control plane: KEDA's own CRD (tests/operator/keda/, copied from its
Go module by scripts.upstream_crds) installed on the real API server, which then validates every
ScaledObject the operator writes with KEDA's schema and CEL rules, and prunes what KEDA does not
know; drift is put back by server-side apply like any other child. No KEDA operator runs here:
the ScaledObjects make no HPA (the benchmark runs the real one).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from scripts.control_plane.cluster import ControlPlane
from scripts.upstream_crds import KEDA
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
    cp.kubectl("apply", "--server-side", "-f", str(KEDA.copy))
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


WATCHED = {"hpa": AUTOSCALERS, "scaledobject": SCALED_OBJECTS, "deployment": DEPLOYMENTS}


@dataclass
class Timeline:
    """Every change of the namespace's HPAs, ScaledObjects and Deployments, from API watches,
    in etcd's order (resourceVersion is etcd's revision, one sequence for all resources here)."""

    initial: dict[str, dict[str, dict[str, Any]]]
    events: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # a watch that ended early, and why

    def states(self) -> list[dict[str, Any]]:
        """The namespace after each event: each HPA's controller kind (None: no owner), the
        ScaledObjects, the Deployment's spec.replicas."""
        objects = {kind: dict(items) for kind, items in self.initial.items()}
        states = [self._state(objects)]
        for _, kind, event_type, obj in sorted(self.events, key=lambda e: e[0]):
            name = obj["metadata"]["name"]
            if event_type == "DELETED":
                objects[kind].pop(name, None)
            else:
                objects[kind][name] = obj
            states.append(self._state(objects))
        return states

    @staticmethod
    def _state(objects: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
        def controller(hpa: dict[str, Any]) -> str | None:
            refs = hpa["metadata"].get("ownerReferences") or []
            return next((r["kind"] for r in refs if r.get("controller")), None)

        return {
            "hpas": {name: controller(hpa) for name, hpa in objects["hpa"].items()},
            "scaledobjects": sorted(objects["scaledobject"]),
            "replicas": {n: d["spec"].get("replicas") for n, d in objects["deployment"].items()},
        }


@contextlib.contextmanager
def watched(kube: Cluster) -> Iterator[Timeline]:
    """Watch the namespace's autoscalers and Deployments while the block runs."""
    initial: dict[str, dict[str, dict[str, Any]]] = {}
    versions = {}
    for kind, resource in WATCHED.items():
        listing = kube.http.get(kube.path(resource)).json()
        initial[kind] = {o["metadata"]["name"]: o for o in listing["items"]}
        versions[kind] = listing["metadata"]["resourceVersion"]
    timeline = Timeline(initial)
    stop = threading.Event()

    def watch(kind: str, resource: Any) -> None:
        params = {"watch": "1", "resourceVersion": versions[kind], "timeoutSeconds": "600"}
        try:
            with (
                kube.cp.client(timeout=httpx.Timeout(5, read=None)) as http,
                http.stream("GET", kube.path(resource), params=params) as stream,
            ):
                for line in stream.iter_lines():
                    if stop.is_set():
                        return
                    event = json.loads(line)
                    obj = event["object"]
                    version = int(obj["metadata"]["resourceVersion"])
                    timeline.events.append((version, kind, event["type"], obj))
        except httpx.HTTPError as exc:
            if not stop.is_set():
                timeline.broken.append(f"{kind}: {exc!r}")
        if not stop.is_set():
            timeline.broken.append(f"{kind}: the watch ended")

    threads = [threading.Thread(target=watch, args=item, daemon=True) for item in WATCHED.items()]
    for thread in threads:
        thread.start()
    try:
        yield timeline
    finally:
        time.sleep(1)  # the last events on their way
        stop.set()


def hpa_controller(kube: Cluster) -> str | None:
    hpa = kube.get(AUTOSCALERS, "ranker")
    assert hpa is not None
    refs = hpa["metadata"].get("ownerReferences") or []
    return next((r["kind"] for r in refs if r.get("controller")), None)


def keda_takes_the_hpa_over(kube: Cluster) -> None:
    """STAND-IN for KEDA's operator (its updateHPAIfNeeded, v2.21.0): the ScaledObject names
    an HPA that exists, so KEDA replaces it (an update with no resourceVersion) by its own:
    owned by the ScaledObject, its labels (ours copied but managed-by), the ScaledObject's
    annotations, External metrics served by KEDA's metrics server."""
    scaled = kube.get(SCALED_OBJECTS, "ranker")
    assert scaled is not None
    meta = scaled["metadata"]
    excluded = meta["annotations"]["scaledobject.keda.sh/hpa-excluded-labels"].split(",")
    labels = {
        "app.kubernetes.io/name": "ranker",
        "app.kubernetes.io/version": KEDA.version.removeprefix("v"),
        "app.kubernetes.io/part-of": "ranker",
        "app.kubernetes.io/managed-by": "keda-operator",
        **{k: v for k, v in meta["labels"].items() if k not in excluded},
    }
    metrics = [
        {
            "type": "External",
            "external": {
                "metric": {
                    "name": f"s{i}-prometheus",
                    "selector": {"matchLabels": {"scaledobject.keda.sh/name": "ranker"}},
                },
                "target": {
                    "type": "AverageValue",
                    "averageValue": trigger["metadata"]["threshold"],
                },
            },
        }
        for i, trigger in enumerate(scaled["spec"]["triggers"])
    ]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "ranker",
            "namespace": kube.namespace,
            "labels": labels,
            "annotations": meta["annotations"],
            "ownerReferences": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "name": "ranker",
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ranker"},
            "minReplicas": scaled["spec"]["minReplicaCount"],
            "maxReplicas": scaled["spec"]["maxReplicaCount"],
            "metrics": metrics,
            "behavior": scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }
    response = kube.http.put(
        kube.path(AUTOSCALERS, "ranker"), json=hpa, params={"fieldManager": "keda"}
    )
    response.raise_for_status()


def test_switching_drivers_hands_one_hpa_over_and_never_moves_the_replicas(
    keda_api: ControlPlane, kube: Cluster
) -> None:
    kube.operator.start()
    kube.create(RERANKERS, reranker(autoscaling={"driver": "hpa"}))
    kube.wait_until(lambda: kube.get(AUTOSCALERS, "ranker"), "the HPA")
    # What the HPA controller would have done under load: two replicas.
    kube.patch(
        DEPLOYMENTS,
        "ranker",
        {"spec": {"replicas": 2}},
        manager="horizontal-pod-autoscaler",
        sub="scale",
    )
    settle(kube)
    mark = kube.audit.mark()
    with watched(kube) as timeline:
        kube.patch(RERANKERS, "ranker", {"spec": {"autoscaling": {"driver": "keda"}}})
        kube.wait_until(lambda: scaled_object(kube, "ranker"), "the ScaledObject")
        settle(kube)
        # Until KEDA takes it, our HPA keeps scaling: the operator neither removes nor edits it.
        assert hpa_controller(kube) == "RerankerService"
        keda_takes_the_hpa_over(kube)
        settle(kube)
        assert hpa_controller(kube) == "ScaledObject"
        kube.patch(RERANKERS, "ranker", {"spec": {"autoscaling": {"driver": "hpa"}}})
        kube.wait_until(lambda: scaled_object(kube, "ranker") is None, "the ScaledObject gone")
        kube.wait_until(lambda: hpa_controller(kube) == "RerankerService", "the HPA ours again")
        settle(kube)
    assert timeline.broken == []
    states = timeline.states()
    controllers = [state["hpas"].get("ranker", "absent") for state in states]
    changes = [c for i, c in enumerate(controllers) if i == 0 or c != controllers[i - 1]]
    print(f"{len(timeline.events)} watch events; the HPA's controller: {changes}")
    assert all(len(state["hpas"]) == 1 for state in states), [s["hpas"] for s in states]
    assert changes == ["RerankerService", "ScaledObject", None, "RerankerService"]
    assert {state["replicas"]["ranker"] for state in states} == {2}
    hpa = kube.get(AUTOSCALERS, "ranker")
    assert hpa is not None
    assert hpa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kuberank-operator"
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods", "Pods"]
    hpa_writes = [
        (e.verb, e.resource)
        for e in kube.audit.operator_writes(mark)
        if e.resource in ("horizontalpodautoscalers", "scaledobjects", "deployments")
    ]
    # The ScaledObject made and deleted once, the HPA taken back once; no Deployment write.
    assert hpa_writes == [
        ("patch", "scaledobjects"),
        ("delete", "scaledobjects"),
        ("patch", "horizontalpodautoscalers"),
    ], hpa_writes
    events = {e["message"] for e in kube.list(EVENTS)}
    assert "Adopted HorizontalPodAutoscaler ranker" in events
    assert "Deleted HorizontalPodAutoscaler ranker" not in events
