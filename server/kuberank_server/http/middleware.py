"""Pure ASGI middleware (no per-request task or body copy beyond what each one needs).

- `RequestObserver`: request id, per-route metrics, one JSON log line per request (probes
  only with `log_probes`), and the count of accepted requests that a drain waits for.
- `BodyGuard`: for a route that takes a body, 415 for a body that is not JSON (or is
  compressed, or has two Content-Types), 413 for one over `max_body_bytes`, both before a
  byte of it is parsed; 408 for a body not complete within `body_timeout_seconds`; 503 for
  one still incomplete when a drain begins (it was never accepted, so the drain does not wait
  for it). Other requests pass to the router untouched (404, or 405 with `Allow`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kuberank_server.http.errors import (
    KuberankError,
    NotReadyError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
    error_response,
)
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.heap import LARGE_BODY_BYTES, trim_soon
from kuberank_server.runtime.lifecycle import Lifecycle

request_log = logging.getLogger("kuberank_server.requests")

REQUEST_ID_HEADER = "x-request-id"
# Kubelet probes arrive every few seconds per pod: logged only when `log_probes` asks.
PROBE_PATHS = frozenset({"/health", "/ready"})
# Echoed into response headers and log lines: only short printable ASCII is taken.
_ACCEPTABLE_REQUEST_ID = re.compile(rb"[\x20-\x7e]{1,128}")
# nginx's code for "the client closed the connection before the answer": not a 4xx of ours.
CLIENT_CLOSED_REQUEST = 499
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# How often a body read looks up from waiting to see whether a drain began.
_DRAIN_POLL_SECONDS = 0.25


class RequestObserver:
    def __init__(
        self, app: ASGIApp, *, metrics: ServerMetrics, lifecycle: Lifecycle, log_probes: bool
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.log_probes = log_probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _client_request_id(scope) or f"req-{uuid.uuid4().hex}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        self.lifecycle.active_requests += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.lifecycle.active_requests -= 1
            if state.get("client_disconnected"):
                status = CLIENT_CLOSED_REQUEST
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests_total.labels(route=route, code=str(status)).inc()
            self.metrics.request_duration_seconds.labels(route=route).observe(elapsed)
            if request_log.isEnabledFor(logging.INFO) and (
                self.log_probes or scope["path"] not in PROBE_PATHS
            ):
                request_log.info(
                    json.dumps(
                        {
                            "request_id": request_id,
                            "method": scope["method"],
                            "route": route,
                            "status": status,
                            "latency_ms": round(elapsed * 1000, 2),
                            "documents": state.get("documents"),
                            "subject": state.get("subject"),
                        }
                    )
                )


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER.encode() and _ACCEPTABLE_REQUEST_ID.fullmatch(value):
            return str(value.decode("ascii"))
    return None


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        lifecycle: Lifecycle,
        max_body_bytes: int,
        body_timeout_seconds: float,
    ) -> None:
        self.app = app
        self.router = router
        self.lifecycle = lifecycle
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        route = self._route_taking(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        # Our own answers below are counted under the route, as the router's would be.
        scope["route"] = route
        try:
            _check_body_headers(scope["headers"])
            declared = _header_values(scope["headers"], b"content-length")
            if declared and declared[0].isdigit() and int(declared[0]) > self.max_body_bytes:
                raise self._too_large()
            body = await self._read_body(receive)
        except ClientDisconnected:
            scope.setdefault("state", {})["client_disconnected"] = True
            return
        except KuberankError as error:
            await error_response(error)(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as Starlette does

        await self.app(scope, replay, send)
        if len(body) >= LARGE_BODY_BYTES:
            body = b""  # the last reference (the replay closure shares it): freed before the trim
            trim_soon()

    def _route_taking(self, scope: Scope) -> Any:
        """The route this method and path go to, if any (else the router answers 404/405)."""
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route
        return None

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_timeout_seconds
        while True:
            message = await self._next_message(receive, deadline)
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _next_message(self, receive: Receive, deadline: float) -> Message:
        """The next body message; 408 past the deadline, 503 once a drain begins (uvicorn's
        receive can be cancelled and called again without losing data)."""
        while True:
            if self.lifecycle.state == "draining":
                refused = NotReadyError(
                    "the server is shutting down and the request body was not complete; "
                    "retry on another replica"
                )
                refused.headers["Connection"] = "close"
                raise refused
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeoutError(
                    f"request body not complete within {self.body_timeout_seconds:g} s",
                    param="body",
                )
            try:
                return await asyncio.wait_for(receive(), min(left, _DRAIN_POLL_SECONDS))
            except TimeoutError:
                continue

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body is larger than {self.max_body_bytes} bytes", param="body"
        )


def _header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def _check_body_headers(headers: list[tuple[bytes, bytes]]) -> None:
    content_types = _header_values(headers, b"content-type")
    if len(content_types) > 1:
        # Different layers would read different ones (first vs. last): refuse, not guess.
        raise UnsupportedMediaTypeError(
            f"{len(content_types)} Content-Type headers; send exactly one, application/json",
            param="content-type",
        )
    encodings = [value.strip().lower() for value in _header_values(headers, b"content-encoding")]
    if any(encoding not in (b"", b"identity") for encoding in encodings):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {b', '.join(encodings).decode('latin-1')} is not accepted; "
            "send the body uncompressed",
            param="content-encoding",
            headers={"Accept-Encoding": "identity"},
        )
    _check_content_type(content_types[0].decode("latin-1") if content_types else "")


def _check_content_type(content_type: str) -> None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"request body must be application/json, not {media_type or 'unspecified'}",
            param="content-type",
        )
