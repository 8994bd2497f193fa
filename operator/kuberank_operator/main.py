"""Kopf handlers: thin decorators over `handlers/handle_*.py`. Importing this registers them."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kuberank_contract import LABEL_MANAGED_BY
from kuberank_operator import API_GROUP, API_VERSION, FIELD_MANAGER, PLURAL
from kuberank_operator.builders import CHILD_KINDS, ChildKind
from kuberank_operator.handlers.handle_child_event import on_child_event
from kuberank_operator.handlers.handle_reconcile import reconcile
from kuberank_operator.runtime import Runtime

RESYNC_SECONDS = 300.0
MANAGED = {LABEL_MANAGED_BY: FIELD_MANAGER}


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


@kopf.on.create(API_GROUP, API_VERSION, PLURAL, backoff=5)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, backoff=5)
@kopf.on.resume(API_GROUP, API_VERSION, PLURAL, backoff=5)
async def reconcile_on_change(*, memo: Any, body: kopf.Body, retry: int, **_: Any) -> None:
    await reconcile(memo.runtime, body, retry)


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(*, memo: Any, body: kopf.Body, **kwargs: Any) -> None:
    await reconcile(memo.runtime, body, int(kwargs.get("retry", 0)))


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
        await on_child_event(runtime, kind, type, body, kwargs["rerankerservices_by_key"])


for _kind in CHILD_KINDS:
    _watch_children(_kind)
