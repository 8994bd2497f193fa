"""The RerankerService's status, computed from its children and its pods: conditions a person
can act on, and the Events that mark their transitions."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Why a pod does not serve, worst first: a service with several pods reports the worst.
UNSCHEDULABLE = "Unschedulable"
IMAGE_PULL_FAILED = "ImagePullFailed"
CRASH_LOOPING = "CrashLooping"
STARTING = "Starting"
POD_REASONS = (IMAGE_PULL_FAILED, CRASH_LOOPING, UNSCHEDULABLE, STARTING)
# The kubelet's waiting reasons for an image it cannot get.
IMAGE_PULL_WAITING = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
# Kubernetes keeps up to 4096 bytes of it; a condition message should stay readable.
TERMINATION_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class Problem:
    """Why the service is Degraded: a CamelCase reason and what to do about it."""

    reason: str
    message: str


@dataclass(frozen=True)
class PodReport:
    """What one server pod's status says about why it does not serve yet.

    Holds only facts that change when the pod does (no elapsed time), so an unchanged pod gives
    an equal report and nothing is recomputed or written for it.
    """

    name: str
    reason: str | None  # one of POD_REASONS; None once the pod is ready
    message: str = ""  # for Starting, the state it is in; the elapsed time is added later
    since: str | None = None  # Starting: when the wait began (RFC 3339)

    @property
    def is_problem(self) -> bool:
        return self.reason not in (None, STARTING)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _requested(pod: Mapping[str, Any]) -> str:
    """What the pod asked the scheduler for (limits stand for requests where these are unset,
    as Kubernetes defaults them; extended resources such as GPUs only have limits)."""
    asked: dict[str, str] = {}
    for container in pod.get("spec", {}).get("containers", []):
        resources = container.get("resources") or {}
        for name, value in {**resources.get("limits", {}), **resources.get("requests", {})}.items():
            asked[name] = str(value) if name not in asked else f"{asked[name]}+{value}"
    return ", ".join(f"{name}: {value}" for name, value in asked.items()) or "no resources"


def _memory_limit(pod: Mapping[str, Any], container_name: str) -> str | None:
    for container in pod.get("spec", {}).get("containers", []):
        if container.get("name") == container_name:
            return (container.get("resources") or {}).get("limits", {}).get("memory")
    return None


def _quoted(text: str) -> str:
    """A termination message on one line: what the server wrote whole (a start-up check's
    numbers), a long log tail as its head and its end (where the exception is)."""
    line = " ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    if len(line) <= TERMINATION_MESSAGE_CHARS:
        return line
    head = TERMINATION_MESSAGE_CHARS // 3
    return f"{line[:head]} … {line[-(TERMINATION_MESSAGE_CHARS - head) :]}"


def _crash_message(pod: Mapping[str, Any], name: str, container: Mapping[str, Any]) -> str:
    terminated = container.get("lastState", {}).get("terminated") or {}
    reason = terminated.get("reason") or "Error"
    restarts = int(container.get("restartCount") or 0)
    message = (
        f"container {container.get('name')} of pod {name} keeps crashing "
        f"({restarts} restart{'s' if restarts != 1 else ''}); last exit: {reason}, "
        f"exit code {terminated.get('exitCode', 'unknown')}"
    )
    if reason == "OOMKilled":
        limit = _memory_limit(pod, str(container.get("name")))
        message += (
            f", out of memory at its limit of {limit or 'unknown'}: raise spec.resources.memory, "
            "or lower spec.model.maxModelLen or spec.engine.maxNumSeqs"
        )
    last_words = _quoted(str(terminated.get("message") or ""))
    if last_words:
        message += f"; its last message: {last_words}"
    return message


def pod_report(pod: Mapping[str, Any]) -> PodReport | None:
    """Why this pod does not serve; None for a pod on its way out (deleted, finished), which
    its Deployment replaces and which says nothing about the service."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    name = str(meta.get("name", ""))
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    containers = status.get("containerStatuses", [])
    for container in containers:
        waiting = container.get("state", {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_WAITING:
            image = container.get("image") or "?"
            detail = waiting["reason"] + (
                f": {waiting['message']}" if waiting.get("message") else ""
            )
            return PodReport(
                name,
                IMAGE_PULL_FAILED,
                f"pod {name} cannot pull image {image}: {detail}; check spec.image, the "
                "registry and the pull secrets",
            )
    for container in containers:
        # Back-off or running again after a crash: still a crash loop until it turns ready
        # (a loop whose container runs for a while before failing would otherwise flap).
        if (
            not container.get("ready")
            and int(container.get("restartCount") or 0) > 0
            and container.get("lastState", {}).get("terminated")
        ):
            return PodReport(name, CRASH_LOOPING, _crash_message(pod, name, container))
    scheduled = conditions.get("PodScheduled", {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return PodReport(
            name,
            UNSCHEDULABLE,
            f"pod {name} cannot be scheduled: {scheduled.get('message') or 'no reason given'} "
            f"(it requests {_requested(pod)})",
        )
    if conditions.get("Ready", {}).get("status") == "True":
        return PodReport(name, None)
    running = [c["state"]["running"] for c in containers if c.get("state", {}).get("running")]
    waiting_reasons = [
        c["state"]["waiting"].get("reason", "waiting")
        for c in containers
        if c.get("state", {}).get("waiting")
    ]
    if running:
        state, since = "running, not ready yet", running[0].get("startedAt")
    elif waiting_reasons:
        state, since = waiting_reasons[0], status.get("startTime")
    else:
        state, since = "waiting for a node", None
    return PodReport(
        name, STARTING, state, since or status.get("startTime") or meta.get("creationTimestamp")
    )


def _elapsed(since: str | None, now: datetime.datetime) -> str:
    if not since:
        return "a moment"
    began = datetime.datetime.fromisoformat(since.replace("Z", "+00:00"))
    seconds = max(0, int((now - began).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass(frozen=True)
class PodDiagnosis:
    """The service-level summary of its pods: the worst pod's reason and message."""

    reason: str
    message: str
    is_problem: bool


def diagnose_pods(pods: Sequence[PodReport], now: datetime.datetime) -> PodDiagnosis | None:
    unready = sorted(
        (p for p in pods if p.reason), key=lambda p: (POD_REASONS.index(str(p.reason)), p.name)
    )
    if not unready:
        return None
    worst = unready[0]
    if worst.reason == STARTING:
        message = (
            f"pod {worst.name} starting for {_elapsed(worst.since, now)} ({worst.message}); "
            "a first start downloads the model weights"
        )
    else:
        message = worst.message
    if len(unready) > 1:
        message += f" (and {len(unready) - 1} more pod{'s' if len(unready) > 2 else ''} not ready)"
    return PodDiagnosis(str(worst.reason), message, worst.is_problem)


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


def status_view(child: dict[str, Any] | None) -> dict[str, Any] | None:
    """The parts of a Deployment or HPA that `compute_status` reads: what the operator keeps
    per service for pod events (a whole Deployment is some 30 kB in memory)."""
    if child is None:
        return None
    meta = child.get("metadata", {})
    return {
        "metadata": {"name": meta.get("name"), "generation": meta.get("generation")},
        "spec": {"minReplicas": child.get("spec", {}).get("minReplicas")},
        "status": child.get("status", {}),
    }


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
    pods: Sequence[PodReport] = (),
    now: datetime.datetime | None = None,
    min_replicas: int = 1,
) -> dict[str, Any]:
    """`wanted_replicas` is spec.replicas when autoscaling is off, else None (the HPA decides;
    `min_replicas` until it has said anything, e.g. before KEDA has made its HPA).

    `pods` are the service's pods; the worst reason one of them does not serve names the Ready
    condition's reason while replicas are missing (and always when it is a problem, such as a
    surge pod that finds no free GPU), and a problem makes the service Degraded.
    """
    conditions = previous.get("conditions") or []
    observed = (deployment or {}).get("status", {})
    replicas = int(observed.get("replicas") or 0)
    # The pod watch hears of a pod turning ready before the Deployment's status counts it.
    ready = max(int(observed.get("readyReplicas") or 0), sum(1 for p in pods if p.reason is None))
    updated = int(observed.get("updatedReplicas") or 0)
    if wanted_replicas is not None:
        desired = wanted_replicas
    else:
        hpa_status = (autoscaler or {}).get("status", {})
        hpa_spec = (autoscaler or {}).get("spec", {})
        desired = int(
            hpa_status.get("desiredReplicas") or hpa_spec.get("minReplicas") or min_replicas
        )
    diagnosis = diagnose_pods(pods, now or datetime.datetime.now(datetime.UTC))
    if diagnosis is not None and diagnosis.is_problem and problem is None:
        problem = Problem(diagnosis.reason, diagnosis.message)
    problem = problem or (_rollout_problem(deployment) if deployment else None)
    behind = (
        deployment is not None
        and deployment.get("metadata", {}).get("generation") is not None
        and observed.get("observedGeneration") != deployment["metadata"]["generation"]
    )
    rolling = behind or updated < desired or ready < desired or replicas > desired
    ready_message = f"{ready}/{desired} replicas ready"
    if diagnosis is not None and (diagnosis.is_problem or ready < desired):
        ready_reason, ready_detail = diagnosis.reason, f"; {diagnosis.message}"
    elif ready > 0:
        ready_reason, ready_detail = "ReplicasReady", ""
    elif desired == 0:
        ready_reason, ready_detail = "ScaledToZero", ""
    else:
        ready_reason, ready_detail = "NoReplicasReady", "; the first start loads the model weights"
    new_conditions = [
        _condition(
            conditions,
            "Ready",
            ready > 0,  # old pods keep serving through a stuck rollout
            ready_reason,
            ready_message + ready_detail,
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


@dataclass(frozen=True)
class Transition:
    """An Event to post on the RerankerService."""

    type: str  # Normal or Warning
    reason: str
    message: str


def transitions(before: dict[str, Any], after: dict[str, Any]) -> list[Transition]:
    """One Event per condition transition: Degraded turning True or changing its reason (or its
    message, for a problem in the spec), Recovered, and each change of Ready's status or reason.

    A message alone that changes for a pod problem posts nothing: a crash loop's restart count,
    the kubelet alternating ErrImagePull and ImagePullBackOff or the scheduler recounting its
    nodes would otherwise post an Event per retry.
    """
    events: list[Transition] = []
    old_degraded, new_degraded = condition_of(before, "Degraded"), condition_of(after, "Degraded")
    if new_degraded.get("status") == "True":
        reason = new_degraded["reason"]
        if (
            old_degraded.get("status") != "True"
            or old_degraded.get("reason") != reason
            or (
                reason not in POD_REASONS and old_degraded.get("message") != new_degraded["message"]
            )
        ):
            events.append(Transition("Warning", reason, new_degraded["message"]))
    elif old_degraded.get("status") == "True" and new_degraded.get("status") == "False":
        events.append(Transition("Normal", "Recovered", f"{old_degraded.get('reason')} resolved"))
    old_ready, new_ready = condition_of(before, "Ready"), condition_of(after, "Ready")
    # A first status with no ready pod and nothing known about them is no transition.
    was = (old_ready.get("status", "False"), old_ready.get("reason", "NoReplicasReady"))
    if new_ready and was != (new_ready["status"], new_ready["reason"]):
        # The Degraded Event just posted for the same pod problem says it already.
        if not any(event.reason == new_ready["reason"] for event in events):
            normal = new_ready["status"] == "True" or new_ready["reason"] in (
                STARTING,
                "ScaledToZero",
            )
            events.append(
                Transition(
                    "Normal" if normal else "Warning", new_ready["reason"], new_ready["message"]
                )
            )
    return events
