"""The operator's per-process state (runtime.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from kuberank_operator.builders import SCALED_OBJECT, SERVICE_MONITOR
from kuberank_operator.kube import KubeClient, Resource
from kuberank_operator.runtime import Runtime
from kuberank_operator.settings import OperatorSettings


class CountingDiscovery:
    """A client whose API discovery takes a while and counts its requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    async def has_resource(self, resource: Resource) -> bool:
        self.requests.append(resource.plural)
        await asyncio.sleep(0.05)
        return resource is SERVICE_MONITOR.resource


async def test_reconciles_asking_at_once_whether_an_api_is_served_share_one_look_up() -> None:
    client = CountingDiscovery()
    runtime = Runtime(OperatorSettings(), _client=cast(KubeClient, client))
    kinds = [SERVICE_MONITOR, SCALED_OBJECT] * 50  # a restart: every service's resume at once
    answers: list[Any] = await asyncio.gather(*(runtime.serves(kind) for kind in kinds))
    assert answers == [True, False] * 50
    assert sorted(client.requests) == sorted(
        [SERVICE_MONITOR.resource.plural, SCALED_OBJECT.resource.plural]
    )
