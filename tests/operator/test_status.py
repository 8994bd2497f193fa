"""Status from the children: conditions, replica counts and when a transition time moves."""

from __future__ import annotations

from typing import Any

from kuberank_operator.status import Problem, compute_status, condition_of, degraded_only


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "ranker", "generation": 2},
        "status": {"observedGeneration": 2, **status},
    }


def status_of(**kwargs: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "previous": {},
        "generation": 3,
        "model": "m",
        "endpoint": "http://ranker.ns.svc:8000",
        "wanted_replicas": None,
        "deployment": None,
        "autoscaler": None,
        "problem": None,
    }
    return compute_status(**(arguments | kwargs))


def test_hpa_decides_the_desired_replicas() -> None:
    hpa = {"spec": {"minReplicas": 2}, "status": {"desiredReplicas": 3}}
    current = status_of(
        deployment=deployment(replicas=3, readyReplicas=3, updatedReplicas=3), autoscaler=hpa
    )
    assert (current["replicas"], current["readyReplicas"], current["desiredReplicas"]) == (3, 3, 3)
    assert condition_of(current, "Ready")["status"] == "True"
    assert condition_of(current, "Progressing")["reason"] == "Complete"
    assert condition_of(current, "Ready")["observedGeneration"] == 3


def test_a_stuck_rollout_is_degraded_while_old_pods_still_serve() -> None:
    stuck = deployment(
        replicas=2,
        readyReplicas=1,
        updatedReplicas=1,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    current = status_of(deployment=stuck, wanted_replicas=1)
    assert condition_of(current, "Ready")["status"] == "True"
    assert condition_of(current, "Degraded")["reason"] == "RolloutStuck"
    progressing = condition_of(current, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutStuck")


def test_quota_failures_name_the_cause() -> None:
    failing = deployment(
        conditions=[{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota: gpu"}]
    )
    degraded = condition_of(status_of(deployment=failing, wanted_replicas=1), "Degraded")
    assert degraded["message"] == "pods cannot be created: exceeded quota: gpu"


def test_transition_time_moves_only_with_the_status() -> None:
    first = status_of(deployment=deployment(), wanted_replicas=1)
    earlier = {
        **first,
        "conditions": [
            {**c, "lastTransitionTime": "2026-01-01T00:00:00Z"} for c in first["conditions"]
        ],
    }
    same = status_of(previous=earlier, deployment=deployment(), wanted_replicas=1)
    assert condition_of(same, "Ready")["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    ready = status_of(
        previous=earlier,
        deployment=deployment(readyReplicas=1, replicas=1, updatedReplicas=1),
        wanted_replicas=1,
    )
    assert condition_of(ready, "Ready")["lastTransitionTime"] != "2026-01-01T00:00:00Z"
    assert condition_of(ready, "Degraded")["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_a_problem_keeps_the_other_conditions() -> None:
    before = status_of(
        deployment=deployment(readyReplicas=1, replicas=1, updatedReplicas=1), wanted_replicas=1
    )
    after = degraded_only(before, Problem("InvalidSpec", "spec.replicas: must be >= 0"), 4)
    assert condition_of(after, "Ready") == condition_of(before, "Ready")
    degraded = condition_of(after, "Degraded")
    assert (degraded["status"], degraded["observedGeneration"]) == ("True", 4)
