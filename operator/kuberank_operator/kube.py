"""A thin async Kubernetes API client (httpx) on the credentials Kopf's login produced.

Kopf has no general-purpose client, and the official one is synchronous; this one does
exactly what the operator needs: get, server-side apply and merge-patch (with our field
manager), delete, and API discovery.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
import kopf

from kuberank_operator import FIELD_MANAGER

USER_AGENT = f"{FIELD_MANAGER}/0.1.0"


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core API
    version: str
    plural: str

    @property
    def api_path(self) -> str:
        return f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        parts = [self.api_path, "namespaces", namespace, self.plural]
        parts += [name] if name else []
        parts += [subresource] if subresource else []
        return "/".join(parts)


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying as it is: a conflict, throttling or a server-side failure."""
        return self.status in (409, 429) or self.status >= 500


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    cadata = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
    context = ssl.create_default_context(cafile=info.ca_path or None, cadata=cadata)
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(info.certificate_path, info.private_key_path)
    return context


class KubeClient:
    def __init__(
        self, info: kopf.ConnectionInfo, timeout_seconds: float = 30, max_in_flight: int = 16
    ) -> None:
        # Callers beyond this wait on a semaphore (cheap) rather than in httpx's connection
        # pool, whose bookkeeping is quadratic in the queue: hundreds of RerankerServices
        # reconciled at once would otherwise spend their time there.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = httpx.BasicAuth(info.username, info.password or "") if info.username else None
        verify = _ssl_context(info) if info.server.startswith("https") else True
        self._http = httpx.AsyncClient(
            base_url=info.server,
            headers=headers,
            auth=auth,
            verify=verify,
            timeout=timeout_seconds,
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            ),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            async with self._in_flight:
                response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            # Unreachable or overloaded API server: as transient as a 503.
            raise ApiError(503, type(exc).__name__, str(exc) or "no answer") from exc
        if response.status_code >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {}
            raise ApiError(
                response.status_code,
                str(status.get("reason") or response.reason_phrase),
                str(status.get("message") or response.text[:500]),
            )
        return response

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = await self._request("GET", resource.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(response.json())

    async def apply(
        self, resource: Resource, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Server-side apply of the whole object (creating it if absent), as its field manager;
        forced: fields another manager took from us are taken back."""
        response = await self._request(
            "PATCH",
            resource.path(namespace, name),
            content=json.dumps(body),  # JSON is YAML
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return dict(response.json())

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        response = await self._request(
            "PATCH",
            resource.path(namespace, name, subresource),
            json=patch,
            params={"fieldManager": FIELD_MANAGER},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return dict(response.json())

    async def delete(
        self, resource: Resource, namespace: str, name: str, propagation: str = "Background"
    ) -> None:
        """Delete; `propagation` Orphan leaves what the object owns (its ownerReference to it
        removed by the garbage collector) instead of deleting it too."""
        try:
            await self._request(
                "DELETE", resource.path(namespace, name), params={"propagationPolicy": propagation}
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def has_resource(self, resource: Resource) -> bool:
        """Whether the API server serves this resource (e.g. prometheus-operator's CRDs)."""
        try:
            response = await self._request("GET", resource.api_path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return any(
            item.get("name") == resource.plural for item in response.json().get("resources", [])
        )
