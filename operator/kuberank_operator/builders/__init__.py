"""Pure functions from a RerankerService spec to the manifests of its children."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kuberank_contract import AutoscalingDriver
from kuberank_operator.builders.autoscaler import build_autoscaler
from kuberank_operator.builders.cache import build_cache_claim
from kuberank_operator.builders.certificate import build_certificate
from kuberank_operator.builders.common import Owner
from kuberank_operator.builders.deployment import build_deployment
from kuberank_operator.builders.disruption import build_disruption_budget
from kuberank_operator.builders.monitoring import build_service_monitor
from kuberank_operator.builders.network_policy import build_network_policy
from kuberank_operator.builders.scaled_object import build_scaled_object
from kuberank_operator.builders.service import build_service
from kuberank_operator.kube import Resource
from kuberank_operator.settings import OperatorSettings
from kuberank_operator.spec import RerankerSpec


@dataclass(frozen=True)
class ChildKind:
    kind: str
    resource: Resource
    # Fields another controller takes over once we stop sending them (the HPA sets a
    # Deployment's replicas): not sent, and never a reason to apply on their own (the next
    # apply drops our claim to them).
    handed_over: tuple[tuple[str, ...], ...] = ()
    # The spec keys that may change after creation (None: all). A bound claim's spec is
    # immutable but for its size, which may grow where the StorageClass allows expansion.
    patchable_spec: tuple[str, ...] | None = None


DEPLOYMENT = ChildKind("Deployment", Resource("apps", "v1", "deployments"), (("spec", "replicas"),))
SERVICE = ChildKind("Service", Resource("", "v1", "services"))
AUTOSCALER = ChildKind(
    "HorizontalPodAutoscaler", Resource("autoscaling", "v2", "horizontalpodautoscalers")
)
SCALED_OBJECT = ChildKind("ScaledObject", Resource("keda.sh", "v1alpha1", "scaledobjects"))
DISRUPTION_BUDGET = ChildKind(
    "PodDisruptionBudget", Resource("policy", "v1", "poddisruptionbudgets")
)
CACHE_CLAIM = ChildKind(
    "PersistentVolumeClaim",
    Resource("", "v1", "persistentvolumeclaims"),
    patchable_spec=("resources",),
)
SERVICE_MONITOR = ChildKind(
    "ServiceMonitor", Resource("monitoring.coreos.com", "v1", "servicemonitors")
)
NETWORK_POLICY = ChildKind("NetworkPolicy", Resource("networking.k8s.io", "v1", "networkpolicies"))
CERTIFICATE = ChildKind("Certificate", Resource("cert-manager.io", "v1", "certificates"))

CHILD_KINDS = (
    NETWORK_POLICY,
    CERTIFICATE,
    CACHE_CLAIM,
    DEPLOYMENT,
    SERVICE,
    AUTOSCALER,
    SCALED_OBJECT,
    DISRUPTION_BUDGET,
    SERVICE_MONITOR,
)


def autoscaling_driver(
    spec: RerankerSpec, settings: OperatorSettings, *, keda: bool
) -> AutoscalingDriver | None:
    """The driver a RerankerService asks for (None: autoscaling off): its own, else the
    operator's default, where `auto` means keda when the cluster serves KEDA's API (`keda`)
    and hpa otherwise."""
    if not spec.autoscaling.enabled:
        return None
    wanted = spec.autoscaling.driver or settings.autoscaling_driver
    if wanted == "auto":
        return "keda" if keda else "hpa"
    return wanted


def _autoscalers(
    owner: Owner, spec: RerankerSpec, settings: OperatorSettings, keda: bool
) -> dict[ChildKind, dict[str, Any] | None]:
    """At most one autoscaler, and one HPA handed over when the driver changes, never two nor
    none: the ScaledObject names the hpa driver's HPA, so KEDA takes ours over in place (it is
    left out here: neither made nor removed, KEDA's to update); going back, the ScaledObject is
    deleted first, leaving its HPA behind (`deletion_propagation`) for ours to take back."""
    driver = autoscaling_driver(spec, settings, keda=keda)
    if driver == "keda" and not keda:
        return {}  # KEDA asked for and absent: the reconcile reports it; an HPA stays as it is
    if driver == "keda":
        return {SCALED_OBJECT: build_scaled_object(owner, spec, settings)}
    autoscalers: dict[ChildKind, dict[str, Any] | None] = {SCALED_OBJECT: None} if keda else {}
    autoscalers[AUTOSCALER] = build_autoscaler(owner, spec) if driver == "hpa" else None
    return autoscalers


def deletion_propagation(kind: ChildKind, driver: AutoscalingDriver | None) -> str:
    """How a child we remove goes: with what it owns (Background), but for a ScaledObject given
    up for the hpa driver, whose HPA stays (Orphan) for the operator to take back."""
    return "Orphan" if kind is SCALED_OBJECT and driver == "hpa" else "Background"


def desired_children(
    owner: Owner,
    spec: RerankerSpec,
    settings: OperatorSettings,
    *,
    service_monitors: bool,
    certificates: bool,
    keda: bool,
) -> dict[ChildKind, dict[str, Any] | None]:
    """Every child kind -> its manifest, or None where that child must not exist.

    `service_monitors`, `certificates` and `keda` tell whether the cluster serves the
    ServiceMonitor (prometheus-operator), Certificate (cert-manager) and ScaledObject (KEDA)
    APIs at all; without one, that child is left out of the result (neither made nor removed).
    A spec asking for KEDA where it is not served has neither autoscaler in the result (the
    reconcile reports it and applies nothing); driver keda has no HPA in it (KEDA's to update).
    """
    # In order of application: the NetworkPolicy and Certificate before the pods they guard.
    children: dict[ChildKind, dict[str, Any] | None] = {
        NETWORK_POLICY: build_network_policy(owner, spec.network) if spec.network else None,
    }
    if certificates:
        issuer = spec.tls.issuer_ref if spec.tls else None
        children[CERTIFICATE] = (
            build_certificate(owner, issuer, settings.cluster_domain) if issuer else None
        )
    children |= {
        CACHE_CLAIM: build_cache_claim(owner, spec.model.cache) if spec.model.cache else None,
        DEPLOYMENT: build_deployment(owner, spec, settings),
        SERVICE: build_service(owner, spec),
        **_autoscalers(owner, spec, settings, keda),
        DISRUPTION_BUDGET: build_disruption_budget(owner, spec),
    }
    if service_monitors:
        wanted = spec.monitoring.service_monitor
        children[SERVICE_MONITOR] = build_service_monitor(owner, spec) if wanted else None
    return children
