"""Full, level-triggered reconcile of one RerankerService (create, update, resume, resync)."""

from __future__ import annotations

from typing import Any

import kopf

from kuberank_operator.apply import ForeignChildError, converge
from kuberank_operator.builders import (
    AUTOSCALER,
    CERTIFICATE,
    SCALED_OBJECT,
    SERVICE_MONITOR,
    ChildKind,
    autoscaling_driver,
    deletion_propagation,
    desired_children,
)
from kuberank_operator.builders.scaled_object import is_kedas_hpa, is_let_go_by_keda
from kuberank_operator.handlers.common import (
    announce,
    backoff_seconds,
    deciding_hpa,
    missing_secrets,
    owner_of,
    pods_of,
    publish_status,
    report_problem,
)
from kuberank_operator.kube import ApiError
from kuberank_operator.runtime import Runtime
from kuberank_operator.spec import InvalidSpecError, parse_spec
from kuberank_operator.status import PodReport, Problem

CERT_MANAGER_MISSING = (
    "spec.tls.issuerRef needs cert-manager, but this cluster does not serve its API "
    "(cert-manager.io/v1 Certificates); install cert-manager, or name a kubernetes.io/tls "
    "Secret in spec.tls.secretName instead"
)
KEDA_MISSING = (
    "autoscaling driver keda ({source}), but this cluster does not serve KEDA's API "
    "(keda.sh/v1alpha1 ScaledObjects); install KEDA, or set spec.autoscaling.driver: hpa "
    "(an HPA on Pods metrics, which needs prometheus-adapter)"
)
# How often to look whether the deleted ScaledObject has let go of its HPA (the garbage
# collector's orphaning, within a second), when the hpa driver takes it over.
HANDOVER_POLL_SECONDS = 2.0


async def reconcile(
    runtime: Runtime,
    body: kopf.Body,
    retry: int,
    pod_index: kopf.Index[tuple[str | None, str], PodReport],
) -> None:
    owner = owner_of(body)
    client = runtime.client
    async with runtime.lock(owner.namespace, owner.name):
        try:
            spec = parse_spec(dict(body.get("spec") or {}))
        except InvalidSpecError as exc:
            await report_problem(runtime, body, Problem("InvalidSpec", str(exc)))
            # Nothing to retry until the spec changes (which calls the update handler).
            raise kopf.PermanentError(f"invalid spec: {exc}") from None
        try:
            problem = await missing_secrets(client, owner.namespace, spec)
            if problem is not None:
                await report_problem(runtime, body, problem)
                raise kopf.TemporaryError(problem.message, delay=backoff_seconds(retry))
            certificates = await runtime.serves(CERTIFICATE)
            if spec.tls is not None and spec.tls.issuer_ref is not None and not certificates:
                problem = Problem("CertManagerMissing", CERT_MANAGER_MISSING)
                await report_problem(runtime, body, problem)
                raise kopf.TemporaryError(problem.message, delay=backoff_seconds(retry))
            keda = await runtime.serves(SCALED_OBJECT)
            driver = autoscaling_driver(spec, runtime.settings, keda=keda)
            if driver == "keda" and not keda:
                source = (
                    "spec.autoscaling.driver"
                    if spec.autoscaling.driver
                    else "the operator's default, KUBERANK_OPERATOR_AUTOSCALING_DRIVER"
                )
                problem = Problem("KedaMissing", KEDA_MISSING.format(source=source))
                await report_problem(runtime, body, problem)
                raise kopf.TemporaryError(problem.message, delay=backoff_seconds(retry))
            desired = desired_children(
                owner,
                spec,
                runtime.settings,
                service_monitors=await runtime.serves(SERVICE_MONITOR),
                certificates=certificates,
                keda=keda,
            )
            children: dict[ChildKind, dict[str, Any] | None] = {}
            handing_over = False
            for kind, manifest in desired.items():
                live = await client.get(kind.resource, owner.namespace, owner.name)
                adopt = False
                if kind is AUTOSCALER and manifest is not None and live is not None:
                    if is_kedas_hpa(live, owner.name):
                        # Taking over from KEDA: its ScaledObject was just deleted leaving this
                        # HPA (Orphan); once the garbage collector has let go of it, it is ours.
                        handing_over, children[kind] = True, live
                        continue
                    adopt = is_let_go_by_keda(live, owner.name)
                outcome, children[kind] = await converge(
                    client,
                    kind,
                    owner.namespace,
                    owner.name,
                    manifest,
                    live,
                    owner.uid,
                    adopt=adopt,
                    propagation=deletion_propagation(kind, driver),
                )
                announce(body, kind, owner.name, outcome)
            pods = pods_of(pod_index, owner.namespace, owner.name)
            if driver == "keda":
                children[AUTOSCALER] = await deciding_hpa(client, owner, driver)
            await publish_status(runtime, body, spec, children, pods)
            if handing_over:
                raise kopf.TemporaryError(
                    f"waiting for the ScaledObject {owner.name} to let go of its HPA before the "
                    "hpa driver takes it over",
                    delay=HANDOVER_POLL_SECONDS,
                )
        except ForeignChildError as exc:
            await report_problem(runtime, body, Problem("NameConflict", str(exc)))
            raise kopf.TemporaryError(str(exc), delay=backoff_seconds(retry)) from None
        except ApiError as exc:
            if not exc.transient:
                # Rejected by the API server (admission, quota, RBAC): tell the user, retry slowly.
                problem = Problem("ApiRejected", f"the API server refused a change: {exc}")
                await report_problem(runtime, body, problem)
            raise kopf.TemporaryError(str(exc), delay=backoff_seconds(retry)) from None
