"""A child changed or vanished: put it back if it drifted, and let the status follow it."""

from __future__ import annotations

import logging

import kopf

from kuberank_contract import LABEL_INSTANCE
from kuberank_operator.apply import ForeignChildError, converge, is_owned_by
from kuberank_operator.builders import (
    AUTOSCALER,
    DEPLOYMENT,
    SCALED_OBJECT,
    ChildKind,
    autoscaling_driver,
    deletion_propagation,
    desired_children,
)
from kuberank_operator.handlers.common import (
    announce,
    deciding_hpa,
    owner_of,
    pods_of,
    publish_status,
)
from kuberank_operator.kube import ApiError
from kuberank_operator.runtime import Runtime
from kuberank_operator.spec import InvalidSpecError, parse_spec
from kuberank_operator.status import PodReport

logger = logging.getLogger(__name__)


async def on_child_event(
    runtime: Runtime,
    kind: ChildKind,
    event_type: str | None,
    child: kopf.Body,
    parents: kopf.Index[tuple[str | None, str], kopf.Body],
    pod_index: kopf.Index[tuple[str | None, str], PodReport],
) -> None:
    meta = child.get("metadata", {})
    namespace, parent_name = meta.get("namespace"), meta.get("labels", {}).get(LABEL_INSTANCE)
    if not namespace or not parent_name:
        return
    async with runtime.lock(namespace, parent_name):
        # Read the parent inside the lock: a reconcile that just finished may have changed it.
        parent = next(iter(parents.get((namespace, parent_name), [])), None)
        if parent is None or not is_owned_by(dict(child), owner_of(parent).uid):
            return  # its RerankerService is gone (garbage collection follows) or it is not ours
        try:
            spec = parse_spec(dict(parent.get("spec") or {}))
        except InvalidSpecError:
            return  # the RerankerService's own handler reports it and leaves the children be
        owner = owner_of(parent)
        live = None if event_type == "DELETED" else dict(child)
        try:
            # An event of a child means its API is served.
            keda = kind is SCALED_OBJECT or await runtime.serves(SCALED_OBJECT)
            desired = desired_children(
                owner, spec, runtime.settings, service_monitors=True, certificates=True, keda=keda
            )
            if kind not in desired:
                return  # neither made nor removed now (KEDA's HPA, or KEDA asked for and absent)
            driver = autoscaling_driver(spec, runtime.settings, keda=keda)
            outcome, now = await converge(
                runtime.client,
                kind,
                namespace,
                parent_name,
                desired[kind],
                live,
                owner.uid,
                propagation=deletion_propagation(kind, driver),
            )
            announce(parent, kind, parent_name, outcome)
            if kind in (DEPLOYMENT, AUTOSCALER):
                children = {
                    DEPLOYMENT: now
                    if kind is DEPLOYMENT
                    else await runtime.client.get(DEPLOYMENT.resource, namespace, parent_name),
                    AUTOSCALER: now
                    if kind is AUTOSCALER and desired[kind] is not None
                    else await deciding_hpa(runtime.client, owner, driver),
                }
                pods = pods_of(pod_index, namespace, parent_name)
                await publish_status(runtime, parent, spec, children, pods)
        except (ApiError, ForeignChildError) as exc:
            # Child events are not retried; the periodic resync of the parent puts it right.
            logger.warning(
                "could not reconcile %s %s/%s: %s", kind.kind, namespace, parent_name, exc
            )
