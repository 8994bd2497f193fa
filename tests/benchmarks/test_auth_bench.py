"""Smoke test of the auth benchmark: the verification time it measures (and the server
benchmark imports) is a real signature check's."""

from __future__ import annotations

import pytest
from benchmarks.auth_bench import (
    api_key_seconds_per_request,
    side_by_side,
    verify_seconds_per_token,
)


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
def test_verification_time_is_measured_for_each_key_kind(algorithm: str) -> None:
    seconds = verify_seconds_per_token(algorithm, iterations=20)

    # Real verification costs microseconds, not nothing; a millisecond-scale cost per request
    # would mean something other than one signature check is being timed.
    assert 1e-6 < seconds < 5e-3


def test_api_key_check_time_is_measured_side_by_side_with_jwt() -> None:
    assert 1e-6 < api_key_seconds_per_request(iterations=20, stored_keys=10) < 5e-3
    figures = side_by_side(rounds=1, iterations=20)

    assert set(figures) == {
        "auth_check_us_jwt_hs256",
        "auth_check_us_jwt_hs256_seen",
        "auth_check_us_api_key",
        "auth_check_us_api_key_1000_stored",
        "auth_check_us_api_key_stat_every_request",
        "api_key_vs_jwt_hs256",
    }
    assert all(value > 0 for value in figures.values())
