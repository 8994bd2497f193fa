"""HTTP limits below the application, the same on the API port and the metrics port.

uvicorn's httptools protocol reads a request line and headers of any size, waits for them
(and for a body nobody reads) as long as the client keeps the connection open, and takes any
number of connections. `GuardedHttpToolsProtocol` adds, per connection:
- headers larger than `max_header_bytes`: 431, then closed;
- headers not complete `header_timeout_seconds` after the connection opened or the request's
  first byte arrived: 408, then closed (a slowloris client holds nothing for longer);
- a body not complete `body_timeout_seconds` after its headers: closed (a second later than
  that, so that where the application reads the body, its own JSON 408 goes out first);
- more than `max_connections` open on the port, or `max_connections_per_client` from one
  client address: 503 and closed at once. Past the port's cap a small reserve of connections
  serves only the probes (`/health`, `/ready`), so a crowd cannot fail the kubelet's checks;
- HTTPS: a connection counts from its accept, and its TLS handshake has the header timeout;
- a request the parser cannot read (garbage, Content-Length with Transfer-Encoding, two
  Content-Lengths, a NUL in a header): 400, then closed.
What it answers itself is in the API's error envelope, with `Connection: close`; each refusal
is counted by reason (`kuberank_http_refusals_total`) and logged within a budget (at most
N lines a second, then one summary line counting the rest).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import uvicorn
from prometheus_client import make_asgi_app
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kuberank_server.observability.audit import RecordBudget
from kuberank_server.observability.metrics import ServerMetrics, combined_registry
from kuberank_server.runtime.settings import ServerSettings

# The application answers a stalled body first (JSON 408); the protocol closes a moment later.
_BODY_CLOSE_GRACE_SECONDS = 1.0


# Connections past the port's cap that only the probes may use (the kubelet opens one or two).
PROBE_RESERVE_CONNECTIONS = 8
PROBE_PATHS = frozenset({b"/health", b"/ready"})
refusal_log = logging.getLogger("kuberank_server.refusals")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int
    max_connections_per_client: int

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
            max_connections_per_client=settings.max_connections_per_client,
        )


class Refusals:
    """What a port's protocol refuses: counted by reason, logged within a budget."""

    def __init__(self, port: str, metrics: ServerMetrics | None, log_per_second: int) -> None:
        self.port = port
        self.counter = metrics.http_refusals_total if metrics else None
        self.budget: RecordBudget | None = None
        self.log_per_second = log_per_second

    def __call__(self, reason: str, status: int, client: str | None) -> None:
        if self.counter is not None:
            self.counter.labels(port=self.port, reason=reason).inc()
        if self.budget is None:  # made in the port's own event loop, on first use
            self.budget = RecordBudget(self.log_per_second, self._summary)
        if self.budget.allow():
            refusal_log.warning(json.dumps({"log": "refusal", "port": self.port,
                                            "reason": reason, "status": status,
                                            "client": client}))  # fmt: skip

    def _summary(self, count: int, since: str) -> None:
        refusal_log.warning(json.dumps({"log": "refusal", "port": self.port,
                                        "event": "records_suppressed", "suppressed": count,
                                        "since": since}))  # fmt: skip


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]
    refusals: ClassVar[Refusals]
    # Open connections by client address, on this port (the bound class is per port).
    per_client: ClassVar[dict[str, int]]
    # HTTPS: the context each accepted connection's handshake uses (see `_handshake`).
    tls: ClassVar[ssl.SSLContext | None]
    # Connections accepted whose TLS handshake is not done: they count against the caps.
    handshaking: ClassVar[list[int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._counted = False
        self._probes_only = False
        self._tls_pending = False
        self._peer: str | None = None
        self._headers_done = False
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # --- connections ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._tls_pending:  # the handshake is done: this is the secured transport
            self._tls_pending = False
            self.handshaking[0] -= 1
            super().connection_made(transport)
            self._start_header_timer()
            return
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else None
        open_here = len(self.connections) + self.handshaking[0]
        from_peer = self.per_client.get(self._peer or "", 0)
        refusal = None
        if from_peer >= self.limits.max_connections_per_client:
            refusal = ("client_connections", f"more than {self.limits.max_connections_per_client}"
                       " open connections from this client address")  # fmt: skip
        elif open_here >= self.limits.max_connections + PROBE_RESERVE_CONNECTIONS:
            refusal = ("connections", f"more than {self.limits.max_connections} open connections")
        if refusal is not None:
            self._refused = True
            self.refusals(refusal[0], 503, self._peer)
            if self.tls is None:  # an HTTPS client could not read a plain answer
                transport.write(_response(503, "service_unavailable", refusal[1], retry_after=1))
            transport.close()
            return
        # Past the port's cap, only a probe is answered on this connection.
        self._probes_only = open_here >= self.limits.max_connections
        self.per_client[self._peer or ""] = from_peer + 1
        self._counted = True
        if self.tls is not None:
            self._start_handshake(transport)
            return
        super().connection_made(transport)
        self._start_header_timer()

    def _start_handshake(self, raw: asyncio.Transport) -> None:
        """TLS on a connection counted from its accept, its handshake bounded by the header
        timeout (asyncio's own default is 60 s). What `loop.start_tls` does, but at once, so
        no byte of the ClientHello can arrive before the TLS layer is in place; once the
        handshake is done, it calls `connection_made` again with the secured transport."""
        self.handshaking[0] += 1
        self._tls_pending = True
        handshake = self.loop.create_future()
        secure = sslproto.SSLProtocol(
            self.loop, self, self.tls, handshake, server_side=True,  # type: ignore[arg-type]
            ssl_handshake_timeout=self.limits.header_timeout_seconds,  # type: ignore[arg-type]
        )  # fmt: skip
        raw.set_protocol(secure)
        secure.connection_made(raw)
        started = self.loop.time()

        def on_handshake(done: asyncio.Future[None]) -> None:
            if not self._tls_pending:
                return  # done: `connection_made` has the secured transport
            self._tls_pending = False
            self.handshaking[0] -= 1
            timed_out = self.loop.time() - started >= self.limits.header_timeout_seconds
            reason = "tls_handshake_timeout" if timed_out else "tls_handshake_failed"
            self.refusals(reason, 408 if timed_out else 400, self._peer)
            if not done.cancelled() and done.exception() is not None:
                log.debug("TLS handshake failed: %s", done.exception())
            raw.abort()
            self._uncount()

        handshake.add_done_callback(on_handshake)

    def _uncount(self) -> None:
        if not self._counted:
            return
        self._counted = False
        left = self.per_client.get(self._peer or "", 1) - 1
        if left > 0:
            self.per_client[self._peer or ""] = left
        else:
            self.per_client.pop(self._peer or "", None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        if self.transport is None:
            return  # refused in connection_made, or never past its TLS handshake
        self._cancel_timers()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what the parser cannot read, in the envelope."""
        self._answer_and_close(400, "invalid_request_error", f"malformed HTTP request: {msg}",
                               reason="parse_error")  # fmt: skip

    def _unsupported_upgrade_warning(self) -> None:
        """An Upgrade (WebSocket) request is served as the plain HTTP request it also is."""

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
                reason="header_too_large",
            )  # fmt: skip

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._cancel_header_timer()
        if self._probes_only and self.url.split(b"?", 1)[0] not in PROBE_PATHS:
            self._answer_and_close(503, "service_unavailable",
                                   f"more than {self.limits.max_connections} open connections",
                                   reason="connections")  # fmt: skip
            return
        self._body_timer = self.loop.call_later(
            self.limits.body_timeout_seconds + _BODY_CLOSE_GRACE_SECONDS, self._body_timed_out
        )
        super().on_headers_complete()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
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
            reason="header_timeout",
        )  # fmt: skip

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            self.refusals("body_timeout", 408, self._peer)
            self.transport.close()

    def _answer_and_close(self, status: int, error_type: str, message: str, *, reason: str) -> None:
        self._refused = True
        self.refusals(reason, status, self._peer)
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


def guarded_protocol(
    limits: HttpLimits, refusals: Refusals, tls: ssl.SSLContext | None = None
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server, with its limits bound (uvicorn instantiates it)."""
    return type(
        "BoundGuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": limits, "refusals": refusals, "per_client": {}, "tls": tls,
         "handshaking": [0]},
    )  # fmt: skip


def api_server_config(
    app: Any,
    settings: ServerSettings,
    *,
    protocol: Callable[[type[asyncio.Protocol]], type[asyncio.Protocol]] | None = None,
    tls_context: ssl.SSLContext | None = None,
    **options: Any,
) -> uvicorn.Config:
    """The API port's uvicorn config. `protocol` extends the guarded protocol class (connection
    recycling subclasses it); `tls_context` serves HTTPS (`tls.uvicorn_tls_options`), with
    the handshake in the guarded protocol; `options` add to the config."""
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    refusals = Refusals("api", metrics, settings.audit_unauthenticated_records_per_second)
    guarded: type[asyncio.Protocol] = guarded_protocol(
        HttpLimits.from_settings(settings), refusals, tls_context
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # our own JSON line per request replaces it
        timeout_graceful_shutdown=1,  # the drain already waited for accepted requests
        http=protocol(guarded) if protocol else guarded,
        # An Upgrade request is answered as plain HTTP, by the app, in the envelope.
        ws="none",
        **options,
    )


def start_metrics_server(metrics: ServerMetrics, settings: ServerSettings) -> uvicorn.Server:
    """prometheus_client's ASGI app serving `metrics` and vLLM's on uvicorn, in a thread with
    its own event loop (a scrape answers even while the API's loop is busy), behind the same
    limits as the API port; its refusals are counted in `metrics` with `port="metrics"`."""
    config = uvicorn.Config(
        make_asgi_app(combined_registry(metrics)),
        host=settings.host,
        port=settings.metrics_port,
        lifespan="off",
        log_config=None,  # keep the process's logging as `serve` configured it
        access_log=False,
        http=guarded_protocol(
            HttpLimits.from_settings(settings),
            Refusals("metrics", metrics, settings.audit_unauthenticated_records_per_second),
        ),
    )
    server = uvicorn.Server(config)
    # Bound here, in the caller's thread: a port in use fails `serve` at start, not silently.
    sockets = [config.bind_socket()]
    threading.Thread(
        target=server.run, kwargs={"sockets": sockets}, name="metrics-http", daemon=True
    ).start()
    return server
