"""Limits and bad bodies: each gets its status and the error envelope, and the server keeps
serving the seed example right after."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests.server.harness import (
    SEED_DOCUMENTS,
    SEED_LAST_INDEX,
    SEED_QUERY,
    error_of,
    ranked_indices,
    serving,
)

from kuberank_server.engine.scorer import Scorer

pytestmark = pytest.mark.engine

SEED = {"query": SEED_QUERY, "documents": SEED_DOCUMENTS}


async def still_serves(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/rerank", json=SEED)
    assert response.status_code == 200, response.text
    assert ranked_indices(response)[-1] == SEED_LAST_INDEX


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"query": SEED_QUERY, "documents": []}, 422, "documents"),
        ({"query": SEED_QUERY, "documents": [1, "text"]}, 422, "documents.0"),
        ({"query": SEED_QUERY, "documents": [{"text": "x"}]}, 422, "documents.0"),
        ({"query": SEED_QUERY, "documents": "not a list"}, 422, "documents"),
        ({"query": "", "documents": SEED_DOCUMENTS}, 422, "query"),
        ({"documents": SEED_DOCUMENTS}, 422, "query"),
        ({**SEED, "top_n": 0}, 422, "top_n"),
        ({**SEED, "top_n": -3}, 422, "top_n"),
        ({**SEED, "top_n": "two"}, 422, "top_n"),
        ({"query": SEED_QUERY, "documents": ["d"] * 10_000}, 413, "documents"),
        ([SEED_QUERY], 422, None),
    ],
)
async def test_bad_rerank_bodies(
    minilm_scorer: Scorer, body: object, status: int, param: str | None
) -> None:
    async with serving(minilm_scorer) as (_, client):
        response = await client.post("/v1/rerank", json=body)
        assert response.status_code == status, response.text
        error = error_of(response)
        assert error["param"] == param
        assert error["message"]
        await still_serves(client)


async def test_top_n_larger_than_the_list_returns_every_document(minilm_scorer: Scorer) -> None:
    async with serving(minilm_scorer) as (_, client):
        response = await client.post("/v1/rerank", json={**SEED, "top_n": 50})
    assert sorted(ranked_indices(response)) == [0, 1, 2, 3]


async def test_bad_bytes_and_media_types(minilm_scorer: Scorer) -> None:
    async with serving(minilm_scorer, max_body_bytes=64 * 1024) as (_, client):
        invalid_json = await client.post(
            "/v1/rerank", content=b'{"query": "q", "documents": [', headers=_json
        )
        not_utf8 = await client.post("/v1/rerank", content=b"\xff\xfe{}", headers=_json)
        form = await client.post("/v1/rerank", data={"query": "q"})
        no_type = await client.post("/v1/rerank", content=b"{}")
        too_big = await client.post(
            "/v1/rerank", json={"query": SEED_QUERY, "documents": ["x" * 70_000]}
        )
        wrong_method = await client.get("/v1/rerank")
        unknown = await client.post("/v1/nothing-here", json=SEED)
        assert (invalid_json.status_code, error_of(invalid_json)["type"]) == (
            400, "invalid_request_error"
        )  # fmt: skip
        assert not_utf8.status_code == 400
        assert (form.status_code, error_of(form)["type"]) == (415, "unsupported_media_type")
        assert no_type.status_code == 415
        assert (too_big.status_code, error_of(too_big)["param"]) == (413, "body")
        assert (wrong_method.status_code, error_of(wrong_method)["type"]) == (
            405, "method_not_allowed"
        )  # fmt: skip
        assert error_of(unknown)["type"] == "not_found"
        await still_serves(client)


_json = {"Content-Type": "application/json"}


async def test_one_megabyte_document_is_truncated_to_the_model(minilm_scorer: Scorer) -> None:
    huge = "Indexes speed up database queries. " * 30_000  # ~1 MB
    # 5,000 characters are ~1,000 tokens: cut to the same 256-token prefix as the whole text.
    same_prefix = huge[:5_000]
    async with serving(minilm_scorer) as (app, client):
        before = app.state.metrics.truncated_documents_total._value.get()
        response = await client.post(
            "/v1/rerank",
            json={"query": SEED_QUERY, "documents": [huge, same_prefix, SEED_DOCUMENTS[0]],
                  "return_documents": False},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        scores = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
        assert scores[0] == pytest.approx(scores[1], abs=1e-6)
        assert scores[0] != pytest.approx(scores[2], abs=1e-3)
        # The embedded model reads 256 tokens: the documents were cut, not the request refused.
        assert response.json()["usage"]["prompt_tokens"] <= 4 * 256
        assert app.state.metrics.truncated_documents_total._value.get() == before + 2
        await still_serves(client)


async def test_long_inputs_rejected_when_truncation_is_off(minilm_scorer: Scorer) -> None:
    long_document = "word " * 300
    async with serving(minilm_scorer, truncate=False, max_query_tokens=8) as (_, client):
        document = await client.post(
            "/v1/rerank", json={"query": "database speed", "documents": ["ok", long_document]}
        )
        query = await client.post(
            "/v1/rerank", json={"query": "one two three four five six seven eight nine ten",
                                "documents": ["ok"]},
        )  # fmt: skip
        tei = await client.post(
            "/rerank", json={"query": "database speed", "texts": [long_document], "truncate": True}
        )
        assert (document.status_code, error_of(document)["param"]) == (413, "documents[1]")
        assert (query.status_code, error_of(query)["param"]) == (413, "query")
        assert tei.status_code == 200  # the request's own truncate=true wins
        short = await client.post("/v1/rerank", json={"query": "database speed",
                                                      "documents": SEED_DOCUMENTS})  # fmt: skip
        assert short.status_code == 200


async def test_max_tokens_per_doc_truncates(minilm_scorer: Scorer) -> None:
    async with serving(minilm_scorer) as (_, client):
        full = await client.post("/v2/rerank", json=SEED)
        cut = await client.post("/v2/rerank", json={**SEED, "max_tokens_per_doc": 2})
    full_scores = {r["index"]: r["relevance_score"] for r in full.json()["results"]}
    cut_scores = {r["index"]: r["relevance_score"] for r in cut.json()["results"]}
    assert cut_scores[0] != pytest.approx(full_scores[0], abs=1e-3)


async def test_unicode_documents(minilm_scorer: Scorer) -> None:
    documents = [
        "数据库索引可以加快查询速度。",
        "Ünïcödé — emoji 🚀🔥 and RTL עברית",
        "\u0000\u200b",
    ]
    async with serving(minilm_scorer) as (_, client):
        response = await client.post(
            "/v1/rerank", json={"query": "数据库 查询 性能?", "documents": documents}
        )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert {r["document"]["text"] for r in results} == set(documents)


async def test_queue_overflow_gets_429_with_retry_after(minilm_scorer: Scorer) -> None:
    many = [f"{document} #{i}" for i, document in enumerate(SEED_DOCUMENTS * 16)]
    async with serving(minilm_scorer, max_concurrent_requests=1, max_queued_requests=1) as (
        app,
        client,
    ):
        responses = await asyncio.gather(
            *(client.post("/v1/rerank", json={"query": SEED_QUERY, "documents": many})
              for _ in range(8))
        )  # fmt: skip
        codes = sorted(response.status_code for response in responses)
        assert codes.count(200) >= 2, codes
        assert set(codes) == {200, 429}, codes
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["Retry-After"]) >= 1
        assert error_of(refused)["type"] == "rate_limit_error"
        assert "expected wait" in error_of(refused)["message"]
        assert app.state.concurrency_limiter.in_flight == app.state.concurrency_limiter.waiting == 0
        await still_serves(client)


async def test_not_ready_until_the_golden_query_passes(qwen3_scorer: Scorer) -> None:
    """A random model cannot rank the golden query: the server must refuse to turn ready."""
    async with serving(qwen3_scorer) as (app, client):
        ready = await client.get("/ready")
        rerank = await client.post("/v1/rerank", json=SEED)
    assert app.state.lifecycle.state == "failed"
    assert ready.status_code == 503
    assert "golden query" in error_of(ready)["message"]
    assert rerank.status_code == 503
    assert error_of(rerank)["type"] == "service_unavailable"


async def test_not_ready_while_the_engine_starts(minilm_scorer: Scorer) -> None:
    async with serving(minilm_scorer, wait_for_startup=False) as (app, client):
        # The start-up task has not run yet: nothing is served before the golden query.
        assert app.state.lifecycle.state == "starting"
        ready = await client.get("/ready")
        rerank = await client.post("/v1/rerank", json=SEED)
        assert (ready.status_code, rerank.status_code) == (503, 503)
        assert rerank.headers["Retry-After"]
        await asyncio.wait_for(app.state.lifecycle.settled.wait(), 60)
        assert (await client.get("/ready")).status_code == 200
        await still_serves(client)


async def test_clients_reusing_a_request_id_do_not_collide(minilm_scorer: Scorer) -> None:
    async with serving(minilm_scorer) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/v1/rerank", json=SEED, headers={"X-Request-Id": "same-id"})
              for _ in range(4))
        )  # fmt: skip
    assert [response.status_code for response in responses] == [200] * 4
    assert {response.headers["x-request-id"] for response in responses} == {"same-id"}
    assert len({response.json()["id"] for response in responses}) == 4


async def test_a_dead_engine_fails_liveness_and_readiness(
    minilm_scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(minilm_scorer) as (_, client):
        assert (await client.get("/health")).status_code == 200
        # Stand-in for an engine process that crashed: vLLM's own flag says so.
        monkeypatch.setattr(type(minilm_scorer.engine), "errored", property(lambda _: True))
        health, ready = await client.get("/health"), await client.get("/ready")
    assert (health.status_code, ready.status_code) == (503, 503)
    assert "died" in error_of(health)["message"]
