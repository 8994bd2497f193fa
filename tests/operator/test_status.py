"""Status from the children and pods: conditions, replica counts, pod diagnoses, when a transition
time moves, and which changes post an Event."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from tests.operator.harness import (
    crash_looping,
    image_pull_failing,
    ready,
    starting,
    unschedulable,
)

from kuberank_operator.status import (
    TERMINATION_MESSAGE_CHARS,
    PodDiagnosis,
    PodReport,
    Problem,
    Transition,
    compute_status,
    condition_of,
    degraded_only,
    diagnose_pods,
    pod_report,
    status_view,
    transitions,
)
from kuberank_server.engine.parallelism import ParallelismError, check_tensor_split


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


# ---- pods ------------------------------------------------------------------------------------
IMAGE = "ghcr.io/kuberank/kuberank-server:0.1.0"
NOW = datetime.datetime(2026, 1, 1, 0, 5, 10, tzinfo=datetime.UTC)


def pod(name: str = "ranker-abc", **status: Any) -> dict[str, Any]:
    resources = {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "server", "image": IMAGE, "resources": resources}]},
        "status": status,
    }


def report(name: str = "ranker-abc", **status: Any) -> PodReport:
    found = pod_report(pod(name, **status))
    assert found is not None
    return found


def test_an_unschedulable_pod_quotes_the_scheduler_and_what_it_asked_for() -> None:
    found = report(**unschedulable("0/4 nodes are available: 4 Insufficient nvidia.com/gpu."))
    assert found == PodReport(
        "ranker-abc",
        "Unschedulable",
        "pod ranker-abc cannot be scheduled: 0/4 nodes are available: 4 Insufficient "
        "nvidia.com/gpu. (it requests cpu: 4, memory: 16Gi, nvidia.com/gpu: 1)",
    )
    assert found.is_problem


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
def test_an_image_that_cannot_be_pulled_is_named_with_the_kubelets_reason(reason: str) -> None:
    found = report(**image_pull_failing(f"{IMAGE}-typo", reason))
    assert found.reason == "ImagePullFailed"
    assert found.message.startswith(f"pod ranker-abc cannot pull image {IMAGE}-typo: {reason}: ")
    assert f'"{IMAGE}-typo"' in found.message  # the kubelet's own message


def test_an_oom_killed_crash_loop_names_the_limit_and_what_to_lower() -> None:
    found = report(**crash_looping(IMAGE, restarts=4))
    assert found == PodReport(
        "ranker-abc",
        "CrashLooping",
        "container server of pod ranker-abc keeps crashing (4 restarts); last exit: OOMKilled, "
        "exit code 137, out of memory at its limit of 16Gi: raise spec.resources.memory, or "
        "lower spec.model.maxModelLen or spec.engine.maxNumSeqs",
    )
    # Running again between back-offs, it is still the same crash loop (no flapping).
    assert report(**crash_looping(IMAGE, restarts=4, backing_off=False)) == found


def test_a_crash_quotes_its_termination_message() -> None:
    # What the server writes when a start-up check fails: quoted whole, numbers included.
    with pytest.raises(ParallelismError) as raised:
        check_tensor_split("Qwen/Qwen3-Reranker-0.6B", 3, {"num_attention_heads": 16})
    written = f"the engine failed to start: {raised.value}"
    found = report(**crash_looping(IMAGE, reason="Error", exit_code=1, restarts=1, message=written))
    assert found.message == (
        "container server of pod ranker-abc keeps crashing (1 restart); last exit: Error, "
        f"exit code 1; its last message: {written}"
    )
    assert "16 attention heads are not divisible by 3" in found.message
    # A log tail (the kubelet's fallback) on one line; a long one keeps its end, the exception.
    tail = "INFO loading\nTraceback (most recent call last):\n  ...\nValueError: no model 'x'\n"
    found = report(**crash_looping(IMAGE, reason="Error", exit_code=1, message=tail))
    assert found.message.endswith(
        "its last message: INFO loading Traceback (most recent call last): ... ValueError: no "
        "model 'x'"
    )
    long = report(**crash_looping(IMAGE, reason="Error", message="x" * 3000 + "\nValueError: y"))
    last_words = long.message.split("its last message: ")[1]
    assert len(last_words) == TERMINATION_MESSAGE_CHARS + len(" … ")
    assert last_words.endswith("x ValueError: y")


def test_starting_pods_keep_when_they_started_and_ready_pods_report_nothing() -> None:
    assert report(**starting(IMAGE, "2026-01-01T00:03:00Z")) == PodReport(
        "ranker-abc", "Starting", "running, not ready yet", "2026-01-01T00:03:00Z"
    )
    assert report(phase="Pending") == PodReport(
        "ranker-abc", "Starting", "waiting for a node", "2026-01-01T00:00:00Z"
    )
    assert report(**ready(IMAGE)) == PodReport("ranker-abc", None)


def test_pods_on_their_way_out_say_nothing() -> None:
    leaving = pod(**crash_looping(IMAGE))
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:04:00Z"
    assert pod_report(leaving) is None
    assert pod_report(pod(phase="Failed", reason="Evicted")) is None


def test_the_worst_pod_speaks_for_the_service_with_a_count_of_the_others() -> None:
    pods = [
        report("a", **starting(IMAGE, "2026-01-01T00:03:00Z")),
        report("b", **unschedulable("0/1 nodes are available")),
        report("c", **crash_looping(IMAGE)),
        report("d", **ready(IMAGE)),
    ]
    found = diagnose_pods(pods, NOW)
    assert found is not None and found.reason == "CrashLooping"
    assert found.message.endswith("(and 2 more pods not ready)")
    only_starting = diagnose_pods(pods[:1], NOW)
    assert only_starting == PodDiagnosis(
        "Starting",
        "pod a starting for 2m10s (running, not ready yet); a first start downloads the model "
        "weights",
        is_problem=False,
    )
    assert diagnose_pods(pods[3:], NOW) is None


def test_pod_problems_name_the_ready_reason_and_make_the_service_degraded() -> None:
    stuck = report(**unschedulable("0/4 nodes are available: 4 Insufficient nvidia.com/gpu."))
    current = status_of(deployment=deployment(replicas=1), wanted_replicas=1, pods=[stuck], now=NOW)
    ready_condition, degraded = condition_of(current, "Ready"), condition_of(current, "Degraded")
    assert (ready_condition["status"], ready_condition["reason"]) == ("False", "Unschedulable")
    assert ready_condition["message"] == f"0/1 replicas ready; {stuck.message}"
    assert (degraded["status"], degraded["reason"], degraded["message"]) == (
        "True",
        "Unschedulable",
        stuck.message,
    )
    # A spec problem the operator found itself comes first.
    spec_problem = Problem("MissingSecret", "Secret 'x' is missing")
    current = status_of(wanted_replicas=1, pods=[stuck], problem=spec_problem, now=NOW)
    assert condition_of(current, "Degraded")["reason"] == "MissingSecret"


def test_a_surge_pod_starting_leaves_a_served_service_ready_but_a_stuck_one_shows() -> None:
    serving = deployment(replicas=2, readyReplicas=1, updatedReplicas=1)
    surge = report("new", **starting(IMAGE, "2026-01-01T00:03:00Z"))
    old = report("old", **ready(IMAGE))
    current = status_of(deployment=serving, wanted_replicas=1, pods=[old, surge], now=NOW)
    assert condition_of(current, "Ready")["reason"] == "ReplicasReady"
    assert condition_of(current, "Degraded")["status"] == "False"
    no_gpu = report("new", **unschedulable("0/4 nodes are available"))
    current = status_of(deployment=serving, wanted_replicas=1, pods=[old, no_gpu], now=NOW)
    ready_condition = condition_of(current, "Ready")
    assert (ready_condition["status"], ready_condition["reason"]) == ("True", "Unschedulable")
    assert condition_of(current, "Degraded")["status"] == "True"


def test_the_view_kept_for_pod_events_gives_the_same_status() -> None:
    live = deployment(replicas=2, readyReplicas=1, updatedReplicas=2) | {
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "server"}]}}}
    }
    hpa = {"spec": {"minReplicas": 2, "maxReplicas": 4}, "status": {"desiredReplicas": 2}}
    pods = [report("a", **ready(IMAGE)), report("b", **starting(IMAGE, "2026-01-01T00:04:00Z"))]
    whole = status_of(deployment=live, autoscaler=hpa, pods=pods, now=NOW)
    kept = status_of(deployment=status_view(live), autoscaler=status_view(hpa), pods=pods, now=NOW)

    def timeless(status: dict[str, Any]) -> dict[str, Any]:
        conditions = [{**c, "lastTransitionTime": None} for c in status["conditions"]]
        return status | {"conditions": conditions}

    assert timeless(kept) == timeless(whole)
    assert status_view(None) is None


def test_a_ready_pod_counts_before_the_deployment_does() -> None:
    lagging = deployment(replicas=1, readyReplicas=0, updatedReplicas=1)
    current = status_of(deployment=lagging, wanted_replicas=1, pods=[report(**ready(IMAGE))])
    assert (current["readyReplicas"], condition_of(current, "Ready")["status"]) == (1, "True")


# ---- Events ----------------------------------------------------------------------------------
def test_events_mark_transitions_only() -> None:
    image_pull = report(**image_pull_failing(IMAGE, "ErrImagePull"))
    back_off = report(**image_pull_failing(IMAGE, "ImagePullBackOff"))

    def with_pods(previous: dict[str, Any], *pods: PodReport) -> dict[str, Any]:
        return status_of(previous=previous, wanted_replicas=1, pods=list(pods), now=NOW)

    first = status_of(wanted_replicas=1, now=NOW)
    assert transitions({}, first) == []  # a new service with no pods yet: nothing happened
    pulling = with_pods(first, image_pull)
    assert transitions(first, pulling) == [
        Transition("Warning", "ImagePullFailed", image_pull.message)  # once, not also for Ready
    ]
    # The kubelet alternates between its two reasons: the message follows, no new Event.
    backing_off = with_pods(pulling, back_off)
    assert condition_of(backing_off, "Degraded")["message"] == back_off.message
    assert transitions(pulling, backing_off) == []
    running = with_pods(backing_off, report(**starting(IMAGE, "2026-01-01T00:04:00Z")))
    assert [(e.type, e.reason) for e in transitions(backing_off, running)] == [
        ("Normal", "Recovered"),
        ("Normal", "Starting"),
    ]
    assert (
        transitions(running, with_pods(running, report(**starting(IMAGE, "2026-01-01T00:04:00Z"))))
        == []
    )
    served = with_pods(running, report(**ready(IMAGE)))
    assert transitions(running, served) == [
        Transition("Normal", "ReplicasReady", "1/1 replicas ready")
    ]


def test_a_spec_problem_with_a_new_message_is_a_new_event() -> None:
    before = degraded_only({}, Problem("InvalidSpec", "spec.replicas: must be >= 0"), 1)
    after = degraded_only(before, Problem("InvalidSpec", "spec.engine.maxNumSeqs: must be >= 1"), 2)
    assert transitions(before, after) == [
        Transition("Warning", "InvalidSpec", "spec.engine.maxNumSeqs: must be >= 1")
    ]
