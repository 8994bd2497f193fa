"""What one request may cost and how long it may wait (issue 13, items 1 and 2): a token
budget per request, and admission on the expected wait with an honest Retry-After."""

from __future__ import annotations

import asyncio
import math
import re
import time
from types import SimpleNamespace

import httpx
import pytest
from tests.server.harness import SEED_DOCUMENTS, SEED_QUERY, error_of, serving

from kuberank_server.engine.scorer import Scorer
from kuberank_server.runtime import queue_wait
from kuberank_server.runtime.queue_wait import QueueWaitEstimator


@pytest.mark.engine
async def test_a_request_over_the_token_budget_gets_413_with_the_numbers(
    minilm_scorer: Scorer,
) -> None:
    long_documents = [f"{SEED_DOCUMENTS[i % 4]} " * 8 for i in range(10)]
    async with serving(minilm_scorer, max_request_tokens=300) as (_, client):
        over = await client.post(
            "/v1/rerank", json={"query": SEED_QUERY, "documents": long_documents}
        )
        within = await client.post(
            "/v1/rerank", json={"query": SEED_QUERY, "documents": SEED_DOCUMENTS}
        )
        # /v1/score N:N: each query group is small, the request as a whole is not.
        pairs = await client.post(
            "/v1/score",
            json={"text_1": [f"{SEED_QUERY} {i}" for i in range(10)], "text_2": long_documents},
        )
    assert over.status_code == 413
    error = error_of(over)
    assert error["param"] == "documents"
    tokens = int(re.search(r"has (\d+) tokens", error["message"]).group(1))  # type: ignore[union-attr]
    assert tokens > 300
    assert "limit per request is 300" in error["message"]
    assert within.status_code == 200
    assert within.json()["usage"]["prompt_tokens"] <= 300
    assert (pairs.status_code, error_of(pairs)["param"]) == (413, "text_2")


@pytest.mark.engine
async def test_a_wait_over_the_bound_is_refused_at_once_with_the_estimate(
    minilm_scorer: Scorer,
) -> None:
    documents = [f"{SEED_DOCUMENTS[i % 4]} #{i}" for i in range(128)]
    body = {"query": SEED_QUERY, "documents": documents}
    async with serving(
        minilm_scorer, max_concurrent_requests=1, max_queued_requests=100,
        max_queue_wait_seconds=1.0,
    ) as (app, client):  # fmt: skip
        await client.post("/v1/rerank", json=body)  # learns the time per request
        service = app.state.concurrency_limiter.wait_estimate.service_seconds

        async def timed() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = await client.post("/v1/rerank", json=body)
            return response, time.monotonic() - started

        results = await asyncio.gather(*(timed() for _ in range(16)))
    refused = [(r, seconds) for r, seconds in results if r.status_code == 429]
    accepted = [(r, seconds) for r, seconds in results if r.status_code == 200]
    assert refused and accepted, [r.status_code for r, _ in results]
    for response, seconds in refused:
        assert seconds < service, "a refusal must not wait in the queue first"
        message = error_of(response)["message"]
        expected = float(re.search(r"expected wait for a scoring slot is ([\d.]+) s",
                                   message).group(1))  # type: ignore[union-attr]  # fmt: skip
        assert expected > 1.0
        assert int(response.headers["Retry-After"]) == max(1, math.ceil(expected))
    # What was let in waited about the bound at most (plus its own scoring, plus slack).
    assert max(seconds for _, seconds in accepted) < 1.0 + 3 * service + 2


@pytest.mark.engine
async def test_retry_after_on_a_full_queue_is_the_time_to_serve_the_queue(
    minilm_scorer: Scorer,
) -> None:
    documents = [f"{SEED_DOCUMENTS[i % 4]} #{i}" for i in range(256)]
    body = {"query": SEED_QUERY, "documents": documents}
    async with serving(
        minilm_scorer, max_concurrent_requests=1, max_queued_requests=2,
        max_queue_wait_seconds=600,
    ) as (app, client):  # fmt: skip
        await client.post("/v1/rerank", json=body)
        service = app.state.concurrency_limiter.wait_estimate.service_seconds
        responses = await asyncio.gather(*(client.post("/v1/rerank", json=body) for _ in range(6)))
    refused = [r for r in responses if r.status_code == 429]
    assert refused
    # Three ahead (one scoring, two queued) at about `service` each: not a constant 1 s.
    retry_after = int(refused[-1].headers["Retry-After"])
    assert retry_after == pytest.approx(3 * service, abs=max(1.5, service))
    assert retry_after >= 2, (retry_after, service)


def test_estimate_is_zero_with_a_free_slot_then_grows_with_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(queue_wait, "time", SimpleNamespace(monotonic=lambda: now[0]))
    estimator = QueueWaitEstimator(concurrency=2)
    first = estimator.started()
    assert estimator.expected_wait(queued_ahead=0) == 0  # one slot still free
    second = estimator.started()
    now[0] += 4
    # No request finished yet: the requests' own age (4 s) bounds the time per request.
    assert estimator.expected_wait(queued_ahead=0) == pytest.approx(4 / 2)
    estimator.finished(first)
    estimator.finished(second)
    assert estimator.service_seconds == pytest.approx(4)
    tickets = [estimator.started(), estimator.started()]
    assert estimator.expected_wait(queued_ahead=5) == pytest.approx(6 * 4 / 2)
    now[0] += 1
    for ticket in tickets:
        estimator.finished(ticket)  # faster now: the estimate follows, smoothed
    assert 1 < estimator.service_seconds < 4  # type: ignore[operator]
