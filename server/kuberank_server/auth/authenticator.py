"""Credential checks for every API route: who is calling, may they, and not too often.

Credentials are JWTs (`Authorization: Bearer <jwt>`) and API keys (`Authorization: Bearer
kr_...` or `X-API-Key: kr_...`), as `KUBERANK_AUTH_MODE` allows; both end in one `Principal`
and pass the same scope and rate checks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import jwt

from kuberank_contract import API_KEY_AUTH_MODES, API_KEYS_FILE_NAME, JWT_AUTH_MODES, env_var
from kuberank_server.auth.algorithms import (
    AuthConfigurationError,
    check_algorithms,
    check_shared_secret,
    key_fits_algorithm,
)
from kuberank_server.auth.api_keys import ApiKeyStore, is_api_key
from kuberank_server.auth.keys import (
    KEY_SOURCE_SETTINGS,
    JwksKeySource,
    KeySource,
    SigningKeysUnavailableError,
    StaticKey,
    VerificationKey,
    configured_key_sources,
    configured_shared_secret,
    read_public_key_file,
)
from kuberank_server.auth.ratelimit import SubjectRateLimiter
from kuberank_server.http.errors import (
    AuthenticationError,
    KuberankError,
    PermissionDeniedError,
    RateLimitedError,
)
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings

logger = logging.getLogger(__name__)

ANONYMOUS_SUBJECT = "anonymous"
NO_API_KEYS_MESSAGE = (
    "this server does not accept API keys; send a JWT as 'Authorization: Bearer <token>'"
)
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


CredentialType = Literal["jwt", "api_key", "none"]

# A service sends the same token with every request for the token's whole life (an hour,
# say); its signature and claims are checked once, then it is looked up (issue 20's profile:
# PyJWT's key preparation, signature and JSON decoding took ~0.3 ms of each request under
# load). Bounded, oldest out first; only tokens that verified get in.
VERIFIED_TOKENS_KEPT = 4096


@dataclass(frozen=True)
class _VerifiedToken:
    """A token that verified: with the key it verified against (a rotated JWKS key is not
    that key any more) and its expiry, checked again at each use."""

    kid: str | None
    algorithm: str
    key: VerificationKey
    expires: float
    principal: Principal


@dataclass(frozen=True)
class Principal:
    """The verified caller: its subject, its scopes, a JWT's claims, and which credential
    (a JWT's `jti` or an API key's name; never the credential itself)."""

    subject: str
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    credential_type: CredentialType = "none"
    credential_id: str | None = None


def failure_reason(error: KuberankError) -> str:
    """The label a refusal is counted under (the `reason` of kuberank_auth_failures_total)."""
    if isinstance(error, RateLimitedError):
        return "rate_limited"
    return str(getattr(error, "reason", error.error_type))


class Authenticator:
    """Verifies JWTs against one configured key source and/or API keys against a key file.

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
        api_keys: ApiKeyStore | None = None,
    ) -> None:
        """`key_source=None` refuses JWTs, `api_keys=None` API keys; with neither, verification
        is off and every caller is `anonymous`."""
        self._metrics = metrics
        self._key_source = key_source
        self._api_keys = api_keys
        self._algorithms = list(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._required_scopes = frozenset(required_scopes)
        self._leeway_seconds = leeway_seconds
        self._rate_limiter = rate_limiter
        self._verified: dict[str, _VerifiedToken] = {}

    @classmethod
    def from_settings(cls, settings: ServerSettings, metrics: ServerMetrics) -> Authenticator:
        # Always there: an API key may carry a rate of its own even when subjects have none.
        rate_limiter = SubjectRateLimiter(
            settings.rate_limit_per_subject, settings.rate_limit_burst
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
        key_source: KeySource | None = None
        algorithms: tuple[str, ...] = ()
        if settings.auth_mode in JWT_AUTH_MODES:
            key_source, algorithms = _key_source_from_settings(settings)
        api_keys = _api_key_store(settings)
        logger.info(
            "auth mode %s: JWT algorithms %s, %s, required scopes %s",
            settings.auth_mode, algorithms or "none (JWTs refused)",
            f"{len(api_keys)} API keys" if api_keys is not None else "API keys refused",
            settings.jwt_required_scopes,
        )  # fmt: skip
        return cls(
            metrics=metrics,
            key_source=key_source,
            api_keys=api_keys,
            algorithms=algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            required_scopes=settings.jwt_required_scopes,
            leeway_seconds=settings.jwt_leeway_seconds,
            rate_limiter=rate_limiter,
        )

    async def authenticate(
        self,
        authorization_header: str | None,
        api_key_header: str | None = None,
        *,
        identified: Callable[[Principal], None] | None = None,
        duplicated: Sequence[str] = (),
    ) -> Principal:
        """The caller behind the headers, or AuthenticationError (401), PermissionDeniedError
        (403), RateLimitedError (429), SigningKeysUnavailableError (503).

        `identified` sees the caller once its credential verifies, before the scope and rate
        checks, so that a refusal for scope or rate can still name who was refused.
        `duplicated` names credential headers the request carries more than once: refused,
        since layers that read the first and layers that read the last would disagree."""
        try:
            if duplicated:
                raise AuthenticationError(
                    f"{' and '.join(duplicated)} sent more than once; send one credential",
                    reason="malformed_header",
                )
            principal, key_rate = await self._verified_principal(
                authorization_header, api_key_header
            )
            if identified is not None:
                identified(principal)
            missing = self._required_scopes - principal.scopes
            if missing:
                credential = "API key" if principal.credential_type == "api_key" else "token"
                raise PermissionDeniedError(
                    f"{credential} lacks the required scope(s): {' '.join(sorted(missing))}"
                )
            if self._rate_limiter is not None:
                if key_rate is None:
                    self._rate_limiter.acquire(principal.subject)
                else:
                    self._rate_limiter.acquire(
                        ("api_key", principal.credential_id), key_rate, holder="this API key"
                    )
        except (
            AuthenticationError,
            PermissionDeniedError,
            RateLimitedError,
            SigningKeysUnavailableError,
        ) as error:
            self._count_failure(failure_reason(error))
            raise
        return principal

    def _count_failure(self, reason: str) -> None:
        self._metrics.auth_failures_total.labels(reason=reason).inc()
        logger.debug("request refused by auth: %s", reason)

    async def _verified_principal(
        self, authorization_header: str | None, api_key_header: str | None
    ) -> tuple[Principal, float | None]:
        """The caller, and its API key's own rate (None: the subject's rate applies)."""
        if self._key_source is None and self._api_keys is None:
            return Principal(ANONYMOUS_SUBJECT, self._required_scopes), None
        kind, credential = self._credential(authorization_header, api_key_header)
        if kind == "api_key":
            return self._api_key_principal(credential)
        return await self._jwt_principal(credential), None

    def _credential(
        self, authorization_header: str | None, api_key_header: str | None
    ) -> tuple[Literal["jwt", "api_key"], str]:
        """Which kind of credential the request carries, and the credential."""
        accepts_keys = self._api_keys is not None
        if api_key_header is not None:
            if authorization_header:
                raise AuthenticationError(
                    "send one credential: 'Authorization' or 'X-API-Key', not both",
                    reason="malformed_header",
                )
            if not accepts_keys:
                raise AuthenticationError(NO_API_KEYS_MESSAGE, reason="credential_not_accepted")
            key = api_key_header.strip()
            if not key or " " in key:
                raise AuthenticationError(
                    "malformed X-API-Key header: expected one key", reason="malformed_header"
                )
            return "api_key", key
        token = _bearer_token(authorization_header, accepts_keys=accepts_keys)
        # An API-key-only server reads every bearer credential as a key.
        if accepts_keys and (is_api_key(token) or self._key_source is None):
            return "api_key", token
        if is_api_key(token):
            raise AuthenticationError(NO_API_KEYS_MESSAGE, reason="credential_not_accepted")
        return "jwt", token

    def _api_key_principal(self, key: str) -> tuple[Principal, float | None]:
        assert self._api_keys is not None
        found = self._api_keys.lookup(key)
        if found is None:
            raise AuthenticationError("API key is not valid", reason="unknown_api_key")
        if found.entry.expired(datetime.now(UTC)):
            raise AuthenticationError(
                f"API key {found.name!r} has expired", reason="api_key_expired"
            )
        principal = Principal(
            found.entry.subject,
            frozenset(found.entry.scopes),
            credential_type="api_key",
            credential_id=found.name,
        )
        return principal, found.entry.rate

    async def _jwt_principal(self, token: str) -> Principal:
        assert self._key_source is not None
        verified = self._verified.pop(token, None)
        if verified is not None:
            key = await self._key_source.key_for(verified.kid, verified.algorithm)
            # PyJWT's own test: expired once `exp <= now - leeway`.
            if key is verified.key and verified.expires > time.time() - self._leeway_seconds:
                self._verified[token] = verified  # back in, as the most recently used
                return verified.principal
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
        jti = claims.get("jti")
        principal = Principal(
            subject,
            _scopes(claims),
            MappingProxyType(claims),
            credential_type="jwt",
            credential_id=jti if isinstance(jti, str) else None,
        )
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]
        # `exp` is required, and PyJWT refused a non-numeric one.
        self._verified[token] = _VerifiedToken(
            kid if isinstance(kid, str) else None, algorithm, key, float(claims["exp"]), principal
        )
        return principal

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


def _bearer_token(authorization_header: str | None, *, accepts_keys: bool) -> str:
    if not authorization_header:
        error = AuthenticationError(
            "missing credentials: send 'Authorization: Bearer <token or API key>' or "
            "'X-API-Key: <API key>'"
            if accepts_keys
            else "missing bearer token: send 'Authorization: Bearer <token>'",
            reason="missing_token",
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
            f"KUBERANK_AUTH_MODE={settings.auth_mode} needs exactly one key source of "
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


def _api_key_store(settings: ServerSettings) -> ApiKeyStore | None:
    """The key file's store in the API-key modes; None (and no file expected) otherwise."""
    if settings.auth_mode not in API_KEY_AUTH_MODES:
        if settings.api_keys_file is not None:
            raise AuthConfigurationError(
                f"KUBERANK_API_KEYS_FILE is set, but KUBERANK_AUTH_MODE={settings.auth_mode} "
                "accepts no API keys; set it to apiKey or jwtOrApiKey"
            )
        return None
    if settings.api_keys_file is None:
        raise AuthConfigurationError(
            f"KUBERANK_AUTH_MODE={settings.auth_mode} needs KUBERANK_API_KEYS_FILE, the key "
            f"Secret's {API_KEYS_FILE_NAME} (see `kuberank-server apikey create`)"
        )
    return ApiKeyStore(settings.api_keys_file, reload_seconds=settings.api_keys_reload_seconds)
