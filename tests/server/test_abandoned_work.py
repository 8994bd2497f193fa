"""Work nobody will read (issue 19, items 1 and 2): a client that goes away has its engine work
aborted within a second (499), and a drain whose budget is spent cuts what is left and answers
it 503 in the envelope with Retry-After, never 500. The real engine, over real TCP."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.server.harness import (
    SEED_DOCUMENTS,
    SEED_QUERY,
    auth_headers,
    server_settings,
    started,
)
from tests.support import free_port

from kuberank_server.engine.scorer import Scorer
from kuberank_server.http.app import create_app
from kuberank_server.http.http_limits import api_server_config
from kuberank_server.runtime.lifecycle import DrainingServer

pytestmark = pytest.mark.engine


def unfinished_engine_requests(scorer: Scorer) -> int:
    return int(scorer.engine.output_processor.get_num_unfinished_requests())


def long_documents(count: int) -> list[str]:
    """Documents at the embedded model's 256-token cut: about a second of CPU per ten."""
    return [(f"[{i}] " + " ".join(SEED_DOCUMENTS) + " ") * 12 for i in range(count)]


@asynccontextmanager
async def draining_server(
    scorer: Scorer, drain_seconds: float, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, DrainingServer, str]]:
    """The app on `serve`'s own server class and protocol, in this event loop, ready; the
    server drains for `drain_seconds`, while admission is told of no drain budget (so that
    more work is accepted than the drain can finish, as a wrong estimate would)."""
    settings = server_settings(
        host="127.0.0.1", port=free_port(), drain_timeout_seconds=0,
        max_queue_wait_seconds=600, **overrides,
    )  # fmt: skip
    app = create_app(settings, scorer=scorer)
    config = api_server_config(app, settings, protocol=app.state.connection_recycler.protocol)
    server = DrainingServer(config, app.state.lifecycle, drain_seconds)
    async with started(server, app):
        yield app, server, f"http://127.0.0.1:{settings.port}"


async def test_a_client_that_goes_away_has_its_engine_work_aborted_within_a_second(
    minilm_scorer: Scorer,
) -> None:
    body = json.dumps({"query": SEED_QUERY, "documents": long_documents(300),
                       "return_documents": False}).encode()  # fmt: skip
    token = auth_headers()["Authorization"]
    async with draining_server(minilm_scorer, 20) as (app, _, url):
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        async with asyncio.timeout(30):
            while unfinished_engine_requests(minilm_scorer) == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(1)  # well into its scoring (it needs about 30 s of CPU here)
        assert unfinished_engine_requests(minilm_scorer) > 0
        writer.close()
        closed_at = time.monotonic()
        async with asyncio.timeout(5):
            while unfinished_engine_requests(minilm_scorer) > 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        aborted_after = time.monotonic() - closed_at
        await asyncio.sleep(0.2)  # the request's own task finishes unwinding
        counted = app.state.metrics.requests_total.labels(route="/v1/rerank", code="499")._value
        assert counted.get() == 1
        # The engine serves the next request as before.
        async with httpx.AsyncClient(base_url=url, headers=auth_headers()) as client:
            after = await client.post(
                "/v1/rerank", json={"query": SEED_QUERY, "documents": SEED_DOCUMENTS}
            )
    assert aborted_after < 1.0, aborted_after
    assert after.status_code == 200
    assert reader.at_eof() or not await reader.read(1)


async def test_a_drain_past_its_budget_answers_what_is_left_503_never_500(
    minilm_scorer: Scorer,
) -> None:
    async with draining_server(minilm_scorer, 1.0) as (app, server, url):
        async with httpx.AsyncClient(base_url=url, headers=auth_headers(), timeout=60) as client:
            # Far more than 1 s of work, all admitted (see `draining_server`).
            body = {"query": SEED_QUERY, "documents": long_documents(40)}
            calls = [asyncio.create_task(client.post("/v1/rerank", json=body)) for _ in range(8)]
            async with asyncio.timeout(30):
                while app.state.concurrency_limiter.in_flight < 8:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            server.handle_exit(signal.SIGTERM, None)
            responses = await asyncio.gather(*calls)
        async with asyncio.timeout(10):
            while not server.should_exit:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    statuses = [response.status_code for response in responses]
    assert 503 in statuses, statuses
    assert set(statuses) <= {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.json()["error"]["type"] == "service_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
            assert response.headers["Connection"] == "close"
    assert unfinished_engine_requests(minilm_scorer) == 0
