"""The KEDA ScaledObject (keda.sh/v1alpha1) scaling the Deployment (driver keda).

KEDA makes and owns an HPA from it, named as the hpa driver's HPA (the RerankerService's name),
fed by one Prometheus trigger per metric of kuberank_operator.autoscaling_metrics: the per-pod
values of this service's pods, summed, against the per-pod target as an AverageValue, so the
HPA's arithmetic is that of the hpa driver on the same numbers. No series at all (no pod
scraped yet) reads 0 (KEDA's ignoreNullValues, on by default): the HPA then keeps
minReplicaCount.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kuberank_contract import LABEL_INSTANCE, LABEL_MANAGED_BY
from kuberank_operator.autoscaling_metrics import (
    CONCURRENCY_METRIC_LABEL,
    GPU_UTILIZATION,
    REQUESTS_IN_PROGRESS,
    PodMetric,
    keda_metric_name,
)
from kuberank_operator.builders.common import Owner, metadata
from kuberank_operator.settings import OperatorSettings
from kuberank_operator.spec import RerankerSpec

# KEDA copies the ScaledObject's labels onto its HPA but for those this annotation lists: the
# HPA is KEDA's, so it says `managed-by: keda-operator`, while keeping our name and instance
# labels (kube-state-metrics and the alerts find it by them).
HPA_EXCLUDED_LABELS_ANNOTATION = "scaledobject.keda.sh/hpa-excluded-labels"
# KEDA's admission webhook refuses a ScaledObject for a Deployment that an HPA already scales,
# unless this says the ScaledObject takes that HPA over (the one it names, below).
TRANSFER_HPA_OWNERSHIP_ANNOTATION = "scaledobject.keda.sh/transfer-hpa-ownership"
# The managed-by label KEDA puts on the HPAs it makes or takes over.
KEDA_MANAGER = "keda-operator"


def is_kedas_hpa(hpa: Mapping[str, Any], service: str) -> bool:
    """Whether this HPA is the one KEDA made (or took over) for the ScaledObject of `service`."""
    meta = hpa.get("metadata", {})
    owners = meta.get("ownerReferences") or []
    return meta.get("name") == service and any(
        ref.get("kind") == "ScaledObject" and ref.get("name") == service for ref in owners
    )


def is_let_go_by_keda(hpa: Mapping[str, Any], service: str) -> bool:
    """Whether this HPA is KEDA's for `service`, left behind by its deleted ScaledObject (no
    owner any more): the hpa driver's to take back."""
    meta = hpa.get("metadata", {})
    labels = meta.get("labels") or {}
    return (
        meta.get("name") == service
        and not meta.get("ownerReferences")
        and labels.get(LABEL_INSTANCE) == service
        and labels.get(LABEL_MANAGED_BY) == KEDA_MANAGER
    )


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
    extra_labels = {}
    if scaling.target_concurrency is not None:
        extra_labels[CONCURRENCY_METRIC_LABEL] = keda_metric_name(len(triggers))
        triggers.append(_trigger(REQUESTS_IN_PROGRESS, scaling.target_concurrency, owner, settings))
    meta = metadata(
        owner,
        annotations={
            HPA_EXCLUDED_LABELS_ANNOTATION: LABEL_MANAGED_BY,
            TRANSFER_HPA_OWNERSHIP_ANNOTATION: "true",
        },
    )
    meta["labels"] |= extra_labels
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    # KEDA's HPA has the name of the hpa driver's: switching drivers hands one
                    # HPA over (KEDA updates ours in place; ours takes KEDA's back), so exactly
                    # one HPA scales the Deployment at every moment.
                    "name": owner.name,
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds
                        }
                    },
                }
            },
            "triggers": triggers,
        },
    }
