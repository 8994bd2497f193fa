"""Keys from a JWKS endpoint (a real HTTP server on loopback that counts its fetches)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tests.server.auth_support import (
    PROTECTED_PATH,
    AuthServer,
    JwksEndpoint,
    assert_rejected,
    assert_token_not_logged,
    bearer,
    claims,
    rsa_private_key,
    running_auth_server,
    sign,
)
from tests.support import free_port

from kuberank_server.auth import Authenticator
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings

BURST = 50
# Long enough that two bursts fit inside one cool-down even on a busy, shared 2-core machine.
COOLDOWN = 5.0


@pytest.fixture(scope="module")
def key_1() -> rsa.RSAPrivateKey:
    return rsa_private_key()


@pytest.fixture(scope="module")
def key_2() -> rsa.RSAPrivateKey:
    return rsa_private_key()


@pytest.fixture
def jwks() -> Iterator[JwksEndpoint]:
    # Each answer is held back a little, so that a burst lands while a fetch is in flight.
    with JwksEndpoint(delay_seconds=0.2) as endpoint:
        yield endpoint


@contextmanager
def jwks_protected_server(jwks_url: str, **settings: Any) -> Iterator[AuthServer]:
    metrics = ServerMetrics()
    configured = ServerSettings(jwks_url=jwks_url, jwt_algorithms=["RS256", "ES256"], **settings)
    with running_auth_server(Authenticator.from_settings(configured, metrics), metrics) as server:
        yield server


def rs256_token(key: rsa.RSAPrivateKey, kid: str | None, **claim_overrides: Any) -> str:
    return sign(claims(**claim_overrides), key=key, algorithm="RS256", kid=kid)


async def post_all(client: httpx.AsyncClient, tokens: list[str]) -> list[httpx.Response]:
    """All at once: the server sees them concurrently."""
    return await asyncio.gather(
        *(client.post(PROTECTED_PATH, headers=bearer(token)) for token in tokens)
    )


async def test_a_burst_of_unknown_kids_costs_one_fetch_and_the_cooldown_holds_after(
    jwks: JwksEndpoint,
    key_1: rsa.RSAPrivateKey,
    key_2: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    jwks.publish(k1=key_1.public_key())
    forged = [rs256_token(key_2, f"unknown-{n}") for n in range(BURST)]
    forged_again = [rs256_token(key_2, f"again-{n}") for n in range(BURST)]
    with jwks_protected_server(jwks.url, jwks_refetch_cooldown_seconds=COOLDOWN) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            first = await client.post(PROTECTED_PATH, headers=bearer(rs256_token(key_1, "k1")))
            assert first.status_code == 200, first.text
            assert jwks.fetches == 1
            await asyncio.sleep(COOLDOWN + 0.1)  # the first fetch's cool-down is over

            responses = await post_all(client, forged)

            for response in responses:
                assert_rejected(response, status=401, error_type="authentication_error")
            assert {r.json()["error"]["message"] for r in responses} == {
                "token 'kid' names no key in the JWKS"
            }
            assert jwks.fetches == 2
            assert server.failures("unknown_kid") == BURST

            await post_all(client, forged_again)

            assert jwks.fetches == 2, "a refetch inside the cool-down"
            assert server.failures("unknown_kid") == 2 * BURST
    assert_token_not_logged(caplog, *forged, *forged_again)


async def test_a_rotated_in_key_is_accepted_after_one_shared_refetch(
    jwks: JwksEndpoint, key_1: rsa.RSAPrivateKey, key_2: rsa.RSAPrivateKey
) -> None:
    jwks.publish(k1=key_1.public_key())
    with jwks_protected_server(jwks.url, jwks_refetch_cooldown_seconds=0.5) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            first = await client.post(PROTECTED_PATH, headers=bearer(rs256_token(key_1, "k1")))
            assert first.status_code == 200, first.text

            jwks.publish(k2=key_2.public_key())  # k1 retired
            await asyncio.sleep(0.6)  # past the cool-down of the first fetch
            tokens = [rs256_token(key_2, "k2", sub=f"client-{n}") for n in range(BURST)]
            responses = await post_all(client, tokens)

            # Every request waited for the one fetch in flight instead of failing or fetching.
            assert [r.status_code for r in responses] == [200] * BURST
            assert {r.json()["subject"] for r in responses} == {f"client-{n}" for n in range(BURST)}
            assert jwks.fetches == 2

            retired = await client.post(PROTECTED_PATH, headers=bearer(rs256_token(key_1, "k1")))
            assert_rejected(retired, status=401, error_type="authentication_error")
            assert server.failures("unknown_kid") == 1


async def test_expired_keys_are_refetched_and_kept_while_the_endpoint_fails(
    jwks: JwksEndpoint, key_1: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    jwks.publish(k1=key_1.public_key())
    token = rs256_token(key_1, "k1")
    with jwks_protected_server(
        jwks.url, jwks_cache_seconds=0.3, jwks_refetch_cooldown_seconds=0
    ) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.post(PROTECTED_PATH, headers=bearer(token))).status_code == 200
            await asyncio.sleep(0.4)
            assert (await client.post(PROTECTED_PATH, headers=bearer(token))).status_code == 200
            assert jwks.fetches == 2

            jwks.failing = True
            await asyncio.sleep(0.4)
            during_outage = await client.post(PROTECTED_PATH, headers=bearer(token))

    assert during_outage.status_code == 200, during_outage.text
    assert jwks.fetches == 3
    assert any(
        record.levelno == logging.WARNING and "keeping 1 cached keys" in record.getMessage()
        for record in caplog.records
    )


def test_an_unreachable_jwks_means_503_not_401(key_1: rsa.RSAPrivateKey) -> None:
    closed_port_url = f"http://127.0.0.1:{free_port()}/jwks.json"
    with jwks_protected_server(closed_port_url) as server:
        response = httpx.post(
            server.url + PROTECTED_PATH, headers=bearer(rs256_token(key_1, "k1")), timeout=30
        )

        assert_rejected(response, status=503, error_type="service_unavailable")
        assert response.headers["Retry-After"]
        assert server.failures("jwks_unavailable") == 1


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        pytest.param(None, "missing_kid", id="no kid"),
        pytest.param("ec-key", "invalid_algorithm", id="kid of an EC key on an RS256 token"),
    ],
)
def test_a_token_must_name_a_key_that_fits_its_algorithm(
    jwks: JwksEndpoint, key_1: rsa.RSAPrivateKey, kid: str | None, reason: str
) -> None:
    jwks.publish(
        k1=key_1.public_key(), **{"ec-key": ec.generate_private_key(ec.SECP256R1()).public_key()}
    )
    with jwks_protected_server(jwks.url) as server:
        response = httpx.post(
            server.url + PROTECTED_PATH, headers=bearer(rs256_token(key_1, kid)), timeout=30
        )

        assert_rejected(response, status=401, error_type="authentication_error")
        assert server.failures(reason) == 1
