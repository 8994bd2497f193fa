"""The KEDA ScaledObject (keda.sh/v1alpha1) scaling the Deployment (driver keda).

KEDA makes and owns an HPA from it (named `keda_hpa_name`), fed by one Prometheus trigger per
metric of kuberank_operator.autoscaling_metrics: the per-pod values of this service's pods,
summed, against the per-pod target as an AverageValue, so the HPA's arithmetic is that of the
hpa driver on the same numbers. No series at all (no pod scraped yet) reads 0 (KEDA's
ignoreNullValues, on by default): the HPA then keeps minReplicaCount.
"""

from __future__ import annotations

from typing import Any

from kuberank_contract import LABEL_MANAGED_BY
from kuberank_operator.autoscaling_metrics import GPU_UTILIZATION, REQUESTS_IN_PROGRESS, PodMetric
from kuberank_operator.builders.common import Owner, metadata
from kuberank_operator.settings import OperatorSettings
from kuberank_operator.spec import RerankerSpec

# KEDA copies the ScaledObject's labels onto its HPA but for those this annotation lists: the
# HPA is KEDA's, so it says `managed-by: keda-operator`, while keeping our name and instance
# labels (kube-state-metrics and the alerts find it by them).
HPA_EXCLUDED_LABELS_ANNOTATION = "scaledobject.keda.sh/hpa-excluded-labels"


def keda_hpa_name(service: str) -> str:
    """The HPA KEDA makes for a ScaledObject that names none (KEDA's getDefaultHpaName)."""
    return f"keda-hpa-{service}"


def _trigger(
    metric: PodMetric, target: int, owner: Owner, settings: OperatorSettings
) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "type": "prometheus",
        "name": metric.name.removeprefix("kuberank_").replace("_", "-"),
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": settings.keda_prometheus_url,
            "query": metric.keda_query(owner.namespace, owner.name),
            "threshold": str(target),
        },
    }
    if settings.keda_authentication_name:
        trigger["authenticationRef"] = {
            "name": settings.keda_authentication_name,
            "kind": settings.keda_authentication_kind,
        }
    return trigger


def build_scaled_object(
    owner: Owner, spec: RerankerSpec, settings: OperatorSettings
) -> dict[str, Any]:
    scaling = spec.autoscaling
    triggers = []
    if spec.resources.gpu > 0:
        triggers.append(_trigger(GPU_UTILIZATION, scaling.target_gpu_utilization, owner, settings))
    if scaling.target_concurrency is not None:
        triggers.append(_trigger(REQUESTS_IN_PROGRESS, scaling.target_concurrency, owner, settings))
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(owner, annotations={HPA_EXCLUDED_LABELS_ANNOTATION: LABEL_MANAGED_BY}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds
                        }
                    }
                }
            },
            "triggers": triggers,
        },
    }
