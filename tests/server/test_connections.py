"""Connection recycling on real uvicorn over loopback TCP, seen by a pooled keep-alive client
(httpx with one connection): `Connection: close` exactly on the N-th response and on the first
response after T seconds, never cutting a request, and on every response while draining."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from tests.server.harness import (
    SEED_DOCUMENTS,
    SEED_LAST_INDEX,
    SEED_QUERY,
    auth_headers,
    ranked_indices,
    serving_over_tcp,
)

from kuberank_server.engine.scorer import Scorer

pytestmark = pytest.mark.engine

SEED = {"query": SEED_QUERY, "documents": SEED_DOCUMENTS}


async def note_client_port(response: httpx.Response) -> None:
    """Keeps the client-side port of the TCP connection that carries `response`, read while
    that connection is still open (a `Connection: close` response closes it once read)."""
    stream = response.extensions["network_stream"]
    response.extensions["client_port"] = int(stream.get_extra_info("client_addr")[1])


def one_connection_client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers=auth_headers(),
        timeout=120,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        event_hooks={"response": [note_client_port]},
    )


def client_port(response: httpx.Response) -> int:
    return int(response.extensions["client_port"])


def closes(response: httpx.Response) -> bool:
    return response.headers.get("connection", "").lower() == "close"


def recycled_total(app: object) -> float:
    registry = app.state.metrics.registry  # type: ignore[attr-defined]
    return registry.get_sample_value("kuberank_connections_recycled_total") or 0.0


async def rerank(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.post("/v1/rerank", json=SEED)
    assert response.status_code == 200, response.text
    # The whole body arrived: a cut response would not parse or would lack results.
    assert ranked_indices(response)[-1] == SEED_LAST_INDEX
    return response


async def test_close_exactly_on_the_nth_response(minilm_scorer: Scorer) -> None:
    async with (
        serving_over_tcp(
            minilm_scorer, max_requests_per_connection=3, max_connection_age_seconds=0
        ) as (app, url),
        one_connection_client(url) as client,
    ):
        responses = [await rerank(client) for _ in range(7)]
        assert [closes(r) for r in responses] == [False, False, True] * 2 + [False]
        ports = [client_port(r) for r in responses]
        # Three requests per connection, then the pool reconnects on a new one.
        assert ports[0] == ports[1] == ports[2]
        assert ports[3] == ports[4] == ports[5]
        assert len({ports[0], ports[3], ports[6]}) == 3
        assert recycled_total(app) == 2


async def test_close_on_the_first_response_after_the_connection_age(
    minilm_scorer: Scorer,
) -> None:
    async with (
        serving_over_tcp(
            minilm_scorer, max_requests_per_connection=0, max_connection_age_seconds=1
        ) as (app, url),
        one_connection_client(url) as client,
    ):
        first = await rerank(client)
        second = await rerank(client)
        assert not closes(first) and not closes(second)
        await asyncio.sleep(1.2)  # below uvicorn's 5 s idle keep-alive timeout
        aged = await rerank(client)
        fresh = await rerank(client)
        assert closes(aged) and not closes(fresh)
        assert client_port(first) == client_port(second) == client_port(aged)
        assert client_port(fresh) != client_port(aged)
        assert recycled_total(app) == 1


async def test_both_off_keeps_one_connection(minilm_scorer: Scorer) -> None:
    async with (
        serving_over_tcp(
            minilm_scorer, max_requests_per_connection=0, max_connection_age_seconds=0
        ) as (app, url),
        one_connection_client(url) as client,
    ):
        responses = [await rerank(client) for _ in range(5)]
        assert not any(closes(r) for r in responses)
        assert len({client_port(r) for r in responses}) == 1
        assert recycled_total(app) == 0


async def test_requests_in_flight_when_recycled_finish(minilm_scorer: Scorer) -> None:
    """Eight pooled callers keep requests in flight while their connections age out and
    reach their request count: every request is answered whole, many on a closing
    connection, and the callers move to new connections without an error."""
    callers, seconds = 8, 3.0
    async with serving_over_tcp(
        minilm_scorer, max_requests_per_connection=5, max_connection_age_seconds=1
    ) as (app, url):

        async def caller() -> tuple[int, set[int]]:
            """Calls for `seconds`, and at least until one request after a recycle."""
            closing, ports = 0, set()
            async with one_connection_client(url) as client:
                started, reconnected = time.monotonic(), False
                while time.monotonic() - started < seconds or not reconnected:
                    response = await rerank(client)
                    reconnected = reconnected or closing > 0
                    closing += closes(response)
                    ports.add(client_port(response))
            return closing, ports

        async with asyncio.timeout(300):
            results = await asyncio.gather(*(caller() for _ in range(callers)))
    closing = sum(result[0] for result in results)
    # Every caller was recycled at least once and went on, answered, on a new connection.
    assert all(result[0] >= 1 and len(result[1]) >= 2 for result in results), results
    assert recycled_total(app) == closing


async def test_every_response_closes_its_connection_while_draining(
    minilm_scorer: Scorer,
) -> None:
    async with (
        serving_over_tcp(minilm_scorer) as (app, url),
        one_connection_client(url) as client,
    ):
        assert not closes(await rerank(client))
        many = {"query": SEED_QUERY, "documents": SEED_DOCUMENTS * 32}
        in_flight = asyncio.create_task(client.post("/v1/rerank", json=many))
        async with asyncio.timeout(30):
            while app.state.concurrency_limiter.in_flight == 0:  # noqa: ASYNC110 (admitted, scoring)
                await asyncio.sleep(0.001)
        app.state.lifecycle.begin_drain()
        finished = await in_flight
        assert finished.status_code == 200, finished.text
        assert len(finished.json()["results"]) == len(many["documents"])
        assert closes(finished)
        refused = await client.post("/v1/rerank", json=SEED)
        assert refused.status_code == 503 and closes(refused)
