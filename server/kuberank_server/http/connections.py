"""Connection recycling: after `max_requests_per_connection` requests, or once a keep-alive
connection is `max_connection_age_seconds` old, the next response carries `Connection: close`.

kube-proxy picks a pod per connection and uvicorn keeps a busy keep-alive connection open
forever, so without this, pooled callers never reach replicas the autoscaler adds. The close
rides on a response, so no request is ever cut: uvicorn finishes sending it, then closes, and
the client's pool opens a new connection (nginx's `keepalive_requests`, Envoy's
`max_connection_duration`). While the server drains every response closes its connection too,
so callers move to the other replicas instead of meeting 503s.

uvicorn puts each connection's local and peer address into every request's scope (the same
tuples for the whole connection). `ConnectionRecycler.protocol` subclasses uvicorn's HTTP
protocol to register each connection under that key when it opens, with its opening time, and
to drop it when it closes; `RecycleConnections`, an ASGI middleware, counts requests per
connection and marks the response that should close it. An app served without that protocol
(in-process tests, another ASGI server) never recycles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from kuberank_contract import ConnectionRecycling
from kuberank_server.observability.metrics import ServerMetrics

ConnectionKey = tuple[Any, Any]  # (server, client) exactly as uvicorn sets them in the scope


@dataclass
class OpenConnection:
    opened_at: float
    requests: int = 0


class ConnectionRecycler:
    """The open connections of one server and the rule for when each should close."""

    def __init__(
        self,
        policy: ConnectionRecycling,
        metrics: ServerMetrics,
        *,
        draining: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_requests = policy.max_requests_per_connection
        self.max_age_seconds = policy.max_connection_age_seconds
        self.metrics = metrics
        self.draining = draining
        self.clock = clock
        self.open: dict[ConnectionKey, OpenConnection] = {}

    def protocol(self, base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
        """uvicorn's HTTP protocol class (`uvicorn.Config(http=...)`) reporting to this."""
        if base is None:
            from uvicorn.protocols.http.auto import AutoHTTPProtocol

            base = AutoHTTPProtocol
        recycler = self

        class RecyclingProtocol(base):  # type: ignore[valid-type,misc]
            _connection_key: ConnectionKey | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                # uvloop's transports have asyncio.Transport's API without subclassing it.
                tcp = cast(asyncio.Transport, transport)
                self._connection_key = (get_local_addr(tcp), get_remote_addr(tcp))
                recycler.open[self._connection_key] = OpenConnection(recycler.clock())

            def connection_lost(self, exc: Exception | None) -> None:
                if self._connection_key is not None:
                    recycler.open.pop(self._connection_key, None)
                super().connection_lost(exc)

        RecyclingProtocol.__name__ = f"Recycling{base.__name__}"
        return RecyclingProtocol

    def connection_of(self, scope: Scope) -> OpenConnection | None:
        return self.open.get((scope.get("server"), scope.get("client")))

    def should_close(self, connection: OpenConnection) -> bool:
        if self.max_requests and connection.requests >= self.max_requests:
            return True
        if self.max_age_seconds and self.clock() - connection.opened_at >= self.max_age_seconds:
            return True
        return self.draining()


class RecycleConnections:
    """ASGI middleware: `Connection: close` on the response that ends a connection's turn."""

    def __init__(self, app: ASGIApp, *, recycler: ConnectionRecycler) -> None:
        self.app = app
        self.recycler = recycler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = self.recycler.connection_of(scope) if scope["type"] == "http" else None
        if connection is None or _closes_anyway(scope):
            await self.app(scope, receive, send)
            return
        connection.requests += 1

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.recycler.should_close(connection):
                headers = list(message.get("headers", []))
                if not _asks_close(headers):
                    headers.append((b"connection", b"close"))
                    message = {**message, "headers": headers}
                    self.recycler.metrics.connections_recycled_total.inc()
                # uvicorn closes the connection after this response: forget it now, so a
                # request pipelined behind this one is not counted against a closing connection.
                self.recycler.open.pop((scope.get("server"), scope.get("client")), None)
            await send(message)

        await self.app(scope, receive, send_closing)


def _closes_anyway(scope: Scope) -> bool:
    """uvicorn closes after this request in any case: HTTP/1.0, or the client asked to."""
    return scope.get("http_version") == "1.0" or _asks_close(scope["headers"])


def _asks_close(headers: Any) -> bool:
    return any(
        name.lower() == b"connection" and b"close" in value.lower() for name, value in headers
    )
