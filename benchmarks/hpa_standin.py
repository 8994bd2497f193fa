"""Stand-in for the Kubernetes HorizontalPodAutoscaler's replica calculation (no cluster here).

It follows the controller's documented algorithm for a `Pods` metric with an `AverageValue`
target (kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale, "Algorithm
details"; pkg/controller/podautoscaler/replica_calculator.go):

    desiredReplicas = ceil(currentReplicas * currentMetricValue / desiredMetricValue)

where currentReplicas counts the pods that report the metric and currentMetricValue is their
average; no change while the ratio is within the tolerance (10 %, the controller's
`--horizontal-pod-autoscaler-tolerance`). Pods without a value yet are assumed at the target
when the ratio says scale down and at 0 when it says scale up, and a change that such an
assumption reverses is dropped. Several metrics: the largest proposal wins. A scale-down is
the highest recommendation of the stabilization window
(`behavior.scaleDown.stabilizationWindowSeconds`), and the result is kept within
[minReplicas, maxReplicas]. Not modelled:
CPU-resource readiness rules and the scale-up/scale-down rate policies (the default allows
doubling or +4 pods per 15 s, never the bound with a few replicas).

The autoscaling benchmark and tests/charts/test_prometheus_live.py use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_TOLERANCE = 0.1


def replicas_for_pods_metric(
    current_replicas: int,
    values: Mapping[str, float | None],
    target: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> int:
    """The replica count one Pods metric proposes; `values` maps each pod of the scale target
    to its metric value, or None when it reports none yet (starting)."""
    reported = {pod: value for pod, value in values.items() if value is not None}
    missing = [pod for pod, value in values.items() if value is None]
    if not reported:
        return current_replicas  # the controller cannot compute a ratio and keeps the count
    ratio = sum(reported.values()) / (len(reported) * target)
    if not missing:
        if abs(ratio - 1.0) <= tolerance:
            return current_replicas
        return math.ceil(ratio * len(reported))
    # Pods still starting: assume the value that holds the count back.
    assumed = target if ratio < 1.0 else 0.0
    total = sum(reported.values()) + assumed * len(missing)
    count = len(reported) + len(missing)
    new_ratio = total / (count * target)
    if abs(new_ratio - 1.0) <= tolerance or (ratio < 1.0) != (new_ratio < 1.0):
        return current_replicas
    proposal = math.ceil(new_ratio * count)
    if (new_ratio < 1.0 and proposal > current_replicas) or (
        new_ratio > 1.0 and proposal < current_replicas
    ):
        return current_replicas
    return proposal


@dataclass
class HorizontalPodAutoscaler:
    """One HPA: bounds, per-metric targets and the scale-down stabilization window."""

    min_replicas: int
    max_replicas: int
    targets: Mapping[str, float]  # metric name -> averageValue target
    scale_down_stabilization_seconds: float
    tolerance: float = DEFAULT_TOLERANCE
    _recommendations: list[tuple[float, int]] = field(default_factory=list)

    def desired_replicas(
        self,
        now: float,
        current_replicas: int,
        metrics: Mapping[str, Mapping[str, float | None]],
    ) -> int:
        """One reconcile: `metrics` maps each metric name to the pods' values."""
        proposals: Sequence[int] = [
            replicas_for_pods_metric(current_replicas, metrics[name], target, self.tolerance)
            for name, target in self.targets.items()
            if name in metrics
        ]
        proposal = max(proposals, default=current_replicas)
        # Scale-down stabilization (on the raw proposals, as the controller keeps them): the
        # highest recommendation within the window, this one included; scale-up is not
        # delayed (its default window is 0). Then the bounds.
        self._recommendations = [
            (at, replicas)
            for at, replicas in self._recommendations
            if now - at < self.scale_down_stabilization_seconds
        ]
        self._recommendations.append((now, proposal))
        if proposal < current_replicas:
            proposal = min(current_replicas, max(r for _, r in self._recommendations))
        return min(max(proposal, self.min_replicas), self.max_replicas)
