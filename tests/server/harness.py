"""Helpers for the server tests: settings, tokens, an app served in-process, fixtures' models.

Apps run their real lifespan (engine readiness, golden query) over httpx's ASGI transport;
engines are shared per session (see conftest.py), so an app here costs milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from tests.support import free_port

from kuberank_server.auth.tokens import mint_token
from kuberank_server.engine.scorer import Scorer
from kuberank_server.http.app import create_app
from kuberank_server.runtime.settings import ServerSettings

SECRET = "server-tests-shared-secret-0123456789abcdef"
SEED_QUERY = "How to optimize database query performance?"
SEED_DOCUMENTS = [
    "Using indexes can speed up queries.",
    "Regularly cleaning unused data improves IO efficiency.",
    "Choosing the right data structure is key to algorithm design.",
    "Caching hot data effectively reduces database pressure.",
]
SEED_LAST_INDEX = 2  # the example: the third document ranks last


def server_settings(**overrides: Any) -> ServerSettings:
    return ServerSettings(jwt_secret=SECRET, **overrides)


def auth_headers(
    subject: str = "server-tests", scopes: Sequence[str] = ("rerank",)
) -> dict[str, str]:
    token = mint_token(key=SECRET, subject=subject, scopes=scopes, ttl_seconds=600)
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def serving(
    scorer: Scorer, wait_for_startup: bool = True, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app over `scorer` with its lifespan running, and a client authorised to call it."""
    app = create_app(server_settings(**overrides), scorer=scorer)
    async with app.router.lifespan_context(app):
        if wait_for_startup:
            await wait_out_startup(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://kuberank.test", headers=auth_headers(),
            timeout=120,
        ) as client:  # fmt: skip
            yield app, client


@asynccontextmanager
async def serving_over_tcp(scorer: Scorer, **overrides: Any) -> AsyncIterator[tuple[FastAPI, str]]:
    """An app over `scorer` on real uvicorn on loopback, in this event loop, with the protocol
    `serve` uses (connection recycling needs real TCP connections), ready; and its URL."""
    app = create_app(server_settings(**overrides), scorer=scorer)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=app.state.connection_recycler.protocol(),
    )
    async with started(uvicorn.Server(config), app):
        yield app, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def started(server: uvicorn.Server, app: FastAPI) -> AsyncIterator[uvicorn.Server]:
    """`server` serving `app` in this event loop, listening and past start-up, until the block
    ends."""
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(60):
            while not server.started:  # noqa: ASYNC110 (uvicorn sets a flag, no event)
                await asyncio.sleep(0.01)
        await wait_out_startup(app)
        yield server
    finally:
        server.should_exit = True
        await task


async def wait_out_startup(app: FastAPI, timeout_seconds: float = 60) -> None:
    async with asyncio.timeout(timeout_seconds):
        await app.state.lifecycle.settled.wait()


def ranked_indices(response: httpx.Response, key: str = "results") -> list[int]:
    body = response.json()
    items = body if key == "" else body[key]
    return [item["index"] for item in items]


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The envelope's inner object, checking the envelope's shape on the way."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message", "param"}, body
    return dict(body["error"])


# ------------------------------------------------------------- tiny Qwen3 reranker ----------
QWEN3_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN3_ADDED_TOKENS = ["<think>", "</think>"]


def build_tiny_qwen3_reranker(directory: Path) -> Path:
    """A random 2-layer Qwen3 causal LM with a small byte-level BPE tokenizer, saved as a
    Hugging Face checkpoint named like the real ones ("...-Reranker")."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from kuberank_server.engine.prompts import format_qwen3_prompt

    target = directory / "tiny-Qwen3-Reranker"
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # "yes" and "no" must be whole tokens (the classifier reads their logits): lines that
    # start with them teach the merges, since byte-level BPE keeps a leading space otherwise.
    corpus = [format_qwen3_prompt("Given a web search query, retrieve passages", q, d)
              for q, d in zip([SEED_QUERY] * 4, SEED_DOCUMENTS, strict=True)]  # fmt: skip
    corpus += ["yes\nno\n"] * 50 + [" ".join(SEED_DOCUMENTS)] * 5
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=QWEN3_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_tokens(QWEN3_ADDED_TOKENS)
    vocabulary = tokenizer.get_vocab()
    assert "yes" in vocabulary and "no" in vocabulary, "the fixture tokenizer lacks yes/no"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.save_pretrained(target)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(vocabulary),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,  # 16 is not a CPU attention shape vLLM supports
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        # Wide weights spread P(yes) over (0, 1), so parity within 1e-3 means something.
        initializer_range=0.3,
    )
    model = Qwen3ForCausalLM(config).to(torch.float32)
    model.save_pretrained(target, safe_serialization=True)
    return target


# ------------------------------------------------------------- tiny cross-encoder ----------
def build_tiny_cross_encoder(directory: Path) -> Path:
    """A random 2-layer BERT sequence classifier (one label, like ms-marco cross-encoders)
    with the embedded model's WordPiece tokenizer; segment embeddings matter in it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kuberank_server.engine.scorer import embedded_model_path

    target = directory / "tiny-ms-marco-cross-encoder"
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    tokenizer.save_pretrained(target)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=512,
        type_vocab_size=2,
        num_labels=1,
        initializer_range=0.2,  # spreads the scores, as for the Qwen3 fixture
    )
    BertForSequenceClassification(config).to(torch.float32).save_pretrained(target)
    return target
