"""Steps shared by the RerankerService handlers and the child-event handlers."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kuberank_contract import AutoscalingDriver
from kuberank_operator import API_GROUP, API_VERSION, PLURAL
from kuberank_operator.apply import Outcome
from kuberank_operator.builders import AUTOSCALER, DEPLOYMENT, ChildKind
from kuberank_operator.builders.common import Owner
from kuberank_operator.builders.service import endpoint_url
from kuberank_operator.kube import KubeClient, Resource
from kuberank_operator.runtime import Runtime
from kuberank_operator.spec import RerankerSpec
from kuberank_operator.status import (
    PodReport,
    Problem,
    compute_status,
    degraded_only,
    status_view,
    transitions,
)

RERANKER_SERVICES = Resource(API_GROUP, API_VERSION, PLURAL)
MAX_BACKOFF_SECONDS = 300.0

logger = logging.getLogger(__name__)


def backoff_seconds(retry: int) -> float:
    """2 s, 4 s, 8 s ... up to 5 minutes: a broken spec never becomes a retry storm."""
    return min(2.0 * 2 ** min(retry, 16), MAX_BACKOFF_SECONDS)


def owner_of(body: kopf.Body) -> Owner:
    meta = body["metadata"]
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))


def announce(body: kopf.Body, kind: ChildKind, name: str, outcome: Outcome) -> None:
    """An Event on the RerankerService for every change made to a child."""
    if outcome is not Outcome.UNCHANGED:
        kopf.event(
            body, type="Normal", reason=outcome.value, message=f"{outcome.value} {kind.kind} {name}"
        )


async def missing_secrets(client: KubeClient, namespace: str, spec: RerankerSpec) -> Problem | None:
    """Every Secret key the pods will read must exist before anything is applied."""
    secrets = Resource("", "v1", "secrets")
    for field, ref in spec.referenced_secrets():
        secret = await client.get(secrets, namespace, ref.name)
        if secret is None:
            message = (
                f"Secret {ref.name!r} named in spec.{field} does not exist in namespace "
                f"{namespace!r}; create it"
            )
            return Problem("MissingSecret", message)
        if ref.key not in (secret.get("data") or {}) and ref.key not in (
            secret.get("stringData") or {}
        ):
            return Problem(
                "MissingSecret", f"Secret {ref.name!r} named in spec.{field} has no key {ref.key!r}"
            )
    return None


def previous_status(runtime: Runtime, body: kopf.Body) -> dict[str, Any]:
    """The status as we last wrote it; the body a handler got may predate our last write."""
    owner = owner_of(body)
    return runtime.statuses.get((owner.namespace, owner.name)) or dict(body.get("status") or {})


async def write_status(runtime: Runtime, body: kopf.Body, status: dict[str, Any]) -> None:
    """Patch the status subresource when something changed, with an Event per transition."""
    before = previous_status(runtime, body)
    if all(before.get(key) == value for key, value in status.items()):
        return
    owner = owner_of(body)
    await runtime.client.patch(
        RERANKER_SERVICES, owner.namespace, owner.name, {"status": status}, "status"
    )
    runtime.statuses[owner.namespace, owner.name] = {**before, **status}
    for event in transitions(before, status):
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


async def report_problem(runtime: Runtime, body: kopf.Body, problem: Problem) -> None:
    generation = body["metadata"].get("generation")
    previous = previous_status(runtime, body)
    await write_status(runtime, body, degraded_only(previous, problem, generation))


async def deciding_hpa(
    client: KubeClient, owner: Owner, driver: AutoscalingDriver | None
) -> dict[str, Any] | None:
    """The HPA deciding the replica count: ours (driver hpa), or the one KEDA makes for our
    ScaledObject (driver keda), both named after the service; None when autoscaling is off."""
    if driver is None:
        return None
    return await client.get(AUTOSCALER.resource, owner.namespace, owner.name)


def pods_of(
    index: kopf.Index[tuple[str | None, str], PodReport], namespace: str, name: str
) -> tuple[PodReport, ...]:
    """The reports of a RerankerService's pods (from the pod index), in a stable order."""
    return tuple(sorted(index.get((namespace, name), []), key=lambda pod: pod.name))


async def publish_status(
    runtime: Runtime,
    body: kopf.Body,
    spec: RerankerSpec,
    children: Mapping[ChildKind, dict[str, Any] | None],
    pods: tuple[PodReport, ...],
    problem: Problem | None = None,
) -> None:
    """`children`: the Deployment, and under AUTOSCALER the HPA deciding the replica count
    (`deciding_hpa`)."""
    owner = owner_of(body)
    key = (owner.namespace, owner.name)
    # What a pod event needs to recompute the status without reading the children again.
    runtime.status_children[key] = {
        kind: status_view(children.get(kind)) for kind in (DEPLOYMENT, AUTOSCALER)
    }
    runtime.status_pods[key] = pods
    status = compute_status(
        previous=previous_status(runtime, body),
        generation=body["metadata"].get("generation"),
        model=spec.model.name,
        endpoint=endpoint_url(owner, spec),
        wanted_replicas=None if spec.autoscaling.enabled else spec.replicas,
        deployment=children.get(DEPLOYMENT),
        autoscaler=children.get(AUTOSCALER),
        problem=problem,
        pods=pods,
        now=datetime.datetime.now(datetime.UTC),
        min_replicas=spec.autoscaling.min_replicas,
    )
    await write_status(runtime, body, status)
