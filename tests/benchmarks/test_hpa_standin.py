"""The HPA stand-in against the Kubernetes documentation's algorithm and worked examples."""

from __future__ import annotations

import pytest
from benchmarks.hpa_standin import HorizontalPodAutoscaler, replicas_for_pods_metric


def pods(*values: float | None) -> dict[str, float | None]:
    return {f"pod-{i}": value for i, value in enumerate(values)}


@pytest.mark.parametrize(
    ("current", "values", "target", "expected"),
    [
        # The docs' examples: 200m against 100m doubles; 50m against 100m halves.
        (1, pods(200), 100, 2),
        (4, pods(50, 50, 50, 50), 100, 2),
        # ceil, never round: 4 pods at 17 in progress against 16 is outside the 10 % band
        # (ratio 1.0625 is inside it: no change); 4 at 18 (1.125) makes ceil(4.5) = 5.
        (4, pods(17, 17, 17, 17), 16, 4),
        (4, pods(18, 18, 18, 18), 16, 5),
        # within the tolerance downwards too: 0.91 keeps the count
        (2, pods(14.6, 14.6), 16, 2),
        (2, pods(14, 14), 16, 2),  # 0.875: outside the band, ceil(1.75) = 2 anyway
        (3, pods(4, 4, 4), 16, 1),
        # the average, not the sum and not the maximum
        (2, pods(30, 2), 16, 2),
        (1, pods(0), 16, 0),  # the caller's bounds then apply
    ],
)
def test_documented_formula_and_tolerance(
    current: int, values: dict[str, float | None], target: float, expected: int
) -> None:
    assert replicas_for_pods_metric(current, values, target) == expected


def test_pods_without_a_value_hold_back_the_change() -> None:
    # Scaling up, a starting pod counts as 0: one busy pod (48 against 16, ratio 3) and one
    # starting make ceil(48 / 2 / 16 * 2) = 3, not ceil(3 * 1) + the starter = 4.
    assert replicas_for_pods_metric(2, pods(48, None), 16) == 3
    # Scaling down, a starting pod counts as at the target: 1 and "16" average 8.5 -> 2 pods,
    # so no scale-down below the current 2 while one has not reported.
    assert replicas_for_pods_metric(2, pods(1, None), 16) == 2
    # ... and an assumption that reverses the direction drops the change: ratio 1.25 up, but
    # with the starting pod at 0 it is 0.625, down: keep 2.
    assert replicas_for_pods_metric(2, pods(20, None), 16) == 2
    # Nothing reported at all: keep the count.
    assert replicas_for_pods_metric(3, pods(None, None, None), 16) == 3


def test_bounds_largest_metric_and_scale_down_window() -> None:
    hpa = HorizontalPodAutoscaler(
        min_replicas=1,
        max_replicas=2,
        targets={"kuberank_requests_in_progress": 4, "kuberank_gpu_utilization": 70},
        scale_down_stabilization_seconds=30,
    )
    busy = {"kuberank_requests_in_progress": pods(12), "kuberank_gpu_utilization": pods(50)}
    assert hpa.desired_replicas(0, 1, busy) == 2  # ceil(3) capped at maxReplicas
    idle = {"kuberank_requests_in_progress": pods(1, 0), "kuberank_gpu_utilization": pods(5, 5)}
    # The window still holds the busy recommendation: no scale-down for 30 s.
    assert [hpa.desired_replicas(t, 2, idle) for t in (5, 15, 29)] == [2, 2, 2]
    assert hpa.desired_replicas(31, 2, idle) == 1
    # The largest of the metrics' proposals wins: GPU at 140 % of its target.
    gpu_bound = {"kuberank_requests_in_progress": pods(1), "kuberank_gpu_utilization": pods(98)}
    assert hpa.desired_replicas(40, 1, gpu_bound) == 2
    # A metric the HPA does not target is ignored; minReplicas holds.
    quiet = {"kuberank_requests_in_progress": pods(0, 0), "other": pods(100, 100)}
    fresh = HorizontalPodAutoscaler(1, 4, {"kuberank_requests_in_progress": 4}, 0)
    assert fresh.desired_replicas(0, 2, quiet) == 1
