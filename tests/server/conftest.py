"""Session engines shared by the server tests: the embedded MiniLM (bi-encoder), a tiny
Qwen3 reranker and a tiny BERT cross-encoder.

Each starts one real vLLM engine (~40 s here) for the whole session; apps are cheap.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.server.harness import (
    build_tiny_cross_encoder,
    build_tiny_qwen3_reranker,
    server_settings,
)
from tests.support import engine_test_env

from kuberank_server.engine.scorer import Scorer


def _engine_environment() -> None:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = engine_test_env()[name]


@pytest.fixture(scope="session")
def tiny_qwen3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3_reranker(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
async def minilm_scorer() -> AsyncIterator[Scorer]:
    _engine_environment()
    scorer = await Scorer.start(server_settings())
    yield scorer
    scorer.shutdown()


@pytest.fixture(scope="session")
async def qwen3_scorer(tiny_qwen3_path: Path) -> AsyncIterator[Scorer]:
    _engine_environment()
    # model_kind stays `auto`: the folder's name says "Reranker", as a user's would.
    scorer = await Scorer.start(
        server_settings(model=str(tiny_qwen3_path), dtype="float32", max_model_len=512)
    )
    yield scorer
    scorer.shutdown()


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
async def cross_encoder_scorer(tiny_cross_encoder_path: Path) -> AsyncIterator[Scorer]:
    _engine_environment()
    scorer = await Scorer.start(
        server_settings(model=str(tiny_cross_encoder_path), dtype="float32", max_model_len=128)
    )
    yield scorer
    scorer.shutdown()
