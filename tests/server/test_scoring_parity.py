"""Scores equal an independent reference within 1e-3, through the HTTP API: plain transformers
for Qwen3-Reranker's formula and for a cross-encoder, sentence-transformers' cosine for the
bi-encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.server.harness import SEED_DOCUMENTS, SEED_QUERY, serving

from kuberank_server.engine.prompts import EngineInput, format_qwen3_prompt
from kuberank_server.engine.scorer import Scorer, embedded_model_path
from kuberank_server.runtime.settings import DEFAULT_INSTRUCTION

pytestmark = pytest.mark.engine

QWEN3_DOCUMENTS = [
    *SEED_DOCUMENTS,
    "Ünïcödé tëxt — with emoji 🚀 and 中文 characters.",
    "",
]


def reference_qwen3_scores(
    model_path: Path, instruction: str, query: str, documents: list[str]
) -> list[float]:
    """P(yes) from the no/yes logits at the last position of the formatted prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32).eval()
    no_id, yes_id = tokenizer.convert_tokens_to_ids(["no", "yes"])
    scores = []
    for document in documents:
        prompt = format_qwen3_prompt(instruction, query, document)
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1, [no_id, yes_id]]
        scores.append(float(torch.softmax(last, dim=0)[1]))
    return scores


async def test_qwen3_scores_match_transformers_reference(
    qwen3_scorer: Scorer, tiny_qwen3_path: Path
) -> None:
    assert qwen3_scorer.kind == "qwen3-reranker"  # detected from the name, model_kind auto
    # Every document's prompt starts with the same instruction and query: vLLM caches it.
    assert qwen3_scorer.engine.vllm_config.cache_config.enable_prefix_caching
    async with serving(qwen3_scorer, golden_query_check=False) as (_, client):
        response = await client.post(
            "/v1/rerank", json={"query": SEED_QUERY, "documents": QWEN3_DOCUMENTS}
        )
    assert response.status_code == 200, response.text
    served = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    expected = reference_qwen3_scores(tiny_qwen3_path, DEFAULT_INSTRUCTION, SEED_QUERY,
                                      QWEN3_DOCUMENTS)  # fmt: skip
    # The random model must spread its scores, or agreement would prove nothing.
    assert max(expected) - min(expected) > 0.05, expected
    for index, value in enumerate(expected):
        assert served[index] == pytest.approx(value, abs=1e-3), (index, served, expected)


async def test_qwen3_instruction_per_request_overrides_the_default(
    qwen3_scorer: Scorer, tiny_qwen3_path: Path
) -> None:
    instruction = "Judge whether the passage is about databases"
    async with serving(qwen3_scorer, golden_query_check=False) as (_, client):
        response = await client.post(
            "/v1/rerank",
            json={"query": SEED_QUERY, "documents": SEED_DOCUMENTS, "instruction": instruction},
        )
    served = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    expected = reference_qwen3_scores(tiny_qwen3_path, instruction, SEED_QUERY, SEED_DOCUMENTS)
    default = reference_qwen3_scores(tiny_qwen3_path, DEFAULT_INSTRUCTION, SEED_QUERY,
                                     SEED_DOCUMENTS)  # fmt: skip
    assert [served[i] for i in range(4)] == pytest.approx(expected, abs=1e-3)
    assert expected != pytest.approx(default, abs=1e-3)  # the instruction reached the model


async def test_bi_encoder_scores_match_sentence_transformers_cosine(
    minilm_scorer: Scorer,
) -> None:
    from sentence_transformers import SentenceTransformer

    # Encoder-only: no KV cache to share, so vLLM leaves prefix caching off (forcing it on
    # would crash the engine).
    assert not minilm_scorer.engine.vllm_config.cache_config.enable_prefix_caching
    documents = [*SEED_DOCUMENTS, "Ünïcödé — 中文 🚀"]
    async with serving(minilm_scorer) as (_, client):
        response = await client.post(
            "/v1/rerank", json={"query": SEED_QUERY, "documents": documents}
        )
    served = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    model = SentenceTransformer(embedded_model_path(), device="cpu")
    query_vector, *document_vectors = model.encode([SEED_QUERY, *documents], convert_to_tensor=True)
    expected = [float(torch.cosine_similarity(query_vector, v, dim=0)) for v in document_vectors]
    assert max(expected) - min(expected) > 0.1
    assert [served[i] for i in range(len(documents))] == pytest.approx(expected, abs=1e-3)


async def test_cross_encoder_scores_match_transformers_with_segments(
    cross_encoder_scorer: Scorer, tiny_cross_encoder_path: Path
) -> None:
    """Pins vLLM's internal `compressed_token_type_ids`: without the document's segment ids
    a BERT cross-encoder scores a different input."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert cross_encoder_scorer.kind == "cross-encoder"  # detected from the config
    async with serving(cross_encoder_scorer, golden_query_check=False) as (_, client):
        response = await client.post("/v1/rerank", json={"query": SEED_QUERY,
                                                         "documents": SEED_DOCUMENTS})  # fmt: skip
    served = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_path).eval()
    pairs = tokenizer([SEED_QUERY] * 4, SEED_DOCUMENTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.sigmoid(model(**pairs).logits[:, 0]).tolist()
        pairs["token_type_ids"].zero_()
        without_segments = torch.sigmoid(model(**pairs).logits[:, 0]).tolist()
    assert max(expected) - min(expected) > 0.05, expected
    assert expected != pytest.approx(without_segments, abs=1e-3)
    assert [served[i] for i in range(4)] == pytest.approx(expected, abs=1e-3)


def test_inputs_are_rendered_the_way_vllm_serves_them(minilm_scorer: Scorer) -> None:
    """Pins the internal API the scorer relies on: a rendered input (a dict with a "type")
    makes `AsyncLLM.add_request` skip its thread-pool preprocessing."""
    rendered = minilm_scorer.render(EngineInput([101, 7592, 102]))
    assert isinstance(rendered, dict) and "type" in rendered
    assert rendered["prompt_token_ids"] == [101, 7592, 102]
