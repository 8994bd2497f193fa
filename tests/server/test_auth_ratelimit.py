"""Per-subject rate limits: a client over its rate gets 429, the others carry on."""

from __future__ import annotations

import httpx
import pytest
from tests.server.auth_support import (
    PROTECTED_PATH,
    SECRET,
    assert_rejected,
    bearer,
    claims,
    running_auth_server,
    sign,
)

from kuberank_server.auth import Authenticator
from kuberank_server.auth.ratelimit import PRUNE_ABOVE_SUBJECTS, SubjectRateLimiter
from kuberank_server.http.errors import RateLimitedError
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings


class FakeClock:
    """Stand-in for time.monotonic that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_subject_over_its_rate_gets_429_and_other_subjects_do_not() -> None:
    metrics = ServerMetrics()
    settings = ServerSettings(jwt_secret=SECRET, rate_limit_per_subject=0.1, rate_limit_burst=3)
    noisy, quiet = bearer(sign(claims(sub="noisy"))), bearer(sign(claims(sub="quiet")))

    with running_auth_server(Authenticator.from_settings(settings, metrics), metrics) as server:
        noisy_responses = [httpx.post(server.url + PROTECTED_PATH, headers=noisy) for _ in range(4)]
        quiet_response = httpx.post(server.url + PROTECTED_PATH, headers=quiet)

        assert [r.status_code for r in noisy_responses] == [200, 200, 200, 429]
        assert_rejected(noisy_responses[3], status=429, error_type="rate_limit_error")
        # One request per ten seconds: the next is due in ten, less the time these took.
        assert 8 <= int(noisy_responses[3].headers["Retry-After"]) <= 10
        assert quiet_response.status_code == 200
        assert server.failures("rate_limited") == 1


def test_a_drained_bucket_refills_at_the_configured_rate() -> None:
    fake_clock = FakeClock()
    limiter = SubjectRateLimiter(per_second=2, burst=2, clock=fake_clock)
    limiter.acquire("a")
    limiter.acquire("a")

    with pytest.raises(RateLimitedError) as raised:
        limiter.acquire("a")
    assert raised.value.headers == {"Retry-After": "1"}  # 0.5 s, rounded up to the header's 1

    fake_clock.now += 0.5
    limiter.acquire("a")
    with pytest.raises(RateLimitedError):
        limiter.acquire("a")

    fake_clock.now += 60  # never more than the burst, however long the pause
    limiter.acquire("a")
    limiter.acquire("a")
    with pytest.raises(RateLimitedError):
        limiter.acquire("a")


def test_subjects_with_full_buckets_are_forgotten_when_many_are_tracked() -> None:
    fake_clock = FakeClock()
    limiter = SubjectRateLimiter(per_second=1, burst=5, clock=fake_clock)
    for n in range(PRUNE_ABOVE_SUBJECTS):
        limiter.acquire(f"once-{n}")
    fake_clock.now += 4  # the one-off subjects are full again 1 s after this
    for _ in range(5):
        limiter.acquire("busy")
    fake_clock.now += 1

    limiter.acquire("newcomer")

    assert set(limiter._buckets) == {"busy", "newcomer"}
    limiter.acquire("busy")  # the one request refilled in that second
    with pytest.raises(RateLimitedError):  # and no more: its bucket was kept, not reset
        limiter.acquire("busy")
