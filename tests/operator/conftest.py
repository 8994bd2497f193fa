"""Fixtures of the operator tests: an emulated cluster with the real operator running in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.operator.harness import SECRETS, EmulatedCluster, emulated_cluster

NAMESPACE = "team-search"


def reranker(name: str = "ranker", **spec: Any) -> dict[str, Any]:
    """A RerankerService with a JWT secret, as a user would write it."""
    return {
        "apiVersion": "kuberank.io/v1alpha1",
        "kind": "RerankerService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "Qwen/Qwen3-Reranker-0.6B"},
            "auth": {"secretRef": {"name": "rerank-jwt"}},
            **spec,
        },
    }


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmulatedCluster]:
    async with emulated_cluster(tmp_path) as emulated:
        await emulated.create(
            SECRETS,
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "rerank-jwt"},
                "data": {"secret": "c2VjcmV0LXZhbHVlLWZvci10ZXN0cw=="},
            },
        )
        await emulated.start_operator()
        yield emulated
