"""Pure ASGI middleware (no per-request task or body copy beyond what each one needs).

- `RequestObserver`: request id, per-route metrics, one JSON log line per request (probes
  only with `log_probes`; lines of requests without a verified credential within the audit
  log's budget), and the count of accepted requests that a drain waits for.
- `HeadAsGet`: HEAD wherever GET is.
- `BodyGuard`: for a route that takes a body, 415 for a body that is not JSON (or is
  compressed, or has two Content-Types), 413 for one over `max_body_bytes`, both before a
  byte of it is parsed; 408 for a body not complete within `body_timeout_seconds`; 503 for
  one still incomplete when a drain begins (it was never accepted, so the drain does not wait
  for it). Other requests pass to the router untouched (404, or 405 with `Allow`). A request
  whose client goes away before its answer is cancelled, its engine work aborted (499); one
  a drain cannot finish within its budget is cut the same way and answered 503.
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
from kuberank_server.observability.audit import (
    CLIENT_CLOSED_REQUEST,
    RecordBudget,
    verified_caller,
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
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# How often a body read looks up from waiting to see whether a drain began.
_DRAIN_POLL_SECONDS = 0.25


class RequestObserver:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServerMetrics,
        lifecycle: Lifecycle,
        log_probes: bool,
        unauthenticated_per_second: int,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.log_probes = log_probes
        # Lines of requests without a verified credential are budgeted as their audit records.
        self.budget = RecordBudget(unauthenticated_per_second, _write_suppressed_summary)

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
            if (
                request_log.isEnabledFor(logging.INFO)
                and (self.log_probes or scope["path"] not in PROBE_PATHS)
                and (verified_caller(state) or self.budget.allow())
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


def _write_suppressed_summary(count: int, since: str) -> None:
    request_log.info(json.dumps({"event": "lines_suppressed", "suppressed": count, "since": since,
                                 "reason": "over the budget for requests without a verified "
                                 "credential"}))  # fmt: skip


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER.encode() and _ACCEPTABLE_REQUEST_ID.fullmatch(value):
            return str(value.decode("ascii"))
    return None


class HeadAsGet:
    """HEAD wherever GET is (FastAPI routes GET only): routed and answered as GET, without the
    body. The server still sees a HEAD request, so it expects no body bytes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_head(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send_head)
        finally:
            if "route" in as_get:  # for the outer layers' route label
                scope["route"] = as_get["route"]


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
        await self._handle(scope, body, receive, send)
        if len(body) >= LARGE_BODY_BYTES:
            body = b""  # the last reference (the handler's closure is gone): freed before the trim
            trim_soon()

    async def _handle(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """Runs the route on the body read, in a task of its own that is cancelled, and with it
        the request's engine work (vLLM aborts a cancelled request), when the client goes away
        before its answer (499) or when a drain has spent its budget (503, `Retry-After`)."""
        state: dict[str, Any] = scope.setdefault("state", {})
        disconnected = asyncio.ensure_future(_disconnect(receive))
        delivered = started = complete = cut = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await asyncio.shield(disconnected)  # after the body: only the disconnect

        async def send_tracking(message: Message) -> None:
            nonlocal started, complete
            started = started or message["type"] == "http.response.start"
            complete = message["type"] == "http.response.body" and not message.get("more_body")
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, replay, send_tracking))

        def cut_for_drain() -> None:
            nonlocal cut
            cut = True
            handler.cancel()

        try:
            with self.lifecycle.cuttable(cut_for_drain):
                await asyncio.wait({handler, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                if not handler.done() and not complete:
                    state["client_disconnected"] = True
                    handler.cancel()
                await asyncio.wait({handler})
        finally:
            disconnected.cancel()
            if not handler.done():  # this request's own task was cancelled (server shutdown)
                handler.cancel()
        if not handler.cancelled():
            handler.result()  # the route's own exception, if any, for the layers outside
        elif cut and not started and not state.get("client_disconnected"):
            refused = NotReadyError(
                "the server is shutting down and could not finish this request within its "
                "drain budget; retry on another replica"
            )
            refused.headers["Connection"] = "close"
            await error_response(refused)(scope, receive, send)

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


async def _disconnect(receive: Receive) -> Message:
    """The client's disconnect (uvicorn also reports one once the response is complete)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message


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
