"""The HPA's concurrency signal on the real engine: `kuberank_requests_in_progress` follows the
number of concurrent callers, while `kuberank_requests_waiting` (requests beyond
`max_concurrent_requests`) stays 0 and no request is refused."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from tests.server.harness import SEED_DOCUMENTS, SEED_QUERY, serving

from kuberank_server.engine.scorer import Scorer

pytestmark = pytest.mark.engine

SEED = {"query": SEED_QUERY, "documents": SEED_DOCUMENTS}
SECONDS_PER_LEVEL = 2.0


async def test_in_progress_rises_with_concurrent_callers_before_any_429(
    minilm_scorer: Scorer,
) -> None:
    async with serving(minilm_scorer) as (app, client):
        registry = app.state.metrics.registry

        def gauge(name: str) -> float:
            return registry.get_sample_value(name) or 0.0

        async def level(callers: int) -> tuple[float, float, list[int]]:
            """Median in-progress and max waiting sampled under `callers` callers looping."""
            statuses: list[int] = []
            deadline = time.monotonic() + SECONDS_PER_LEVEL

            async def caller() -> None:
                while time.monotonic() < deadline:
                    statuses.append((await client.post("/v1/rerank", json=SEED)).status_code)

            load = asyncio.gather(*(caller() for _ in range(callers)))
            samples, waiting = [], 0.0
            while not load.done():
                samples.append(gauge("kuberank_requests_in_progress"))
                waiting = max(waiting, gauge("kuberank_requests_waiting"))
                await asyncio.sleep(0.01)
            await load
            return statistics.median(samples), waiting, statuses

        assert gauge("kuberank_requests_in_progress") == 0
        medians = {}
        for callers in (1, 4, 16):
            median, waiting, statuses = await level(callers)
            assert set(statuses) == {200}, f"{callers} callers: {sorted(set(statuses))}"
            assert waiting == 0, "the queue beyond max_concurrent_requests moved"
            medians[callers] = median
        # Each caller has a request in progress nearly all the time.
        assert medians[1] == 1, medians
        assert 3 <= medians[4] <= 4, medians
        assert 12 <= medians[16] <= 16, medians
        await asyncio.sleep(0.05)
        assert gauge("kuberank_requests_in_progress") == 0
