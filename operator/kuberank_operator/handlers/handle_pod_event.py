"""A server pod changed: its RerankerService's status follows within this one event."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kuberank_contract import LABEL_INSTANCE
from kuberank_operator.builders import (
    AUTOSCALER,
    DEPLOYMENT,
    SCALED_OBJECT,
    ChildKind,
    autoscaling_driver,
)
from kuberank_operator.builders.common import Owner
from kuberank_operator.handlers.common import deciding_hpa, owner_of, pods_of, publish_status
from kuberank_operator.kube import ApiError
from kuberank_operator.runtime import Runtime
from kuberank_operator.spec import InvalidSpecError, RerankerSpec, parse_spec
from kuberank_operator.status import PodReport

logger = logging.getLogger(__name__)


async def _read_children(
    runtime: Runtime, owner: Owner, spec: RerankerSpec
) -> dict[ChildKind, dict[str, Any] | None]:
    """The Deployment and the deciding HPA, for a service whose status this process has not
    computed yet."""
    keda = await runtime.serves(SCALED_OBJECT)
    driver = autoscaling_driver(spec, runtime.settings, keda=keda)
    return {
        DEPLOYMENT: await runtime.client.get(DEPLOYMENT.resource, owner.namespace, owner.name),
        AUTOSCALER: await deciding_hpa(runtime.client, owner, driver),
    }


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
                runtime, owner_of(parent), spec
            )
            await publish_status(
                runtime, parent, spec, children, pods_of(pod_index, namespace, parent_name)
            )
        except ApiError as exc:
            # Pod events are not retried; the next pod change or the periodic resync puts it right.
            logger.warning("could not update the status of %s/%s: %s", namespace, parent_name, exc)
