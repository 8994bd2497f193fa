"""The RerankerService's status, computed from its children: conditions a person can act on."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """Why the service is Degraded: a CamelCase reason and what to do about it."""

    reason: str
    message: str


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    previous: list[dict[str, Any]],
    kind: str,
    holds: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> dict[str, Any]:
    status = "True" if holds else "False"
    before = next((c for c in previous if c.get("type") == kind), {})
    # The transition time moves only when the status does.
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now_rfc3339(),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def _rollout_problem(deployment: dict[str, Any]) -> Problem | None:
    for condition in deployment.get("status", {}).get("conditions", []):
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return Problem(
                "RolloutStuck",
                "the server pods did not become ready in time; check `kubectl describe pods -l "
                f"app.kubernetes.io/instance={deployment['metadata']['name']}` for image pull, "
                "scheduling (no free GPU?) or start-up errors",
            )
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return Problem(
                "ReplicaFailure", f"pods cannot be created: {condition.get('message', '')}"
            )
    return None


def compute_status(
    *,
    previous: dict[str, Any],
    generation: int | None,
    model: str,
    endpoint: str,
    wanted_replicas: int | None,
    deployment: dict[str, Any] | None,
    autoscaler: dict[str, Any] | None,
    problem: Problem | None,
) -> dict[str, Any]:
    """`wanted_replicas` is spec.replicas when autoscaling is off, else None (the HPA decides)."""
    conditions = previous.get("conditions") or []
    observed = (deployment or {}).get("status", {})
    replicas = int(observed.get("replicas") or 0)
    ready = int(observed.get("readyReplicas") or 0)
    updated = int(observed.get("updatedReplicas") or 0)
    if wanted_replicas is not None:
        desired = wanted_replicas
    else:
        hpa_status = (autoscaler or {}).get("status", {})
        hpa_spec = (autoscaler or {}).get("spec", {})
        desired = int(hpa_status.get("desiredReplicas") or hpa_spec.get("minReplicas") or 1)
    problem = problem or (_rollout_problem(deployment) if deployment else None)
    behind = (
        deployment is not None
        and deployment.get("metadata", {}).get("generation") is not None
        and observed.get("observedGeneration") != deployment["metadata"]["generation"]
    )
    rolling = behind or updated < desired or ready < desired or replicas > desired
    ready_message = f"{ready}/{desired} replicas ready"
    new_conditions = [
        _condition(
            conditions,
            "Ready",
            ready > 0,  # old pods keep serving through a stuck rollout
            "ReplicasReady"
            if ready > 0
            else ("ScaledToZero" if desired == 0 else "NoReplicasReady"),
            ready_message + ("" if ready > 0 else "; the first start loads the model weights"),
            generation,
        ),
        _condition(
            conditions,
            "Progressing",
            rolling and problem is None,
            problem.reason if problem else ("RollingOut" if rolling else "Complete"),
            f"{updated}/{desired} replicas updated, {ready_message}",
            generation,
        ),
        _condition(
            conditions,
            "Degraded",
            problem is not None,
            problem.reason if problem else "AsExpected",
            problem.message if problem else "no problems found",
            generation,
        ),
    ]
    status: dict[str, Any] = {
        "conditions": new_conditions,
        "replicas": replicas,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "endpoint": endpoint,
        "model": model,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def condition_of(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def degraded_only(
    previous: dict[str, Any], problem: Problem, generation: int | None
) -> dict[str, Any]:
    """Status for a spec that cannot be reconciled: Degraded, the other conditions as they were."""
    conditions = [c for c in previous.get("conditions") or [] if c.get("type") != "Degraded"]
    conditions.append(
        _condition(
            previous.get("conditions") or [],
            "Degraded",
            True,
            problem.reason,
            problem.message,
            generation,
        )
    )
    status: dict[str, Any] = {"conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    return status
