"""Fixtures of the operator tests: the real operator in an emulated cluster (`cluster`) or on
the real control plane (`kube`, from real_cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.operator.harness import SECRETS, EmulatedCluster, emulated_cluster, jwt_secret
from tests.operator.real_cluster import kube, reranker_crd

__all__ = ["cluster", "kube", "reranker_crd"]  # the real control plane's fixtures too

NAMESPACE = "team-search"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmulatedCluster]:
    async with emulated_cluster(tmp_path) as emulated:
        await emulated.create(SECRETS, NAMESPACE, jwt_secret())
        await emulated.start_operator()
        yield emulated
