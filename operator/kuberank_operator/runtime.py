"""State shared by every handler of one operator process (held in Kopf's memo)."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

import kopf

from kuberank_operator.builders import ChildKind
from kuberank_operator.kube import KubeClient
from kuberank_operator.settings import OperatorSettings
from kuberank_operator.status import PodReport

# prometheus-operator or cert-manager may be installed after us; look again this often.
DISCOVERY_TTL_SECONDS = 60.0


@dataclass
class Runtime:
    settings: OperatorSettings
    _client: KubeClient | None = None
    _locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = field(
        default_factory=lambda: collections.defaultdict(asyncio.Lock)
    )
    # ChildKind -> (when looked up, whether the cluster serves its API)
    _served: dict[ChildKind, tuple[float, bool]] = field(default_factory=dict)
    # One look-up per kind at a time: at start every RerankerService's resume asks at once,
    # and all but the first take its answer (a restart with 20 services made 56 discovery requests).
    _looking_up: collections.defaultdict[ChildKind, asyncio.Lock] = field(
        default_factory=lambda: collections.defaultdict(asyncio.Lock)
    )
    # The status each RerankerService got from us last (we are its only writer).
    statuses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # The Deployment and HPA, and the pod reports, that status was computed from: a pod event
    # recomputes it from these with no API read, and not at all when its pods report the same.
    status_children: dict[tuple[str, str], dict[ChildKind, dict[str, Any] | None]] = field(
        default_factory=dict
    )
    status_pods: dict[tuple[str, str], tuple[PodReport, ...]] = field(default_factory=dict)

    def connect(self, info: kopf.ConnectionInfo) -> None:
        self._client = KubeClient(info)

    @property
    def client(self) -> KubeClient:
        if self._client is None:
            raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=5)
        return self._client

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """One reconcile at a time per RerankerService (Kopf handlers and child events race)."""
        return self._locks[namespace, name]

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self.statuses.pop((namespace, name), None)
        self.status_children.pop((namespace, name), None)
        self.status_pods.pop((namespace, name), None)

    async def serves(self, kind: ChildKind) -> bool:
        """Whether the cluster serves this child's API (ServiceMonitor, Certificate)."""
        async with self._looking_up[kind]:
            now = time.monotonic()
            known = self._served.get(kind)
            if known is None or now - known[0] > DISCOVERY_TTL_SECONDS:
                known = (now, await self.client.has_resource(kind.resource))
                self._served[kind] = known
        return known[1]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
