"""Full, level-triggered reconcile of one RerankerService (create, update, resume, resync)."""

from __future__ import annotations

from typing import Any

import kopf

from kuberank_operator.apply import ForeignChildError, converge
from kuberank_operator.builders import (
    CERTIFICATE,
    SERVICE_MONITOR,
    ChildKind,
    desired_children,
)
from kuberank_operator.handlers.common import (
    announce,
    backoff_seconds,
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
            desired = desired_children(
                owner,
                spec,
                runtime.settings,
                service_monitors=await runtime.serves(SERVICE_MONITOR),
                certificates=certificates,
            )
            children: dict[ChildKind, dict[str, Any] | None] = {}
            for kind, manifest in desired.items():
                live = await client.get(kind.resource, owner.namespace, owner.name)
                outcome, children[kind] = await converge(
                    client, kind, owner.namespace, owner.name, manifest, live, owner.uid
                )
                announce(body, kind, owner.name, outcome)
            pods = pods_of(pod_index, owner.namespace, owner.name)
            await publish_status(runtime, body, spec, children, pods)
        except ForeignChildError as exc:
            await report_problem(runtime, body, Problem("NameConflict", str(exc)))
            raise kopf.TemporaryError(str(exc), delay=backoff_seconds(retry)) from None
        except ApiError as exc:
            if not exc.transient:
                # Rejected by the API server (admission, quota, RBAC): tell the user, retry slowly.
                problem = Problem("ApiRejected", f"the API server refused a change: {exc}")
                await report_problem(runtime, body, problem)
            raise kopf.TemporaryError(str(exc), delay=backoff_seconds(retry)) from None
