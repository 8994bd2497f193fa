"""The operator chart's RBAC allows every API call the real operator makes, and nothing more.

The calls come from a recorded session: the real operator (Kopf) against kmock's API
emulator, driven through every code path it has by `exercise_every_code_path` (the same
scenario the operator tests run: create, grow the cache, update, turn features off, repair
a deleted child, report bad specs and missing Secrets, delete). Once watching every
namespace (ClusterRole), once watching one namespace (Role there, ClusterRole only for
what has no namespace). The real authorizer's word on the ClusterRole, from a session on a real
API server, is test_chart_on_control_plane.py's; the Role of `watchNamespaces` is only here.
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
    ApiCall,
    EmulatedCluster,
    emulated_cluster,
    exercise_every_code_path,
)

from kuberank_operator.settings import OperatorSettings

pytestmark = pytest.mark.helm

NAMESPACE = "search"
Rule = dict[str, Any]
Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


async def _life_of_a_reranker(
    cluster: EmulatedCluster, settings: OperatorSettings
) -> list[ApiCall]:
    """Every kind of call the operator makes, driven by the operator tests' own scenario."""
    await cluster.start_operator(settings)
    await exercise_every_code_path(cluster, NAMESPACE)
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
    async with emulated_cluster(tmp_path, service_monitors=True, keda=True) as emulated:
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
