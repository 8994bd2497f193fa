"""Tokens that verified are looked up on their next uses, not verified again (issue 20), and
still refused once they expire or once the key they verified against is gone."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from kuberank_server.auth import authenticator as authenticator_module
from kuberank_server.auth.authenticator import Authenticator
from kuberank_server.auth.keys import VerificationKey
from kuberank_server.auth.tokens import mint_token
from kuberank_server.http.errors import AuthenticationError
from kuberank_server.observability.metrics import ServerMetrics

OLD_SECRET = b"verified-tokens-test-secret-0123456789ab"
NEW_SECRET = b"verified-tokens-test-secret-rotated-0123"


class RotatingKey:
    """A key source whose key an operator replaces (as a JWKS rotation does)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    async def key_for(self, kid: str | None, algorithm: str) -> VerificationKey:
        return self.key

    async def aclose(self) -> None:
        return None


def authenticator(key_source: RotatingKey) -> Authenticator:
    return Authenticator(
        metrics=ServerMetrics(),
        key_source=key_source,
        algorithms=["HS256"],
        required_scopes=["rerank"],
    )


async def test_a_token_is_verified_once_then_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = 0
    real_decode = jwt.decode

    def counting_decode(*args: object, **kwargs: object) -> object:
        nonlocal decodes
        decodes += 1
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(authenticator_module.jwt, "decode", counting_decode)
    checker = authenticator(RotatingKey(OLD_SECRET))
    token = mint_token(key=OLD_SECRET, subject="svc", ttl_seconds=600)
    other = mint_token(key=OLD_SECRET, subject="other", ttl_seconds=600)

    for _ in range(3):
        principal = await checker.authenticate(f"Bearer {token}")
        assert principal.subject == "svc" and principal.credential_type == "jwt"
    assert (await checker.authenticate(f"Bearer {other}")).subject == "other"
    assert decodes == 2


async def test_a_looked_up_token_is_refused_once_it_expires() -> None:
    checker = authenticator(RotatingKey(OLD_SECRET))
    token = mint_token(key=OLD_SECRET, subject="svc", ttl_seconds=1)
    await checker.authenticate(f"Bearer {token}")

    await asyncio.sleep(2.1)  # exp is whole seconds: past it, whatever the fraction minted at
    with pytest.raises(AuthenticationError) as refused:
        await checker.authenticate(f"Bearer {token}")
    assert refused.value.reason == "expired"


async def test_a_looked_up_token_is_refused_once_its_key_is_rotated_out() -> None:
    keys = RotatingKey(OLD_SECRET)
    checker = authenticator(keys)
    token = mint_token(key=OLD_SECRET, subject="svc", ttl_seconds=600)
    await checker.authenticate(f"Bearer {token}")

    keys.key = NEW_SECRET
    with pytest.raises(AuthenticationError) as refused:
        await checker.authenticate(f"Bearer {token}")
    assert refused.value.reason == "invalid_signature"
