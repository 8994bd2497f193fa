"""The issue's seed example through every dialect the server speaks, in each one's shape."""

from __future__ import annotations

import pytest
from tests.server.harness import (
    SEED_DOCUMENTS,
    SEED_LAST_INDEX,
    SEED_QUERY,
    ranked_indices,
    serving,
)

from kuberank_server.engine.scorer import Scorer

pytestmark = pytest.mark.engine

SEED = {"query": SEED_QUERY, "documents": SEED_DOCUMENTS}


async def test_seed_example_third_document_last_in_every_dialect(minilm_scorer: Scorer) -> None:
    async with serving(minilm_scorer) as (_, client):
        jina_v1 = await client.post("/v1/rerank", json=SEED)
        jina = await client.post("/rerank", json={"model": "any", **SEED})
        cohere = await client.post("/v2/rerank", json={"model": "rerank-v3.5", **SEED})
        tei = await client.post("/rerank", json={"query": SEED_QUERY, "texts": SEED_DOCUMENTS})
        nim = await client.post(
            "/v1/ranking",
            json={"model": "nv-rerank", "query": {"text": SEED_QUERY},
                  "passages": [{"text": d} for d in SEED_DOCUMENTS]},
        )  # fmt: skip
        score = await client.post(
            "/v1/score", json={"text_1": SEED_QUERY, "text_2": SEED_DOCUMENTS}
        )
    for response in (jina_v1, jina, cohere, tei, nim, score):
        assert response.status_code == 200, response.text
    for response in (jina_v1, jina, cohere):
        assert ranked_indices(response)[-1] == SEED_LAST_INDEX
    assert ranked_indices(tei, key="")[-1] == SEED_LAST_INDEX
    assert ranked_indices(nim, key="rankings")[-1] == SEED_LAST_INDEX
    scores = [item["score"] for item in score.json()["data"]]
    assert min(range(4), key=scores.__getitem__) == SEED_LAST_INDEX

    # Each answer in its own service's shape.
    body = jina_v1.json()
    assert set(body) == {"id", "model", "usage", "results"}
    assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    assert body["results"][0] == {
        "index": 0,
        "relevance_score": pytest.approx(0.640, abs=1e-3),
        "document": {"text": SEED_DOCUMENTS[0]},
    }
    assert cohere.json()["meta"] == {
        "api_version": {"version": "2"}, "billed_units": {"search_units": 1}
    }  # fmt: skip
    assert set(cohere.json()["results"][0]) == {"index", "relevance_score"}
    assert set(tei.json()[0]) == {"index", "score"}
    assert set(nim.json()) == {"rankings", "usage"}
    assert set(nim.json()["rankings"][0]) == {"index", "logit"}
    assert [item["index"] for item in score.json()["data"]] == [0, 1, 2, 3]
    # All dialects agree on the numbers.
    by_jina = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert {r["index"]: r["score"] for r in tei.json()} == by_jina
    assert dict(enumerate(scores)) == by_jina


async def test_options_of_each_dialect(minilm_scorer: Scorer) -> None:
    async with serving(minilm_scorer) as (_, client):
        top_two = await client.post("/v1/rerank", json={**SEED, "top_n": 2,
                                                         "return_documents": False})  # fmt: skip
        cohere_top = await client.post("/v2/rerank", json={**SEED, "top_n": 1})
        tei_text = await client.post(
            "/rerank",
            json={"query": SEED_QUERY, "texts": SEED_DOCUMENTS, "return_text": True,
                  "raw_scores": True},
        )  # fmt: skip
        pairs = await client.post(
            "/v1/score", json={"text_1": [SEED_QUERY, "cats"], "text_2": SEED_DOCUMENTS[:2]}
        )
        one_pair = await client.post(
            "/v1/score", json={"text_1": SEED_QUERY, "text_2": SEED_DOCUMENTS[0]}
        )
    assert [set(r) for r in top_two.json()["results"]] == [{"index", "relevance_score"}] * 2
    assert ranked_indices(top_two) == [0, 3]
    assert ranked_indices(cohere_top) == [0]
    assert tei_text.json()[0]["text"] == SEED_DOCUMENTS[0]
    pair_scores = [item["score"] for item in pairs.json()["data"]]
    assert pair_scores[0] == pytest.approx(0.640, abs=1e-3)
    assert pair_scores[1] != pytest.approx(0.278, abs=1e-3)  # scored against "cats"
    assert [item["score"] for item in one_pair.json()["data"]] == [pytest.approx(0.640, abs=1e-3)]


async def test_models_docs_and_probes(minilm_scorer: Scorer) -> None:
    async with serving(minilm_scorer) as (_, client):
        models = await client.get("/v1/models")
        openapi = await client.get("/openapi.json")
        docs = await client.get("/docs")
        health = await client.get("/health", headers={"Authorization": ""})
        ready = await client.get("/ready", headers={"Authorization": ""})
    assert models.json()["data"][0]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert models.json()["data"][0]["max_model_len"] == 256
    paths = set(openapi.json()["paths"])
    assert {"/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/v1/ranking"} <= paths
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert (health.status_code, ready.status_code) == (200, 200)
