"""The audit trail over real HTTP: one record per API request, none for the probes, and a
flood of requests without a verified credential cannot flood the log."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.server.api_key_support import RecordingHandler, recording_logs
from tests.server.auth_support import (
    PROTECTED_PATH,
    SECRET,
    bearer,
    claims,
    protected_app,
    serve_in_thread,
    sign,
)

from kuberank_server.auth import Authenticator
from kuberank_server.observability.audit import AuditTrail, RecordBudget
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings

BUDGET_PER_SECOND = 5


@pytest.fixture
def audited() -> Iterator[tuple[str, RecordingHandler]]:
    """The real auth dependency and error handlers behind the audit middleware, on loopback."""
    metrics = ServerMetrics()
    app = protected_app(Authenticator.from_settings(ServerSettings(jwt_secret=SECRET), metrics))
    app.add_middleware(AuditTrail, unauthenticated_per_second=BUDGET_PER_SECOND)
    with recording_logs() as logs, serve_in_thread(app) as url:
        yield url, logs


def unauthenticated(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "event" not in r and r["credential_type"] is None]


def test_every_api_request_has_one_record_and_the_probes_none(
    audited: tuple[str, RecordingHandler],
) -> None:
    url, logs = audited
    token = sign(claims(sub="auditor", jti="token-7"))
    with httpx.Client(base_url=url) as client:
        good = client.post(PROTECTED_PATH, headers=bearer(token))
        bad = client.post(PROTECTED_PATH, headers=bearer(sign(claims(), key="x" * 40)))
        client.get("/health")
    records = logs.audit_records()

    assert [r["status"] for r in records] == [200, 401]
    assert records[0] | {"time": None, "latency_ms": None} == {
        "log": "audit", "time": None, "request_id": None, "method": "POST",
        "route": PROTECTED_PATH, "status": 200, "subject": "auditor", "credential_type": "jwt",
        "credential_id": "token-7", "auth_failure": None, "client": "127.0.0.1",
        "documents": None, "latency_ms": None,
    }  # fmt: skip
    assert records[1]["auth_failure"] == "invalid_signature" and records[1]["subject"] is None
    assert good.status_code == 200 and bad.status_code == 401
    assert token not in logs.text()


def test_a_flood_without_credentials_is_budgeted_and_summarised_and_nothing_else_is(
    audited: tuple[str, RecordingHandler],
) -> None:
    url, logs = audited
    flood, authenticated = 120, 10
    started = time.monotonic()
    with httpx.Client(base_url=url) as client:
        for n in range(flood):
            client.post(PROTECTED_PATH)  # no credential: 401
            if n % (flood // authenticated) == 0:
                client.post(PROTECTED_PATH, headers=bearer(sign(claims(sub="steady"))))
    seconds = time.monotonic() - started
    time.sleep(1.3)  # the last window closes and its summary is written, with no new request

    records = logs.audit_records()
    written = unauthenticated(records)
    summaries = [r for r in records if r.get("event") == "records_suppressed"]
    assert len([r for r in records if r.get("subject") == "steady"]) == authenticated
    assert len(written) <= BUDGET_PER_SECOND * (math.ceil(seconds) + 1)
    assert summaries, "a flood over the budget must leave a summary record"
    assert len(written) + sum(s["suppressed"] for s in summaries) == flood
    assert all(r["auth_failure"] == "missing_token" for r in written)


async def test_the_budget_counts_what_it_drops_and_reports_it_after_the_window() -> None:
    now = [100.0]
    summaries: list[tuple[int, str]] = []
    budget = RecordBudget(2, lambda count, since: summaries.append((count, since)), lambda: now[0])

    allowed = [budget.allow() for _ in range(5)]
    assert allowed == [True, True, False, False, False]
    assert summaries == []
    await asyncio.sleep(1.1)  # the summary is timed on the loop, not on the next request
    assert [count for count, _ in summaries] == [3]

    now[0] += 1.0  # a new window: the budget is whole again
    assert [budget.allow() for _ in range(3)] == [True, True, False]


def test_serve_writes_audit_records_to_stdout_whatever_the_log_level() -> None:
    script = (
        "import logging\n"
        "from kuberank_server.observability.logging_setup import configure_logging\n"
        "from kuberank_server.observability.audit import audit_log\n"
        "configure_logging('error')\n"
        'audit_log.info(\'{"log": "audit", "n": 1}\')\n'
        "logging.getLogger('kuberank_server.requests').info('{\"request_id\": \"r\"}')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )

    assert result.stdout.splitlines() == ['{"log": "audit", "n": 1}']  # the request line: level
    assert result.stderr == ""
