"""The audit log: one JSON record per API request, on its own logger (`kuberank_server.audit`).

A record says who did what and how it ended: time of arrival, request id, method, route,
status, subject, credential type and id (a JWT's `jti` or an API key's name), why auth refused
the request if it did, client address, number of documents, latency. Never the credential,
the query or a document's text.

Requests without a verified credential (failed auth, unknown paths, bodies refused before
auth) cost an attacker nothing, so their records are budgeted: at most N per second, then one
summary record per second counting the ones left out. A flood cannot fill the disk; records
of authenticated requests are never dropped. The probes (`/health`, `/ready`) are not API
requests and are not recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

AUDIT_LOGGER = "kuberank_server.audit"
audit_log = logging.getLogger(AUDIT_LOGGER)

UNAUDITED_PATHS = frozenset({"/health", "/ready"})
# nginx's code for "the client closed the connection before the answer": not a 4xx of ours.
CLIENT_CLOSED_REQUEST = 499


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write(record: dict[str, Any]) -> None:
    audit_log.info(json.dumps({"log": "audit", **record}))


class RecordBudget:
    """At most `per_second` records per one-second window; the others are counted, and
    `write_summary(count, since)` reports them once that window is over."""

    def __init__(
        self,
        per_second: int,
        write_summary: Callable[[int, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_second = per_second
        self._write_summary = write_summary
        self._clock = clock
        self._window_start = float("-inf")
        self._used = 0
        self._suppressed = 0
        self._suppressed_since = ""

    def allow(self) -> bool:
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._window_start, self._used = now, 0
        if self._used < self._per_second:
            self._used += 1
            return True
        if self._suppressed == 0:
            self._suppressed_since = _timestamp()
            # The summary follows when the window is over, even if no request ever comes again.
            delay = max(0.0, self._window_start + 1.0 - now)
            asyncio.get_running_loop().call_later(delay, self.flush)
        self._suppressed += 1
        return False

    def flush(self) -> None:
        if self._suppressed:
            self._write_summary(self._suppressed, self._suppressed_since)
            self._suppressed = 0


def verified_caller(state: dict[str, Any]) -> bool:
    """Whether the request carried a credential that verified (its records are never dropped)."""
    return state.get("credential_type") in ("jwt", "api_key") and not state.get("auth_failure")


def _write_suppressed_summary(count: int, since: str) -> None:
    _write(
        {
            "time": _timestamp(),
            "event": "records_suppressed",
            "suppressed": count,
            "since": since,
            "reason": "over the budget for requests without a verified credential",
        }
    )


class AuditTrail:
    """ASGI middleware writing the audit records. It reads what the inner layers put on the
    request's state: `request_id` (RequestObserver), `subject`, `credential_type`,
    `credential_id` and `auth_failure` (the auth dependency), `documents` (the routes)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        unauthenticated_per_second: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.budget = RecordBudget(unauthenticated_per_second, _write_suppressed_summary, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUDITED_PATHS:
            await self.app(scope, receive, send)
            return
        arrived = _timestamp()
        started = time.perf_counter()
        status = 500

        async def send_capturing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_capturing_status)
        finally:
            self._record(scope, arrived, status, time.perf_counter() - started)

    def _record(self, scope: Scope, arrived: str, status: int, elapsed: float) -> None:
        state: dict[str, Any] = scope.get("state") or {}
        if state.get("client_disconnected"):
            status = CLIENT_CLOSED_REQUEST
        if not verified_caller(state) and not self.budget.allow():
            return
        client = scope.get("client")
        _write(
            {
                "time": arrived,
                "request_id": state.get("request_id"),
                "method": scope["method"],
                "route": getattr(scope.get("route"), "path", None) or "unmatched",
                "status": status,
                "subject": state.get("subject"),
                "credential_type": state.get("credential_type"),
                "credential_id": state.get("credential_id"),
                "auth_failure": state.get("auth_failure"),
                "client": client[0] if client else None,
                "documents": state.get("documents"),
                "latency_ms": round(elapsed * 1000, 2),
            }
        )
