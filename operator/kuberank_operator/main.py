"""Kopf handlers: thin decorators over `handlers/handle_*.py`. Importing this registers them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kuberank_operator import API_GROUP, API_VERSION, FIELD_MANAGER, PLURAL
from kuberank_operator.builders import CHILD_KINDS, ChildKind
from kuberank_operator.handlers.handle_child_event import on_child_event
from kuberank_operator.handlers.handle_reconcile import reconcile
from kuberank_operator.runtime import Runtime

RESYNC_SECONDS = 300.0
MANAGED = {"app.kubernetes.io/managed-by": FIELD_MANAGER}
RRS = {"group": API_GROUP, "version": API_VERSION, "plural": PLURAL}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
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
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        memo.runtime.connect(info)
    return info


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.close()


@kopf.index(**RRS)
def rerankerservices_by_key(
    namespace: str, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], kopf.Body]:
    return {(namespace, name): body}


@kopf.on.create(**RRS, backoff=5)
@kopf.on.update(**RRS, backoff=5)
@kopf.on.resume(**RRS, backoff=5)
async def reconcile_on_change(memo: kopf.Memo, body: kopf.Body, retry: int, **_: Any) -> None:
    await reconcile(memo.runtime, body, retry)


@kopf.timer(**RRS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(memo: kopf.Memo, body: kopf.Body, retry: int, **_: Any) -> None:
    await reconcile(memo.runtime, body, retry)


@kopf.on.event(**RRS)
def forget_deleted(memo: kopf.Memo, type: str | None, namespace: str, name: str, **_: Any) -> None:
    if type == "DELETED":
        memo.runtime.forget(namespace, name)


def _watch_children(kind: ChildKind) -> None:
    resource = kind.resource

    @kopf.on.event(
        group=resource.group, version=resource.version, plural=resource.plural,
        labels=MANAGED, id=f"child-{resource.plural}",
    )
    async def child_changed(
        memo: kopf.Memo,
        type: str | None,
        body: kopf.Body,
        rerankerservices_by_key: kopf.Index[tuple[str, str], Mapping[str, Any]],
        **_: Any,
    ) -> None:
        runtime: Runtime = memo.runtime
        await on_child_event(runtime, kind, type, body, rerankerservices_by_key)


for _kind in CHILD_KINDS:
    _watch_children(_kind)
