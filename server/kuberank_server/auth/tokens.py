"""Minting tokens: what `kuberank-server token` prints and what tests sign with."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt


def mint_token(
    *,
    key: str | bytes,
    subject: str,
    scopes: Sequence[str] = ("rerank",),
    ttl_seconds: int = 3600,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
    kid: str | None = None,
    not_before: int | None = None,
) -> str:
    """A signed JWT for `subject`: an HS* secret, or a PEM private key for RS*/PS*/ES*/EdDSA."""
    if not subject:
        raise ValueError("subject must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    if algorithm.lower() == "none":
        raise ValueError("refusing to mint an unsigned ('none') token")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(scopes),
    }
    if not_before is not None:
        claims["nbf"] = not_before
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)
