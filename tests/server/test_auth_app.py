"""Auth on the real server app: every API route demands a token, the probes do not."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from tests.server.auth_support import assert_rejected, assert_token_not_logged
from tests.server.harness import auth_headers, serving

from kuberank_server.engine.scorer import Scorer

pytestmark = pytest.mark.engine

OPEN_API_ROUTES = {"/health", "/ready"}
# FastAPI's own documentation pages: plain routes, not API routes, and no data behind them.
DOCUMENTATION_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every API route the app serves, found rather than listed, so a
    route added later is covered without touching this test."""
    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    )


async def call(client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    # An empty body: a route that checks the token first answers 401/403, not 422.
    return await client.request(method, path, json={} if method == "POST" else None)


async def test_every_api_route_demands_a_token_and_only_the_probes_do_not(
    minilm_scorer: Scorer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    wrong_scope = auth_headers(scopes=("search:read",))
    # Probes are logged only when asked (kubelet calls them every few seconds): here they are,
    # to show their lines carry no subject.
    async with serving(minilm_scorer, log_probes=True) as (app, authorised):
        tokens = [
            headers["Authorization"].removeprefix("Bearer ")
            for headers in (wrong_scope, authorised.headers)
        ]
        routes = api_routes(app)
        protected = [(method, path) for method, path in routes if path not in OPEN_API_ROUTES]
        assert {path for _, path in routes} >= OPEN_API_ROUTES | {"/v1/rerank", "/v2/rerank"}
        other_routes = {getattr(r, "path", None) for r in app.routes if not isinstance(r, APIRoute)}
        assert other_routes <= DOCUMENTATION_ROUTES
        metrics = app.state.metrics
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://kuberank.test"
        ) as anonymous:
            for method, path in protected:
                missing = await call(anonymous, method, path)
                assert_rejected(missing, status=401, error_type="authentication_error")

                anonymous.headers.update(wrong_scope)
                lacking = await call(anonymous, method, path)
                del anonymous.headers["Authorization"]
                assert_rejected(lacking, status=403, error_type="permission_error")

                allowed = await call(authorised, method, path)
                assert allowed.status_code not in (401, 403), (method, path, allowed.text)

            for path in sorted(OPEN_API_ROUTES):
                assert (await anonymous.get(path)).status_code == 200, path

    count = len(protected)
    assert (
        metrics.registry.get_sample_value(
            "kuberank_auth_failures_total", {"reason": "missing_token"}
        )
        == count
    )
    assert (
        metrics.registry.get_sample_value(
            "kuberank_auth_failures_total", {"reason": "missing_scope"}
        )
        == count
    )
    request_lines = [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == "kuberank_server.requests"
    ]
    subjects = {line["route"]: line["subject"] for line in request_lines if line["status"] == 200}
    assert subjects["/v1/models"] == "server-tests"
    assert subjects["/health"] is None
    assert_token_not_logged(caplog, *tokens)
