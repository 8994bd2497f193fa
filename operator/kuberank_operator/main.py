"""Kopf handlers: thin decorators over `handlers/handle_*.py`. Importing this registers them."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kuberank_contract import LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, SERVER_APP_NAME
from kuberank_operator import API_GROUP, API_VERSION, FIELD_MANAGER, PLURAL
from kuberank_operator.builders import AUTOSCALER, CHILD_KINDS, ChildKind
from kuberank_operator.builders.scaled_object import KEDA_MANAGER
from kuberank_operator.handlers.handle_child_event import on_child_event
from kuberank_operator.handlers.handle_keda_hpa_event import on_keda_hpa_event
from kuberank_operator.handlers.handle_pod_event import on_pod_event
from kuberank_operator.handlers.handle_reconcile import reconcile
from kuberank_operator.runtime import Runtime
from kuberank_operator.status import PodReport, pod_report

RESYNC_SECONDS = 300.0
MANAGED = {LABEL_MANAGED_BY: FIELD_MANAGER}
# The server pods of every RerankerService (its Deployment's pod template labels).
SERVER_POD_LABELS = {LABEL_NAME: SERVER_APP_NAME, LABEL_MANAGED_BY: FIELD_MANAGER}
# The HPAs KEDA makes for our ScaledObjects: KEDA copies the ScaledObject's labels but
# managed-by (builders/scaled_object.py), and marks them as its own.
KEDA_HPA_LABELS = {LABEL_NAME: SERVER_APP_NAME, LABEL_MANAGED_BY: KEDA_MANAGER}
SERVER_POD_SELECTOR = ",".join(
    [f"{key}={value}" for key, value in SERVER_POD_LABELS.items()] + [LABEL_INSTANCE]
)


@kopf.on.startup()
def configure(*, settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf's bookkeeping goes to annotations: our status schema is closed (no status.kopf).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Only the server pods travel from the API server, not every pod of the cluster.
    settings.watching.label_selectors["v1", "pods"] = SERVER_POD_SELECTOR


@kopf.on.login()
def login(*, memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        memo.runtime.connect(info)
    return info


@kopf.on.cleanup()
async def close_client(*, memo: Any, **_: Any) -> None:
    await memo.runtime.close()


@kopf.index(API_GROUP, API_VERSION, PLURAL)
def rerankerservices_by_key(
    *, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], kopf.Body]:
    return {(namespace, name): body}


@kopf.index("v1", "pods", labels=SERVER_POD_LABELS)
def server_pods(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], PodReport]:
    """Each server pod's report, by its RerankerService: what the status needs, no more."""
    report = pod_report(body)
    instance = labels.get(LABEL_INSTANCE)
    return {(namespace, instance): report} if report is not None and instance else {}


@kopf.on.create(API_GROUP, API_VERSION, PLURAL, backoff=5)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, backoff=5)
@kopf.on.resume(API_GROUP, API_VERSION, PLURAL, backoff=5)
async def reconcile_on_change(*, memo: Any, body: kopf.Body, retry: int, **kwargs: Any) -> None:
    await reconcile(memo.runtime, body, retry, kwargs["server_pods"])


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(*, memo: Any, body: kopf.Body, **kwargs: Any) -> None:
    await reconcile(memo.runtime, body, int(kwargs.get("retry", 0)), kwargs["server_pods"])


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def forget_deleted(*, memo: Any, type: str, namespace: str | None, name: str, **_: Any) -> None:
    if type == "DELETED" and namespace:
        memo.runtime.forget(namespace, name)


def _watch_children(kind: ChildKind) -> None:
    resource = kind.resource

    @kopf.on.event(
        group=resource.group,
        version=resource.version,
        plural=resource.plural,
        labels=MANAGED,
        id=f"child-{resource.plural}",
    )
    async def child_changed(*, memo: Any, type: str, body: kopf.Body, **kwargs: Any) -> None:
        runtime: Runtime = memo.runtime
        await on_child_event(
            runtime, kind, type, body, kwargs["rerankerservices_by_key"], kwargs["server_pods"]
        )


for _kind in CHILD_KINDS:
    _watch_children(_kind)


@kopf.on.event(
    group=AUTOSCALER.resource.group,
    version=AUTOSCALER.resource.version,
    plural=AUTOSCALER.resource.plural,
    labels=KEDA_HPA_LABELS,
    id="keda-hpas",
)
async def keda_hpa_changed(*, memo: Any, type: str, body: kopf.Body, **kwargs: Any) -> None:
    await on_keda_hpa_event(
        memo.runtime, type, body, kwargs["rerankerservices_by_key"], kwargs["server_pods"]
    )


@kopf.on.event("v1", "pods", labels=SERVER_POD_LABELS)
async def pod_changed(*, memo: Any, body: kopf.Body, **kwargs: Any) -> None:
    await on_pod_event(memo.runtime, body, kwargs["rerankerservices_by_key"], kwargs["server_pods"])
