"""What one request may cost and how long it may wait (issue 13, items 1 and 2): a token
budget per request, and admission on the expected wait with an honest Retry-After."""

from __future__ import annotations

import asyncio
import heapq
import random
import re
import statistics
import time

import httpx
import pytest
from tests.server.harness import SEED_DOCUMENTS, SEED_QUERY, error_of, serving

from kuberank_server.engine.scorer import Scorer
from kuberank_server.http.errors import RateLimitedError
from kuberank_server.runtime.queue_wait import WorkEstimator


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
async def test_work_over_the_bound_is_refused_at_once_and_what_is_let_in_waits_about_it(
    minilm_scorer: Scorer,
) -> None:
    documents = [f"{SEED_DOCUMENTS[i % 4]} #{i}" for i in range(128)]
    body = {"query": SEED_QUERY, "documents": documents}
    async with serving(
        minilm_scorer, max_concurrent_requests=1, max_queued_requests=100,
        max_queue_wait_seconds=1.0,
    ) as (app, client):  # fmt: skip
        started = time.monotonic()
        await client.post("/v1/rerank", json=body)  # the throughput is measured from it
        service = time.monotonic() - started
        assert app.state.concurrency_limiter.work.tokens_per_second

        async def timed() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = await client.post("/v1/rerank", json=body)
            return response, time.monotonic() - started

        results = await asyncio.gather(*(timed() for _ in range(16)))
    refused = [(r, seconds) for r, seconds in results if r.status_code == 429]
    accepted = [(r, seconds) for r, seconds in results if r.status_code == 200]
    assert refused and accepted, [r.status_code for r, _ in results]
    # Every request of the crowd is tokenized before admission, so a refusal is compared with
    # the first accepted one (tokenized in the same crowd, then scored without queueing).
    first_answered = min(seconds for _, seconds in accepted)
    for response, seconds in refused:
        assert seconds < first_answered, "a refusal must not wait in the queue first"
        message = error_of(response)["message"]
        assert re.search(r"tokens of accepted work take about [\d.]+ s", message), message
        assert int(response.headers["Retry-After"]) >= 1
    # Refused callers are given turns one after another, not all the same moment.
    retry_afters = sorted(int(r.headers["Retry-After"]) for r, _ in refused)
    assert retry_afters[-1] > retry_afters[0], retry_afters
    # What was let in waited about the bound at most (plus its own scoring, plus slack).
    assert max(seconds for _, seconds in accepted) < 1.0 + 3 * service + 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admission_weighs_work_and_the_drain_budget_with_the_measured_throughput() -> None:
    clock = Clock()
    work = WorkEstimator(clock=clock, jitter=lambda: 0.0)
    # An idle pod admits any request (the per-request token budget bounds it).
    assert work.admit(5_000, max_wait_seconds=10, drain_seconds=20).admitted
    work.accepted(5_000)
    clock.now += 5
    work.finished(5_000, completed=True)
    assert work.tokens_per_second == pytest.approx(1_000)
    work.accepted(9_000)  # 9 s of work ahead: a newcomer still fits the 10 s bound
    assert work.admit(500, max_wait_seconds=10, drain_seconds=20).admitted
    work.accepted(1_500)  # 10.5 s ahead now
    verdict = work.admit(1_000, max_wait_seconds=10, drain_seconds=20)
    assert not verdict.admitted
    assert "over this server's bound of 10 s" in verdict.reason
    # Its turn: when the backlog has drained to the bound (0.5 s from now), in whole seconds.
    assert verdict.retry_after_seconds == 1
    # A second refusal is booked after the first one's work (1 s at 1,000 tokens/s).
    second = work.admit(1_000, max_wait_seconds=10, drain_seconds=20)
    assert second.retry_after_seconds == 2
    # The drain budget: all accepted work, the newcomer's too, must finish within it.
    verdict = work.admit(12_000, max_wait_seconds=30, drain_seconds=20)
    assert not verdict.admitted and "drain" in verdict.reason


def test_with_nothing_measured_the_count_caps_alone_apply() -> None:
    clock = Clock()
    work = WorkEstimator(clock=clock, jitter=lambda: 0.0)
    for _ in range(3):
        assert work.admit(16_000, max_wait_seconds=1, drain_seconds=1).admitted
        work.accepted(16_000)
    assert not work.turns
    clock.now += 6
    work.finished(16_000, completed=True)
    assert work.tokens_per_second is None  # more may finish with it: not measured yet
    clock.now += 0.5
    work.finished(16_000, completed=True)
    clock.now += 1  # nothing more within a tenth of the 6 s to the first finish: measured
    assert work.tokens_per_second == pytest.approx(32_000 / 6.5)
    work.accepted(16_000)
    assert not work.admit(16_000, max_wait_seconds=1, drain_seconds=1).admitted


def test_requests_scored_together_are_measured_together() -> None:
    """Six requests batched by the engine finish one by one within moments of each other: the
    first finish alone (1,000 tokens in 3 s) would understate the engine six times and refuse
    the first caller's next request; the six are measured as one group."""
    clock = Clock()
    work = WorkEstimator(clock=clock, jitter=lambda: 0.0)
    work.accepted(100)
    clock.now += 0.1
    work.finished(100, completed=True)  # 1,000 tokens/s from a lone small request
    for _ in range(6):
        work.accepted(1_000)
    clock.now += 3
    work.finished(1_000, completed=True)
    assert work.tokens_per_second == pytest.approx(1_000)  # the batch not measured yet
    assert work.admit(1_000, max_wait_seconds=10, drain_seconds=20).admitted
    work.accepted(1_000)  # the first caller's next request
    for _ in range(5):
        clock.now += 0.01
        work.finished(1_000, completed=True)
    clock.now += 0.31  # past a tenth of the 3 s to its first finish: the group is measured
    assert work.tokens_per_second == pytest.approx(6_100 / 3.15)
    # A later finish, after work of its own, is measured apart.
    clock.now += 0.19
    work.finished(1_000, completed=True)
    assert work.tokens_per_second == pytest.approx(7_100 / 3.65)


def test_a_steady_stream_of_finishes_is_measured_as_it_goes() -> None:
    """A fresh pod under load: the first finish after 2 s, then one every 0.1 s for as long as
    the load lasts. The stream is measured while it flows, not held as one open group."""
    clock = Clock()
    work = WorkEstimator(clock=clock, jitter=lambda: 0.0)
    for _ in range(40):
        work.accepted(100)
    clock.now += 2
    work.finished(100, completed=True)
    rates = []
    for _ in range(20):
        work.accepted(100)  # callers keep the backlog up
        clock.now += 0.1
        work.finished(100, completed=True)
        rates.append(work.tokens_per_second)
    assert rates[-1] is not None
    # 1,000 tokens/s since the first finish: the estimate rises towards it as the stream flows.
    measured = [rate for rate in rates if rate is not None]
    assert measured == sorted(measured) and measured[-1] > 2 * measured[0]


def test_a_stalled_engine_lowers_the_throughput_at_once() -> None:
    clock = Clock()
    work = WorkEstimator(clock=clock, jitter=lambda: 0.0)
    work.accepted(8_000)
    clock.now += 1
    work.finished(8_000, completed=True)
    assert work.tokens_per_second == pytest.approx(8_000)
    work.accepted(8_000)
    clock.now += 0.5  # less than the work in hand takes: no sign of a slower engine
    assert work.tokens_per_second == pytest.approx(8_000)
    clock.now += 6.5  # nothing finished for 7 s: even if all were done now, 16,000 in 8 s
    assert work.tokens_per_second == pytest.approx(2_000)
    assert not work.admit(8_000, max_wait_seconds=3, drain_seconds=0).admitted


def test_a_caller_whose_turn_is_due_takes_the_room_kept_for_it() -> None:
    clock = Clock()
    work = WorkEstimator(clock=clock, jitter=lambda: 0.0)
    work.accepted(1_000)
    clock.now += 1
    work.finished(1_000, completed=True)  # 1,000 tokens/s
    work.accepted(10_500)
    first = work.admit(1_000, max_wait_seconds=10, drain_seconds=0)
    second = work.admit(1_000, max_wait_seconds=10, drain_seconds=0)
    assert not first.admitted and not second.admitted
    clock.now += 0.5
    work.finished(500, completed=True)  # 10,000 ahead: room, but kept for the two turns
    fresh = work.admit(1_000, max_wait_seconds=10, drain_seconds=0)
    assert not fresh.admitted
    assert 0.5 + fresh.retry_after_seconds > second.retry_after_seconds  # back after both
    clock.now += 0.5  # the first caller comes back when told, the engine on schedule
    work.finished(500, completed=True)
    assert work.admit(1_000, max_wait_seconds=10, drain_seconds=0).admitted


def test_callers_who_wait_out_retry_after_are_usually_served() -> None:
    """150 closed-loop callers against a pod of fixed throughput (requests of 60-140 tokens,
    arrivals a few milliseconds late), each honouring Retry-After: most retries made after the
    wait are admitted, and what is admitted waits about the bound, not the whole crowd."""
    rng = random.Random(19)  # noqa: S311 - a reproducible simulation, not a secret
    clock = Clock()
    work = WorkEstimator(clock=clock, jitter=rng.random)
    rate, max_wait, end = 400.0, 10.0, clock.now + 120

    def latency() -> float:
        return rng.uniform(0.001, 0.02)

    work.accepted(100)  # a warm pod: one request measured the throughput
    clock.now += 100 / rate
    work.finished(100, completed=True)
    events = [(clock.now + latency(), caller, "send") for caller in range(150)]
    heapq.heapify(events)
    engine_free_at = clock.now
    tokens: dict[int, int] = {}
    sent_at: dict[int, float] = {}
    retrying: set[int] = set()
    retries = retries_served = 0
    latencies: list[float] = []
    while events:
        at, caller, kind = heapq.heappop(events)
        clock.now = at
        if kind == "done":
            work.finished(tokens[caller], completed=True)
            latencies.append(at - sent_at[caller])
            if at < end:
                heapq.heappush(events, (at + latency(), caller, "send"))
            continue
        if caller in retrying:
            retries += 1
        else:
            tokens[caller] = rng.randint(60, 140)
        sent_at[caller] = at
        verdict = work.admit(tokens[caller], max_wait_seconds=max_wait, drain_seconds=20)
        if verdict.admitted:
            retries_served += caller in retrying
            retrying.discard(caller)
            work.accepted(tokens[caller])
            engine_free_at = max(engine_free_at, at) + tokens[caller] / rate
            heapq.heappush(events, (engine_free_at, caller, "done"))
        elif at < end:
            retrying.add(caller)
            header = RateLimitedError("busy", retry_after_seconds=verdict.retry_after_seconds)
            returns_at = at + int(header.headers["Retry-After"]) + latency()
            heapq.heappush(events, (returns_at, caller, "send"))
    assert retries > 200
    assert retries_served / retries >= 0.8, (retries_served, retries)
    assert statistics.quantiles(latencies, n=20)[-1] < max_wait + 2
