"""The operator chart's RBAC allows every API call the real operator makes, and nothing more.

The calls come from a recorded session: the real operator (Kopf) against kmock's API
emulator (tests/operator/harness.py) runs a RerankerService through its life: created with
a model cache and a ServiceMonitor, updated, autoscaling turned off, a child deleted behind
the operator's back, then deleted. Once watching every namespace (ClusterRole), once
watching one namespace (Role there, ClusterRole only for what has no namespace).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kmock._internal import parsing
from kmock._internal.parsing import ParsedPath
from tests.charts.rendering import OPERATOR_CHART, by_kind, render
from tests.operator.harness import (
    AUTOSCALERS,
    CLAIMS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    RERANKERS,
    SECRETS,
    SERVICE_MONITORS,
    SERVICES,
    ApiCall,
    EmulatedCluster,
    emulated_cluster,
)

from kuberank_operator.kube import Resource
from kuberank_operator.settings import OperatorSettings

pytestmark = pytest.mark.helm

NAMESPACE = "search"
Rule = dict[str, Any]
Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def _reranker() -> dict[str, Any]:
    return {
        "apiVersion": "kuberank.io/v1alpha1",
        "kind": "RerankerService",
        "metadata": {"name": "ranker"},
        "spec": {
            "model": {"name": "Qwen/Qwen3-Reranker-0.6B", "cache": {"size": "20Gi"}},
            "auth": {"secretRef": {"name": "rerank-jwt", "key": "secret"}},
            "monitoring": {"serviceMonitor": True},
            "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3},
        },
    }


def _spec_of(cluster: EmulatedCluster, resource: Resource) -> dict[str, Any]:
    return dict((cluster.objects(resource, NAMESPACE).get("ranker") or {}).get("spec") or {})


async def _life_of_a_reranker(
    cluster: EmulatedCluster, settings: OperatorSettings
) -> list[ApiCall]:
    """Every kind of write the operator has: create each child, patch each patchable one,
    delete each optional one, repair a deleted one, and let the owner go."""
    await cluster.create(
        SECRETS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "rerank-jwt"},
            "data": {"secret": "a2V5LWZvci10aGUtcmJhYy10ZXN0"},
        },
    )
    await cluster.start_operator(settings)
    await cluster.create(RERANKERS, NAMESPACE, _reranker())
    for child in (DEPLOYMENTS, SERVICES, AUTOSCALERS, DISRUPTION_BUDGETS, CLAIMS, SERVICE_MONITORS):
        await cluster.wait_for_object(child, NAMESPACE, "ranker")

    await cluster.patch(
        RERANKERS,
        NAMESPACE,
        "ranker",
        {
            "spec": {
                "model": {"name": "BAAI/bge-reranker-v2-m3"},
                "service": {"port": 8080},
                "autoscaling": {"maxReplicas": 5},
                "disruption": {"minAvailable": 0},
                "monitoring": {"interval": "30s"},
            }
        },
    )
    await cluster.wait_until(
        lambda: (
            "bge-reranker-v2-m3" in str(_spec_of(cluster, DEPLOYMENTS))
            and "8080" in str(_spec_of(cluster, SERVICES))
            and _spec_of(cluster, AUTOSCALERS).get("maxReplicas") == 5
            and _spec_of(cluster, DISRUPTION_BUDGETS).get("minAvailable") == 0
            and "30s" in str(_spec_of(cluster, SERVICE_MONITORS))
        ),
        "every child to follow the updated spec",
    )

    await cluster.patch(
        RERANKERS,
        NAMESPACE,
        "ranker",
        {
            "spec": {
                "model": {"cache": None},
                "autoscaling": {"enabled": False},
                "monitoring": {"serviceMonitor": False},
            }
        },
    )
    await cluster.wait_until(
        lambda: (
            not any(
                cluster.objects(optional, NAMESPACE).get("ranker")
                for optional in (AUTOSCALERS, CLAIMS, SERVICE_MONITORS)
            )
        ),
        "the autoscaler, cache claim and ServiceMonitor to be removed",
    )

    first_uid = cluster.objects(SERVICES, NAMESPACE)["ranker"]["metadata"]["uid"]
    await cluster.delete(SERVICES, NAMESPACE, "ranker")
    await cluster.wait_until(
        lambda: (
            (cluster.objects(SERVICES, NAMESPACE).get("ranker") or {})
            .get("metadata", {})
            .get("uid")
            not in (None, first_uid)
        ),
        "the deleted Service to be put back",
    )

    await cluster.delete(RERANKERS, NAMESPACE, "ranker")
    await cluster.wait_until(
        lambda: "ranker" not in cluster.objects(RERANKERS, NAMESPACE), "the RerankerService to go"
    )
    await cluster.stop_operator()
    return cluster.calls()


def _resource(call: ApiCall) -> str:
    return f"{call.resource}/{call.subresource}" if call.subresource else call.resource


def _grants(rules: list[Rule]) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _needed(calls: list[ApiCall]) -> set[Grant]:
    return {(call.api_group, _resource(call), call.verb) for call in calls}


def _rules(objects: list[dict[str, Any]], kind: str, namespace: str | None = None) -> list[Rule]:
    found = [
        obj
        for obj in by_kind(objects, kind)
        if namespace is None or obj["metadata"]["namespace"] == namespace
    ]
    assert len(found) == 1, f"expected one {kind} (namespace {namespace}), found {len(found)}"
    return list(found[0]["rules"])


def _no_wildcards(rules: list[Rule]) -> None:
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"


def _parse_path_with_namespace_list(
    original: Callable[[str], ParsedPath],
) -> Callable[[str], ParsedPath]:
    """kmock 0.8 fails on the namespace collection, `/api/v1/namespaces` (it reads the word as
    the start of a namespaced path), which Kopf lists and watches when given namespaces."""

    def parse_path(path: str) -> ParsedPath:
        if path.rstrip("/") == "/api/v1/namespaces":
            return ParsedPath(group="", version="v1", plural="namespaces")
        return original(path)

    return parse_path


@pytest.fixture
async def cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EmulatedCluster]:
    monkeypatch.setattr(parsing, "parse_path", _parse_path_with_namespace_list(parsing.parse_path))
    async with emulated_cluster(tmp_path, service_monitors=True) as emulated:
        await emulated._call(
            "POST",
            "/api/v1/namespaces",
            json={
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": NAMESPACE},
            },
        )
        yield emulated


async def test_cluster_role_allows_exactly_the_calls_of_an_operator_watching_all_namespaces(
    cluster: EmulatedCluster,
) -> None:
    calls = await _life_of_a_reranker(cluster, OperatorSettings(liveness_port=0, json_logs=False))
    objects = render(OPERATOR_CHART)
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    granted = _grants(_rules(objects, "ClusterRole"))
    _no_wildcards(_rules(objects, "ClusterRole"))

    needed = _needed(calls)
    assert needed - granted == set(), f"calls the ClusterRole does not allow: {needed - granted}"
    assert granted - needed == set(), f"grants no call needed: {granted - needed}"


async def test_namespaced_roles_allow_exactly_the_calls_of_an_operator_watching_one_namespace(
    cluster: EmulatedCluster,
) -> None:
    settings = OperatorSettings(liveness_port=0, json_logs=False, namespaces=[NAMESPACE])
    calls = await _life_of_a_reranker(cluster, settings)
    objects = render(OPERATOR_CHART, "--set", f"watchNamespaces={{{NAMESPACE}}}")
    role_rules = _rules(objects, "Role", NAMESPACE)
    cluster_rules = _rules(objects, "ClusterRole")
    _no_wildcards(role_rules + cluster_rules)
    binding = by_kind(objects, "RoleBinding")[0]
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": by_kind(objects, "Role")[0]["metadata"]["name"],
    }

    assert {call.namespace for call in calls} <= {NAMESPACE, ""}, (
        "calls outside the watched namespace"
    )
    in_namespace = _needed([call for call in calls if call.namespace == NAMESPACE])
    cluster_wide = _needed([call for call in calls if call.namespace == ""])
    role, cluster_role = _grants(role_rules), _grants(cluster_rules)

    assert in_namespace - (role | cluster_role) == set(), "namespaced calls not allowed"
    assert cluster_wide - cluster_role == set(), "cluster-wide calls the ClusterRole does not allow"
    assert role - in_namespace == set(), f"Role grants no call needed: {role - in_namespace}"
    assert cluster_role - cluster_wide == set(), (
        f"ClusterRole grants more than the cluster-wide calls: {cluster_role - cluster_wide}"
    )
