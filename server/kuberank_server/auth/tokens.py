"""Minting tokens: what `kuberank-server token` prints and what tests sign with."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from kuberank_server.auth.algorithms import (
    AuthConfigurationError,
    check_algorithms,
    check_shared_secret,
    key_fits_algorithm,
)
from kuberank_server.auth.keys import configured_shared_secret, read_secret_file
from kuberank_server.runtime.settings import ServerSettings


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


def mint_token_from_settings(
    settings: ServerSettings,
    *,
    subject: str,
    scopes: Sequence[str] | None = None,
    ttl_seconds: int = 3600,
    kid: str | None = None,
    secret_file: Path | None = None,
    private_key_file: Path | None = None,
) -> str:
    """A token that a server configured by `settings` accepts: its issuer, audience, first
    fitting algorithm and, unless given, its required scopes.

    The key is `private_key_file`, else `secret_file`, else the settings' own shared secret;
    AuthConfigurationError when there is none (a server verifying public keys only holds no
    key to sign with) or it does not fit the configured algorithms.
    """
    if ttl_seconds <= 0:
        raise AuthConfigurationError(f"the token lifetime must be positive, got {ttl_seconds}")
    key, algorithm = (
        _private_key(private_key_file, settings)
        if private_key_file is not None
        else _shared_secret(settings, secret_file)
    )
    return mint_token(
        key=key,
        subject=subject,
        scopes=settings.jwt_required_scopes if scopes is None else scopes,
        ttl_seconds=ttl_seconds,
        algorithm=algorithm,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        kid=kid,
    )


def _shared_secret(settings: ServerSettings, secret_file: Path | None) -> tuple[bytes, str]:
    shared = (
        ("--secret-file", read_secret_file(secret_file))
        if secret_file is not None
        else configured_shared_secret(settings)
    )
    if shared is None:
        raise AuthConfigurationError(
            "no signing key: pass --secret-file or --private-key-file, or set "
            "KUBERANK_JWT_SECRET / KUBERANK_JWT_SECRET_FILE"
        )
    source, secret = shared
    return secret, check_shared_secret(secret, settings.jwt_algorithms, key_source=source)[0]


def _private_key(path: Path, settings: ServerSettings) -> tuple[bytes, str]:
    try:
        pem = path.read_bytes()
        public_key = load_pem_private_key(pem, password=None).public_key()
    except OSError as error:
        raise AuthConfigurationError(f"cannot read {path}: {error.strerror}") from None
    except (ValueError, TypeError):
        raise AuthConfigurationError(f"{path} holds no unencrypted PEM private key") from None
    algorithms = check_algorithms(
        settings.jwt_algorithms, hmac=False, key_source="--private-key-file"
    )
    fitting = [algorithm for algorithm in algorithms if key_fits_algorithm(public_key, algorithm)]
    if not fitting:
        raise AuthConfigurationError(
            f"the key in {path} fits none of KUBERANK_JWT_ALGORITHMS ({', '.join(algorithms)})"
        )
    return pem, fitting[0]
