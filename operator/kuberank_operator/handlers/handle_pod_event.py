"""A server pod changed: its RerankerService's status follows within this one event."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kuberank_contract import LABEL_INSTANCE
from kuberank_operator.builders import AUTOSCALER, DEPLOYMENT, ChildKind
from kuberank_operator.handlers.common import pods_of, publish_status
from kuberank_operator.kube import ApiError
from kuberank_operator.runtime import Runtime
from kuberank_operator.spec import InvalidSpecError, RerankerSpec, parse_spec
from kuberank_operator.status import PodReport

logger = logging.getLogger(__name__)


async def _read_children(
    runtime: Runtime, namespace: str, name: str, spec: RerankerSpec
) -> dict[ChildKind, dict[str, Any] | None]:
    """The Deployment and HPA, for a service whose status this process has not computed yet."""
    children: dict[ChildKind, dict[str, Any] | None] = {
        DEPLOYMENT: await runtime.client.get(DEPLOYMENT.resource, namespace, name),
        AUTOSCALER: None,
    }
    if spec.autoscaling.enabled:
        children[AUTOSCALER] = await runtime.client.get(AUTOSCALER.resource, namespace, name)
    return children


async def on_pod_event(
    runtime: Runtime,
    pod: kopf.Body,
    parents: kopf.Index[tuple[str | None, str], kopf.Body],
    pod_index: kopf.Index[tuple[str | None, str], PodReport],
) -> None:
    meta = pod.get("metadata", {})
    namespace, parent_name = meta.get("namespace"), meta.get("labels", {}).get(LABEL_INSTANCE)
    if not namespace or not parent_name:
        return
    key = (namespace, parent_name)
    if runtime.status_pods.get(key) == pods_of(pod_index, namespace, parent_name):
        return  # nothing the status shows changed (an annotation, a probe time, a resync)
    async with runtime.lock(namespace, parent_name):
        parent = next(iter(parents.get(key, [])), None)
        if parent is None:
            return  # no such RerankerService (yet): its own handlers will read the pod index
        try:
            spec = parse_spec(dict(parent.get("spec") or {}))
        except InvalidSpecError:
            return  # the RerankerService's own handler reports it
        try:
            children = runtime.status_children.get(key) or await _read_children(
                runtime, namespace, parent_name, spec
            )
            await publish_status(
                runtime, parent, spec, children, pods_of(pod_index, namespace, parent_name)
            )
        except ApiError as exc:
            # Pod events are not retried; the next pod change or the periodic resync puts it right.
            logger.warning("could not update the status of %s/%s: %s", namespace, parent_name, exc)
