"""Fixtures of the operator tests: an emulated cluster with the real operator running in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.operator.harness import SECRETS, EmulatedCluster, emulated_cluster, jwt_secret

NAMESPACE = "team-search"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmulatedCluster]:
    async with emulated_cluster(tmp_path) as emulated:
        await emulated.create(SECRETS, NAMESPACE, jwt_secret())
        await emulated.start_operator()
        yield emulated
