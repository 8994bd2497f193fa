"""What the application answers before any engine work: redirects, methods, media types,
undecodable bodies, request ids, disconnects, stalled bodies, OpenAPI (issue 13, items 4-6).

The app is the real one from `create_app`; its lifespan (the engine) is not started, so
these run in milliseconds: everything here is decided before a request reaches a scorer.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.server.harness import auth_headers, error_of, server_settings

from kuberank_server.http.app import create_app
from kuberank_server.http.errors import NotReadyError

SEED = {"query": "q", "documents": ["d"]}
URL = "http://kuberank.test/v1/rerank"
SCORING_ROUTES = ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/v1/ranking")


@asynccontextmanager
async def client_of(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(server_settings(**overrides))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://kuberank.test", headers=auth_headers()
    ) as client:
        yield app, client


def requests_counted(app: FastAPI, route: str, code: int) -> float:
    value = app.state.metrics.registry.get_sample_value(
        "kuberank_requests_total", {"route": route, "code": str(code)}
    )
    return value or 0.0


async def test_no_redirect_is_built_from_the_host_header() -> None:
    async with client_of() as (_, client):
        response = await client.post(
            "/v1/rerank/", json=SEED, headers={"Host": "evil.example"}, follow_redirects=False
        )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert error_of(response)["type"] == "not_found"


@pytest.mark.parametrize("path", ["/health", "/ready", "/v1/models"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_wrong_method_on_a_read_route_gets_405_with_allow(path: str, method: str) -> None:
    async with client_of() as (_, client):
        response = await client.request(method, path, content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert error_of(response)["type"] == "method_not_allowed"


@pytest.mark.parametrize("path", SCORING_ROUTES)
async def test_wrong_method_on_a_scoring_route_gets_405_with_allow(path: str) -> None:
    async with client_of() as (_, client):
        for method in ("GET", "PUT", "DELETE"):
            response = await client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"query": "\xff\xfe", "documents": ["d"]}', id="invalid-utf8"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, id="10000-deep"),
        pytest.param(b'{"query": "q", "documents": [', id="truncated"),
    ],
)
async def test_undecodable_bodies_are_invalid_json_like_any_other(content: bytes) -> None:
    async with client_of() as (_, client):
        response = await client.post(
            "/v1/rerank", content=content, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


async def test_compressed_bodies_are_refused_with_415() -> None:
    async with client_of() as (_, client):
        response = await client.post(
            "/v1/rerank",
            content=gzip.compress(json.dumps(SEED).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    assert response.status_code == 415
    assert (error_of(response)["type"], error_of(response)["param"]) == (
        "unsupported_media_type", "content-encoding"
    )  # fmt: skip
    assert response.headers["accept-encoding"] == "identity"


async def test_two_content_types_are_refused_whichever_comes_first() -> None:
    async with client_of() as (app, client):
        for first, second in (("text/plain", "application/json"),
                              ("application/json", "text/plain")):  # fmt: skip
            response = await client.post(
                "/v1/rerank",
                content=json.dumps(SEED).encode(),
                headers=[("Content-Type", first), ("Content-Type", second)],
            )
            assert response.status_code == 415, response.text
            assert error_of(response)["param"] == "content-type"
        assert requests_counted(app, "/v1/rerank", 415) == 2


async def test_guard_answers_are_counted_under_their_route() -> None:
    async with client_of(max_body_bytes=1024) as (app, client):
        await client.post("/v2/rerank", json={"query": "q", "documents": ["x" * 2000]})
        await client.post("/v2/rerank", content=b"{}", headers={"Content-Type": "text/plain"})
    assert requests_counted(app, "/v2/rerank", 413) == 1
    assert requests_counted(app, "/v2/rerank", 415) == 1
    assert requests_counted(app, "unmatched", 413) == requests_counted(app, "unmatched", 415) == 0


async def call_with_body_chunks(
    app: FastAPI, chunks: list[dict[str, Any]], *, stall: bool
) -> list[dict[str, Any]]:
    """Drive the ASGI app directly: these body messages, then either a disconnect or
    nothing more (a client that stalled mid-upload)."""
    sent: list[dict[str, Any]] = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if stall:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"1000"),
               *((k.lower().encode(), v.encode()) for k, v in auth_headers().items())]  # fmt: skip
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "path": "/v1/rerank", "raw_path": b"/v1/rerank",
             "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1),
             "server": ("kuberank.test", 80), "scheme": "http", "root_path": ""}  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_a_client_gone_mid_body_is_counted_as_499_not_400() -> None:
    app = create_app(server_settings())
    sent = await call_with_body_chunks(
        app, [{"type": "http.request", "body": b'{"query": ', "more_body": True}], stall=False
    )
    assert sent == []  # nobody to answer
    assert requests_counted(app, "/v1/rerank", 499) == 1
    assert requests_counted(app, "/v1/rerank", 400) == 0


async def test_a_stalled_body_gets_a_json_408() -> None:
    app = create_app(server_settings(body_timeout_seconds=0.3))
    sent = await asyncio.wait_for(
        call_with_body_chunks(
            app, [{"type": "http.request", "body": b'{"query"', "more_body": True}], stall=True
        ),
        5,
    )
    start = sent[0]
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert json.loads(sent[1]["body"])["error"]["type"] == "request_timeout"


async def test_a_stalled_upload_does_not_hold_the_drain_and_gets_503_not_500() -> None:
    app = create_app(server_settings(body_timeout_seconds=60))
    lifecycle = app.state.lifecycle
    call = asyncio.create_task(
        call_with_body_chunks(
            app, [{"type": "http.request", "body": b'{"query"', "more_body": True}], stall=True
        )
    )
    await asyncio.sleep(0.3)
    assert lifecycle.active_requests == 1
    lifecycle.begin_drain()
    assert await lifecycle.wait_idle(2), "the drain waited for a body that never came"
    sent = await asyncio.wait_for(call, 1)
    assert sent[0]["status"] == 503
    body = json.loads(sent[1]["body"])
    assert body["error"]["type"] == "service_unavailable"
    assert "shutting down" in body["error"]["message"]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("trace-0123_abc:def/42", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("caf\u00e9", False),
        ("line\tbreak", False),
    ],
)
async def test_request_ids_are_taken_only_when_short_printable_ascii(sent: str, kept: bool) -> None:
    async with client_of() as (_, client):
        response = await client.get("/health", headers={"X-Request-Id": sent.encode("utf-8")})
    echoed = response.headers["x-request-id"]
    if kept:
        assert echoed == sent
    else:
        assert echoed.startswith("req-")
        assert echoed.isascii()


async def test_openapi_documents_the_bearer_scheme_and_every_error_status() -> None:
    async with client_of() as (_, client):
        document = (await client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert [scheme["scheme"] for scheme in schemes.values()] == ["bearer"]
    envelope_ref = "#/components/schemas/ErrorEnvelope"
    for path in SCORING_ROUTES:
        operation = document["paths"][path]["post"]
        assert operation["security"], path
        responses = operation["responses"]
        for status in ("400", "401", "403", "408", "413", "415", "422", "429", "503"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": envelope_ref}, (path, status)
    for path in ("/health", "/ready"):
        assert set(document["paths"][path]["get"]["responses"]) == {"200", "503"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


# --- issue 19: the second hostile probe ------------------------------------------------------
class StandInScoring:
    """Stands in for the engine-backed scoring where only what comes before it is tested
    (auth, body validation): it answers every request 503, naming itself."""

    async def rerank(self, *args: Any, **kwargs: Any) -> None:
        raise NotReadyError("stand-in scoring: no engine in this test")


@asynccontextmanager
async def ready_client_of(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with client_of(**overrides) as (app, client):
        app.state.rerank_scoring = StandInScoring()
        app.state.lifecycle.mark_ready()
        yield app, client


async def test_duplicate_credential_headers_are_refused_whichever_comes_first() -> None:
    good = auth_headers()["Authorization"]
    sent = [
        [("Authorization", good)],
        [("Authorization", good), ("Authorization", "Bearer bad")],
        [("Authorization", "Bearer bad"), ("Authorization", good)],
        [("Authorization", good), ("Authorization", good)],
        [("X-API-Key", "kr_first"), ("X-API-Key", "kr_second")],
    ]
    async with ready_client_of() as (app, client):
        # Exactly these headers (a client's defaults would merge them into one).
        answers = [
            await client.send(httpx.Request("POST", URL, json=SEED, headers=headers))
            for headers in sent
        ]
    # The request that passes auth reaches the stand-in.
    assert "stand-in" in error_of(answers[0])["message"]
    for answer in answers[1:]:
        assert answer.status_code == 401
        assert "sent more than once" in error_of(answer)["message"]
    assert (
        app.state.metrics.registry.get_sample_value(
            "kuberank_auth_failures_total", {"reason": "malformed_header"}
        )
        == len(sent) - 1
    )


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
async def test_the_api_documents_need_a_credential_unless_opened(path: str) -> None:
    async with client_of() as (_, client):
        with_credential = await client.get(path)
        without = await client.get(path, headers={"Authorization": ""})
    async with client_of(open_docs=True) as (_, client):
        opened = await client.get(path, headers={"Authorization": ""})
    assert with_credential.status_code == 200
    assert without.status_code == 401
    assert error_of(without)["type"] == "authentication_error"
    assert opened.status_code == 200


@pytest.mark.parametrize("path", ["/health", "/ready", "/v1/models", "/openapi.json", "/docs"])
async def test_head_is_answered_wherever_get_is(path: str) -> None:
    async with client_of(open_docs=True) as (_, client):
        got = await client.get(path)
        head = await client.head(path)
    assert head.status_code == got.status_code != 405
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/rerank", {**SEED, "return_documents": 0}, "return_documents"),
    ("/v1/rerank", {**SEED, "top_n": True}, "top_n"),
    ("/v1/rerank", {**SEED, "top_n": "2"}, "top_n"),
    ("/rerank", {"query": "q", "texts": ["a"], "return_text": 0}, "tei.return_text"),
    ("/v1/score", {"text_1": "q", "text_2": []}, "text_2"),
    ("/v1/score", {"text_1": [], "text_2": ["a"]}, "text_1"),
])  # fmt: skip
async def test_types_are_as_strict_as_the_schema_says(
    path: str, body: dict[str, Any], param: str
) -> None:
    async with ready_client_of() as (_, client):
        response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert str(error_of(response)["param"]).startswith(param)


async def test_the_request_log_is_budgeted_like_the_audit_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ready_client_of(audit_unauthenticated_records_per_second=5) as (_, client):
        client.headers.pop("Authorization")
        with caplog.at_level("INFO", logger="kuberank_server.requests"):
            for _ in range(40):
                assert (await client.post("/v1/rerank", json=SEED)).status_code == 401
            await asyncio.sleep(1.1)  # the summary follows the one-second window
    lines = [json.loads(record.getMessage()) for record in caplog.records
             if record.name == "kuberank_server.requests"]  # fmt: skip
    requests = [line for line in lines if "route" in line]
    suppressed = sum(line.get("suppressed", 0) for line in lines)
    assert len(requests) <= 10
    assert len(requests) + suppressed == 40
