"""Where verification keys come from: a fixed key, or a JWKS endpoint fetched on demand."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from kuberank_contract import env_var
from kuberank_server.auth.algorithms import AuthConfigurationError, key_fits_algorithm
from kuberank_server.http.errors import AuthenticationError, NotReadyError
from kuberank_server.runtime.settings import ServerSettings

logger = logging.getLogger(__name__)

VerificationKey = bytes | PublicKeyTypes

JWKS_FETCH_TIMEOUT_SECONDS = 5.0
# The settings a JWT key can come from; `KUBERANK_AUTH_MODE=jwt` needs exactly one of them.
KEY_SOURCE_SETTINGS = ("jwt_secret", "jwt_secret_file", "jwt_public_key_file", "jwks_url")


class SigningKeysUnavailableError(NotReadyError):
    """The JWKS endpoint has never answered: no token can be checked yet (503, not 401)."""

    reason = "jwks_unavailable"


class KeySource(Protocol):
    async def key_for(self, kid: str | None, algorithm: str) -> VerificationKey: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class StaticKey:
    """One configured key; the algorithms were checked against it at start-up."""

    key: VerificationKey

    async def key_for(self, kid: str | None, algorithm: str) -> VerificationKey:
        return self.key

    async def aclose(self) -> None:
        return None


def configured_key_sources(settings: ServerSettings) -> list[str]:
    """The key sources `settings` sets, named by their environment variables."""
    return [env_var(name) for name in KEY_SOURCE_SETTINGS if getattr(settings, name) is not None]


def configured_shared_secret(settings: ServerSettings) -> tuple[str, bytes] | None:
    """The HS* secret the settings hold or point to, with its source; None if they hold none."""
    if settings.jwt_secret is not None:
        return env_var("jwt_secret"), settings.jwt_secret.get_secret_value().encode()
    if settings.jwt_secret_file is not None:
        return env_var("jwt_secret_file"), read_secret_file(settings.jwt_secret_file)
    return None


def read_secret_file(path: Path) -> bytes:
    """A shared secret from a file, without the trailing newline editors and `echo` add."""
    try:
        secret = path.read_bytes().strip()
    except OSError as error:
        raise AuthConfigurationError(
            f"cannot read JWT secret file {path}: {error.strerror}"
        ) from None
    if not secret:
        raise AuthConfigurationError(f"JWT secret file {path} is empty")
    return secret


def read_public_key_file(path: Path) -> PublicKeyTypes:
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise AuthConfigurationError(
            f"cannot read JWT public key file {path}: {error.strerror}"
        ) from None
    try:
        return load_pem_public_key(pem)
    except ValueError:
        raise AuthConfigurationError(
            f"JWT public key file {path} holds no PEM public key ('-----BEGIN PUBLIC KEY-----')"
        ) from None


@dataclass(frozen=True)
class _Jwk:
    key: PublicKeyTypes
    declared_algorithm: str | None  # the JWK's own "alg", when it pins one


class JwksKeySource:
    """Keys by `kid` from a JWKS URL, fetched without blocking the event loop.

    The set is trusted for `cache_seconds`. A token whose `kid` is unknown triggers a refetch
    (key rotation), but fetches are at least `refetch_cooldown_seconds` apart and
    single-flight: a burst of unknown-kid tokens, forged or not, costs the endpoint one fetch.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        refetch_cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._cache_seconds = cache_seconds
        self._cooldown_seconds = refetch_cooldown_seconds
        self._clock = clock
        self._client = httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT_SECONDS)
        self._lock = asyncio.Lock()
        self._keys: dict[str, _Jwk] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not

    async def key_for(self, kid: str | None, algorithm: str) -> VerificationKey:
        if kid is None:
            raise AuthenticationError(
                "token header has no 'kid'; keys come from a JWKS, so it must name one",
                reason="missing_kid",
            )
        if kid not in self._keys or self._is_stale():
            # Callers queue here behind a fetch in flight and see its result instead of
            # starting another; the cool-down stops repeats once it is done.
            async with self._lock:
                if self._needs_fetch(kid):
                    await self._fetch()
        jwk = self._keys.get(kid)
        if jwk is None:
            if self._fetched_at is None:
                raise SigningKeysUnavailableError("signing keys are unavailable: JWKS fetch failed")
            raise AuthenticationError("token 'kid' names no key in the JWKS", reason="unknown_kid")
        if not key_fits_algorithm(jwk.key, algorithm) or jwk.declared_algorithm not in (
            None,
            algorithm,
        ):
            raise AuthenticationError(
                "token algorithm does not fit the JWKS key it names", reason="invalid_algorithm"
            )
        return jwk.key

    def _is_stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._cache_seconds

    def _needs_fetch(self, kid: str) -> bool:
        cooling_down = (
            self._attempted_at is not None
            and self._clock() - self._attempted_at < self._cooldown_seconds
        )
        return not cooling_down and (kid not in self._keys or self._is_stale())

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            response = await self._client.get(self.url)
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as error:
            # Keep serving with the keys we have; the cool-down spaces out the retries.
            logger.warning(
                "JWKS fetch from %s failed (%s); keeping %d cached keys",
                self.url,
                error,
                len(self._keys),
            )
            return
        self._keys = keys
        self._fetched_at = self._attempted_at
        logger.info("fetched %d signing keys from %s", len(keys), self.url)

    async def aclose(self) -> None:
        await self._client.aclose()


def _parse_jwks(document: Any) -> dict[str, _Jwk]:
    """Signing keys with a `kid`; other members (encryption keys, unknown types) are skipped."""
    members = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(members, list):
        raise ValueError("the document has no 'keys' list")
    keys: dict[str, _Jwk] = {}
    for member in members:
        if not isinstance(member, dict) or not isinstance(member.get("kid"), str):
            continue
        if member.get("use", "sig") != "sig":
            continue
        try:
            parsed = jwt.PyJWK(member)
        except jwt.PyJWTError:
            continue
        if isinstance(parsed.key, bytes):  # a symmetric "oct" key never verifies here
            continue
        keys[member["kid"]] = _Jwk(parsed.key, member.get("alg"))
    return keys
