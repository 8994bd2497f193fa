"""Pure ASGI middleware (no per-request task or body copy beyond what each one needs).

- `RequestObserver`: request id, per-route metrics, one JSON log line per request (probes
  only with `log_probes`), and the count of accepted requests that a drain waits for.
- `BodyGuard`: 415 for a body that is not JSON, 413 for one over `max_body_bytes`, both
  before a byte of it is parsed.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kuberank_server.errors import (
    KuberankError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    error_response,
)
from kuberank_server.lifecycle import Lifecycle
from kuberank_server.metrics import ServerMetrics

request_log = logging.getLogger("kuberank_server.requests")

REQUEST_ID_HEADER = "x-request-id"
# Kubelet probes arrive every few seconds per pod: logged only when `log_probes` asks.
PROBE_PATHS = frozenset({"/health", "/ready"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            # Echoed into headers and logs: only short, printable ids are taken.
            if 0 < len(text) <= 128 and text.isprintable():
                return text
    return None


class BodyGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            _check_content_type(headers.get(b"content-type", b"").decode("latin-1"))
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise self._too_large()
            body = await self._read_body(receive)
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

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body is larger than {self.max_body_bytes} bytes", param="body"
        )


def _check_content_type(content_type: str) -> None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"request body must be application/json, not {media_type or 'unspecified'}",
            param="content-type",
        )
