"""HTTP limits below the application, the same on the API port and the metrics port.

uvicorn's httptools protocol reads a request line and headers of any size, waits for them
(and for a body nobody reads) as long as the client keeps the connection open, and takes any
number of connections. `GuardedHttpToolsProtocol` adds, per connection:
- headers larger than `max_header_bytes`: 431, then closed;
- headers not complete `header_timeout_seconds` after the connection opened or the request's
  first byte arrived: 408, then closed (a slowloris client holds nothing for longer);
- a body not complete `body_timeout_seconds` after its headers: closed (a second later than
  that, so that where the application reads the body, its own JSON 408 goes out first);
- more than `max_connections` open on the port: 503 and closed at once.
What it answers itself is in the API's error envelope, with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kuberank_server.runtime.settings import ServerSettings

# The application answers a stalled body first (JSON 408); the protocol closes a moment later.
_BODY_CLOSE_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._headers_done = False
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # --- connections ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            transport.write(
                _response(503, "service_unavailable",
                          f"more than {self.limits.max_connections} open connections",
                          retry_after=1)
            )  # fmt: skip
            transport.close()
            return
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_timers()
        super().connection_lost(exc)

    # --- request line and headers ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._headers_done:
            self._header_bytes += len(data)
            if self._header_timer is None:
                self._start_header_timer()
        super().data_received(data)
        if (
            not self._headers_done
            and self._header_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._answer_and_close(
                431, "request_header_fields_too_large",
                f"request line and headers are larger than {self.limits.max_header_bytes} bytes",
            )  # fmt: skip

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._cancel_header_timer()
        self._body_timer = self.loop.call_later(
            self.limits.body_timeout_seconds + _BODY_CLOSE_GRACE_SECONDS, self._body_timed_out
        )
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        # The next request on this connection starts counting from its own first byte.
        self._headers_done = False
        self._header_bytes = 0
        super().on_message_complete()

    # --- timers ---------------------------------------------------------------------------------
    def _start_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._header_timed_out
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._headers_done or self.transport.is_closing():
            return
        self._answer_and_close(
            408, "request_timeout",
            f"request headers not complete within {self.limits.header_timeout_seconds:g} s",
        )  # fmt: skip

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _answer_and_close(self, status: int, error_type: str, message: str) -> None:
        # Never into the middle of a response already being sent on this connection.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_response(status, error_type, message))
        self.transport.close()


def _response(status: int, error_type: str, message: str, retry_after: int | None = None) -> bytes:
    body = json.dumps({"error": {"type": error_type, "message": message, "param": None}}).encode()
    headers = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        headers.append(f"retry-after: {retry_after}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + body


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server, with its limits bound (uvicorn instantiates it)."""
    return type("BoundGuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def api_server_config(
    app: Any,
    settings: ServerSettings,
    *,
    protocol: Callable[[type[asyncio.Protocol]], type[asyncio.Protocol]] | None = None,
    **options: Any,
) -> uvicorn.Config:
    """The API port's uvicorn config. `protocol` extends the guarded protocol class (connection
    recycling subclasses it); `options` add to the config (TLS)."""
    guarded: type[asyncio.Protocol] = guarded_protocol(HttpLimits.from_settings(settings))
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # our own JSON line per request replaces it
        timeout_graceful_shutdown=1,  # the drain already waited for accepted requests
        http=protocol(guarded) if protocol else guarded,
        **options,
    )


def start_metrics_server(registry: CollectorRegistry, settings: ServerSettings) -> uvicorn.Server:
    """prometheus_client's ASGI app on uvicorn, in a thread with its own event loop (a scrape
    answers even while the API's loop is busy), behind the same limits as the API port."""
    config = uvicorn.Config(
        make_asgi_app(registry),
        host=settings.host,
        port=settings.metrics_port,
        lifespan="off",
        log_config=None,  # keep the process's logging as `serve` configured it
        access_log=False,
        http=guarded_protocol(HttpLimits.from_settings(settings)),
    )
    server = uvicorn.Server(config)
    # Bound here, in the caller's thread: a port in use fails `serve` at start, not silently.
    sockets = [config.bind_socket()]
    threading.Thread(
        target=server.run, kwargs={"sockets": sockets}, name="metrics-http", daemon=True
    ).start()
    return server
