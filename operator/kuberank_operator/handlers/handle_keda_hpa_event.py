"""The HPA KEDA made for one of our ScaledObjects changed: the status shows what it wants."""

from __future__ import annotations

import logging

import kopf

from kuberank_contract import LABEL_INSTANCE
from kuberank_operator.builders import AUTOSCALER, DEPLOYMENT, autoscaling_driver
from kuberank_operator.builders.scaled_object import is_kedas_hpa
from kuberank_operator.handlers.common import pods_of, publish_status
from kuberank_operator.kube import ApiError
from kuberank_operator.runtime import Runtime
from kuberank_operator.spec import InvalidSpecError, parse_spec
from kuberank_operator.status import PodReport

logger = logging.getLogger(__name__)


async def on_keda_hpa_event(
    runtime: Runtime,
    event_type: str | None,
    hpa: kopf.Body,
    parents: kopf.Index[tuple[str | None, str], kopf.Body],
    pod_index: kopf.Index[tuple[str | None, str], PodReport],
) -> None:
    meta = hpa.get("metadata", {})
    namespace, parent_name = meta.get("namespace"), meta.get("labels", {}).get(LABEL_INSTANCE)
    if not namespace or not parent_name or not is_kedas_hpa(hpa, parent_name):
        return
    async with runtime.lock(namespace, parent_name):
        parent = next(iter(parents.get((namespace, parent_name), [])), None)
        if parent is None:
            return
        try:
            spec = parse_spec(dict(parent.get("spec") or {}))
        except InvalidSpecError:
            return  # the RerankerService's own handler reports it
        try:
            if autoscaling_driver(spec, runtime.settings, keda=True) != "keda":
                return  # a KEDA HPA on its way out: ours decides now
            known = runtime.status_children.get((namespace, parent_name)) or {}
            deployment = known.get(DEPLOYMENT) or await runtime.client.get(
                DEPLOYMENT.resource, namespace, parent_name
            )
            children = {
                DEPLOYMENT: deployment,
                AUTOSCALER: None if event_type == "DELETED" else dict(hpa),
            }
            pods = pods_of(pod_index, namespace, parent_name)
            await publish_status(runtime, parent, spec, children, pods)
        except ApiError as exc:
            # Not retried; the next event or the periodic resync puts the status right.
            logger.warning("could not update the status of %s/%s: %s", namespace, parent_name, exc)
