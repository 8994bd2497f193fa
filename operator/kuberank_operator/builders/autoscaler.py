"""The HorizontalPodAutoscaler (autoscaling/v2) on the servers' Pods metrics (driver hpa): the
metrics prometheus-adapter publishes from the rules of kuberank_operator.autoscaling_metrics."""

from __future__ import annotations

from typing import Any

from kuberank_operator.autoscaling_metrics import GPU_UTILIZATION, REQUESTS_IN_PROGRESS
from kuberank_operator.builders.common import Owner, metadata
from kuberank_operator.spec import RerankerSpec


def _pods_metric(name: str, average: int) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": str(average)},
        },
    }


def build_autoscaler(owner: Owner, spec: RerankerSpec) -> dict[str, Any]:
    scaling = spec.autoscaling
    metrics = []
    if spec.resources.gpu > 0:
        metrics.append(_pods_metric(GPU_UTILIZATION.name, scaling.target_gpu_utilization))
    if scaling.target_concurrency is not None:
        metrics.append(_pods_metric(REQUESTS_IN_PROGRESS.name, scaling.target_concurrency))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds
                }
            },
        },
    }
