"""Which signing algorithms go with which key: the one place that decides it.

Algorithms come from configuration, never from a token. A server accepts either HMAC
algorithms (with a shared secret) or public-key algorithms (with a PEM key or a JWKS),
never a mix, so a public key can never be misused as an HMAC secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from kuberank_contract import EC_ALGORITHMS, EDDSA_ALGORITHMS, HMAC_ALGORITHMS, RSA_ALGORITHMS

EC_CURVE_BY_ALGORITHM = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
PUBLIC_KEY_ALGORITHMS = RSA_ALGORITHMS | EC_ALGORITHMS | EDDSA_ALGORITHMS
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS

# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class AuthConfigurationError(ValueError):
    """The auth settings cannot work; raised at start-up, before any request is served."""


def check_algorithms(algorithms: Sequence[str], *, hmac: bool, key_source: str) -> tuple[str, ...]:
    """The configured algorithms, if they are all known and all fit the kind of key source."""
    if not algorithms:
        raise AuthConfigurationError("KUBERANK_JWT_ALGORITHMS is empty; name at least one")
    for algorithm in algorithms:
        if algorithm.lower() == "none":
            raise AuthConfigurationError("the 'none' algorithm (unsigned tokens) is never accepted")
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise AuthConfigurationError(
                f"unknown JWT algorithm {algorithm!r}; supported: {_listed(SUPPORTED_ALGORITHMS)}"
            )
    fitting = HMAC_ALGORITHMS if hmac else PUBLIC_KEY_ALGORITHMS
    misfits = [algorithm for algorithm in algorithms if algorithm not in fitting]
    if misfits:
        raise AuthConfigurationError(
            f"{key_source} works with {_listed(fitting)} only, but KUBERANK_JWT_ALGORITHMS "
            f"also names {', '.join(misfits)}"
        )
    return tuple(algorithms)


def check_shared_secret(
    secret: bytes, algorithms: Sequence[str], *, key_source: str
) -> tuple[str, ...]:
    """The configured algorithms, if they are all HS* and `secret` is long enough for each."""
    checked = check_algorithms(algorithms, hmac=True, key_source=key_source)
    for algorithm in checked:
        if len(secret) < MIN_SECRET_BYTES[algorithm]:
            raise AuthConfigurationError(
                f"{key_source} is {len(secret)} bytes; {algorithm} needs at least "
                f"{MIN_SECRET_BYTES[algorithm]} (RFC 7518 3.2)"
            )
    return checked


def key_fits_algorithm(key: PublicKeyTypes, algorithm: str) -> bool:
    if algorithm in RSA_ALGORITHMS:
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm in EC_CURVE_BY_ALGORITHM:
        return (
            isinstance(key, ec.EllipticCurvePublicKey)
            and key.curve.name == EC_CURVE_BY_ALGORITHM[algorithm]
        )
    if algorithm in EDDSA_ALGORITHMS:
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _listed(algorithms: Iterable[str]) -> str:
    return ", ".join(sorted(algorithms))
