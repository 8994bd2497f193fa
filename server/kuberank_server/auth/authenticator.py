"""Bearer-token checks for every API route: who is calling, may they, and not too often."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt

from kuberank_contract import env_var
from kuberank_server.auth.algorithms import (
    AuthConfigurationError,
    check_algorithms,
    check_shared_secret,
    key_fits_algorithm,
)
from kuberank_server.auth.keys import (
    KEY_SOURCE_SETTINGS,
    JwksKeySource,
    KeySource,
    SigningKeysUnavailableError,
    StaticKey,
    configured_key_sources,
    configured_shared_secret,
    read_public_key_file,
)
from kuberank_server.auth.ratelimit import SubjectRateLimiter
from kuberank_server.errors import AuthenticationError, PermissionDeniedError, RateLimitedError
from kuberank_server.metrics import ServerMetrics
from kuberank_server.settings import ServerSettings

logger = logging.getLogger(__name__)

ANONYMOUS_SUBJECT = "anonymous"
# RFC 6750 3.1: a request with no credentials gets the challenge without an error code.
NO_CREDENTIALS_CHALLENGE = 'Bearer realm="kuberank"'

# PyJWT's failures, most specific first, as the reasons the failure metric is labelled with.
_REJECTIONS: tuple[tuple[type[jwt.PyJWTError], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "token has expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token is not valid yet (nbf or iat ahead)"),
    (jwt.InvalidIssuerError, "invalid_issuer", "token issuer (iss) is not accepted"),
    (jwt.InvalidAudienceError, "invalid_audience", "token audience (aud) is not accepted"),
    (jwt.InvalidAlgorithmError, "invalid_algorithm", "token algorithm is not accepted"),
    (jwt.InvalidSignatureError, "invalid_signature", "token signature does not verify"),
    (jwt.DecodeError, "malformed_token", "token is not a well-formed JWT"),
)
# A configured iss/aud that the token lacks is a wrong iss/aud, not a generic missing claim.
_MISSING_CLAIM_REASONS = {"iss": "invalid_issuer", "aud": "invalid_audience"}


@dataclass(frozen=True)
class Principal:
    """The verified caller: the token's subject, its scopes and all its claims."""

    subject: str
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class Authenticator:
    """Verifies `Authorization: Bearer <jwt>` headers against one configured key source.

    Build it with `from_settings`, which refuses any configuration that cannot work.
    """

    def __init__(
        self,
        *,
        metrics: ServerMetrics,
        key_source: KeySource | None,
        algorithms: Sequence[str] = (),
        issuer: str | None = None,
        audience: str | None = None,
        required_scopes: Sequence[str] = (),
        leeway_seconds: float = 0,
        rate_limiter: SubjectRateLimiter | None = None,
    ) -> None:
        """`key_source=None` turns verification off: every caller is `anonymous`."""
        self._metrics = metrics
        self._key_source = key_source
        self._algorithms = list(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._required_scopes = frozenset(required_scopes)
        self._leeway_seconds = leeway_seconds
        self._rate_limiter = rate_limiter

    @classmethod
    def from_settings(cls, settings: ServerSettings, metrics: ServerMetrics) -> Authenticator:
        rate_limiter = (
            SubjectRateLimiter(settings.rate_limit_per_subject, settings.rate_limit_burst)
            if settings.rate_limit_per_subject > 0
            else None
        )
        if settings.auth_mode == "disabled":
            logger.warning(
                "AUTHENTICATION IS DISABLED (KUBERANK_AUTH_MODE=disabled): every request is "
                "served without a token, as subject %r. Never do this outside a sandbox.",
                ANONYMOUS_SUBJECT,
            )
            return cls(
                metrics=metrics,
                key_source=None,
                required_scopes=settings.jwt_required_scopes,
                rate_limiter=rate_limiter,
            )
        key_source, algorithms = _key_source_from_settings(settings)
        logger.info(
            "JWT auth: algorithms %s, required scopes %s", algorithms, settings.jwt_required_scopes
        )
        return cls(
            metrics=metrics,
            key_source=key_source,
            algorithms=algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            required_scopes=settings.jwt_required_scopes,
            leeway_seconds=settings.jwt_leeway_seconds,
            rate_limiter=rate_limiter,
        )

    async def authenticate(self, authorization_header: str | None) -> Principal:
        """The caller behind the header, or AuthenticationError (401), PermissionDeniedError
        (403), RateLimitedError (429), SigningKeysUnavailableError (503)."""
        try:
            principal = await self._verified_principal(authorization_header)
            if self._rate_limiter is not None:
                self._rate_limiter.acquire(principal.subject)
        except RateLimitedError:
            self._count_failure("rate_limited")
            raise
        except (AuthenticationError, PermissionDeniedError, SigningKeysUnavailableError) as error:
            self._count_failure(error.reason)
            raise
        return principal

    def _count_failure(self, reason: str) -> None:
        self._metrics.auth_failures_total.labels(reason=reason).inc()
        logger.debug("request refused by auth: %s", reason)

    async def _verified_principal(self, authorization_header: str | None) -> Principal:
        if self._key_source is None:
            return Principal(ANONYMOUS_SUBJECT, self._required_scopes)
        token = _bearer_token(authorization_header)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError(
                "token is not a well-formed JWT", reason="malformed_token"
            ) from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise AuthenticationError(
                "token algorithm is not accepted; this server accepts "
                + ", ".join(self._algorithms),
                reason="invalid_algorithm",
            )
        kid = header.get("kid")
        key = await self._key_source.key_for(kid if isinstance(kid, str) else None, algorithm)
        claims = self._decode(token, key, algorithm)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError("token has no subject (sub)", reason="missing_claim")
        scopes = _scopes(claims)
        missing = self._required_scopes - scopes
        if missing:
            raise PermissionDeniedError(
                f"token lacks the required scope(s): {' '.join(sorted(missing))}"
            )
        return Principal(subject, scopes, MappingProxyType(claims))

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                # Only the one algorithm already checked against configuration and key.
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway_seconds,
                # Audience is checked only when configured: without one, any `aud` will do.
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.MissingRequiredClaimError as error:
            reason = _MISSING_CLAIM_REASONS.get(error.claim, "missing_claim")
            raise AuthenticationError(
                f"token lacks the {error.claim!r} claim", reason=reason
            ) from None
        except jwt.PyJWTError as error:
            for failure, reason, message in _REJECTIONS:
                if isinstance(error, failure):
                    raise AuthenticationError(message, reason=reason) from None
            raise AuthenticationError("token is not valid", reason="invalid_token") from None

    async def aclose(self) -> None:
        if self._key_source is not None:
            await self._key_source.aclose()


def _bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        error = AuthenticationError(
            "missing bearer token: send 'Authorization: Bearer <token>'", reason="missing_token"
        )
        error.headers = {"WWW-Authenticate": NO_CREDENTIALS_CHALLENGE}
        raise error
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationError(
            "malformed Authorization header: expected 'Bearer <token>'", reason="malformed_header"
        )
    return token


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """`scope` (RFC 8693: space-separated) or `scp` (a list, or a string as Azure sends)."""
    scopes: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(item for item in value if isinstance(item, str))
    return frozenset(scopes)


def _key_source_from_settings(settings: ServerSettings) -> tuple[KeySource, tuple[str, ...]]:
    chosen = configured_key_sources(settings)
    if len(chosen) != 1:
        raise AuthConfigurationError(
            "KUBERANK_AUTH_MODE=jwt needs exactly one key source of "
            + ", ".join(env_var(name) for name in KEY_SOURCE_SETTINGS)
            + "; "
            + (f"got {', '.join(chosen)}" if chosen else "none is set")
            + " (or set KUBERANK_AUTH_MODE=disabled, explicitly, for an open server)"
        )
    shared = configured_shared_secret(settings)
    if shared is not None:
        source, secret = shared
        return StaticKey(secret), check_shared_secret(
            secret, settings.jwt_algorithms, key_source=source
        )
    source = chosen[0]
    algorithms = check_algorithms(settings.jwt_algorithms, hmac=False, key_source=source)
    if settings.jwt_public_key_file is not None:
        public_key = read_public_key_file(settings.jwt_public_key_file)
        misfits = [a for a in algorithms if not key_fits_algorithm(public_key, a)]
        if misfits:
            raise AuthConfigurationError(
                f"the key in {settings.jwt_public_key_file} cannot verify {', '.join(misfits)}"
            )
        return StaticKey(public_key), algorithms
    url = str(settings.jwks_url)
    if not url.startswith(("https://", "http://")):
        raise AuthConfigurationError(f"KUBERANK_JWKS_URL must be an http(s) URL, got {url!r}")
    return (
        JwksKeySource(
            url,
            cache_seconds=settings.jwks_cache_seconds,
            refetch_cooldown_seconds=settings.jwks_refetch_cooldown_seconds,
        ),
        algorithms,
    )
