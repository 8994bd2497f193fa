"""How long one request's credential check takes: `python -m benchmarks.auth_bench`.

JWTs (HS256, RS256, ES256) and API keys side by side in one run; JWT HS256 and the API-key
check in alternating rounds, so that machine noise hits both alike. A JWT is timed on its
first use (signature and claims verified) and, as `jwt_hs256_seen`, on its later uses (the
authenticator keeps tokens that verified until they expire). The server benchmark
imports `verify_seconds_per_token` to report auth's share of a request's latency.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kuberank_server.auth.api_keys import ApiKeyEntry, ApiKeyStore, key_digest, new_api_key
from kuberank_server.auth.authenticator import Authenticator
from kuberank_server.auth.keys import StaticKey, VerificationKey
from kuberank_server.auth.tokens import mint_token
from kuberank_server.observability.metrics import ServerMetrics

# A throwaway key, long enough (66 bytes) for every HS* algorithm.
BENCH_SECRET = b"kuberank-bench-secret-" * 3


def verify_seconds_per_token(algorithm: str = "HS256", iterations: int = 2000) -> float:
    """Mean seconds `Authenticator.authenticate` spends on one valid bearer header.

    Covers everything a request pays for: header parsing, signature, claims, scopes.
    Runs its own event loop, so call it from synchronous code.
    """
    check = _jwt_check(algorithm, fresh_tokens=iterations + 1)
    return asyncio.run(_mean_seconds(check, iterations))


def api_key_seconds_per_request(
    iterations: int = 2000, stored_keys: int = 1, reload_seconds: float = 5.0
) -> float:
    """Mean seconds `Authenticator.authenticate` spends on one valid `Bearer kr_...` header,
    with `stored_keys` keys in the file and its change check every `reload_seconds`."""
    with tempfile.TemporaryDirectory() as folder:
        check = _api_key_check(Path(folder), stored_keys, reload_seconds)
        return asyncio.run(_mean_seconds(check, iterations))


def side_by_side(rounds: int = 7, iterations: int = 2000) -> dict[str, float]:
    """JWT HS256 and API-key checks in alternating rounds (A, B, A, B, ...): the median round
    of each, in microseconds, and the ratio key / JWT."""
    with tempfile.TemporaryDirectory() as folder:
        checks = {
            "jwt_hs256": _jwt_check("HS256", fresh_tokens=rounds * (iterations + 1)),
            "jwt_hs256_seen": _jwt_check("HS256"),
            "api_key": _api_key_check(Path(folder), 1, 5.0),
            "api_key_1000_stored": _api_key_check(Path(folder) / "many", 1000, 5.0),
            "api_key_stat_every_request": _api_key_check(Path(folder) / "stat", 1, 1e-9),
        }

        async def alternate() -> dict[str, list[float]]:
            times: dict[str, list[float]] = {name: [] for name in checks}
            for _ in range(rounds):
                for name, check in checks.items():
                    times[name].append(await _mean_seconds(check, iterations))
            return times

        times = asyncio.run(alternate())
    medians = {name: statistics.median(values) * 1e6 for name, values in times.items()}
    result = {f"auth_check_us_{name}": round(us, 2) for name, us in medians.items()}
    result["api_key_vs_jwt_hs256"] = round(medians["api_key"] / medians["jwt_hs256"], 3)
    return result


async def _mean_seconds(check: Callable[[], Awaitable[object]], iterations: int) -> float:
    await check()  # warm-up: first-use costs are not per request
    start = time.perf_counter()
    for _ in range(iterations):
        await check()
    return (time.perf_counter() - start) / iterations


def _jwt_check(algorithm: str, fresh_tokens: int = 0) -> Callable[[], Awaitable[object]]:
    """Checks of `fresh_tokens` tokens not seen before (each one's signature and claims are
    verified), then of one token again and again (verified once, then looked up)."""
    signing_key, verification_key = _key_pair(algorithm)
    authenticator = Authenticator(
        metrics=ServerMetrics(),
        key_source=StaticKey(verification_key),
        algorithms=[algorithm],
        required_scopes=["rerank"],
    )
    headers = [
        "Bearer " + mint_token(key=signing_key, subject="bench", algorithm=algorithm)
        for _ in range(fresh_tokens + 1)
    ]
    fresh, seen = iter(headers[:-1]), headers[-1]
    return lambda: authenticator.authenticate(next(fresh, seen))


def _api_key_check(
    folder: Path, stored_keys: int, reload_seconds: float
) -> Callable[[], Awaitable[object]]:
    """A check of the last of `stored_keys` keys in a real key file."""
    keys = [new_api_key() for _ in range(stored_keys)]
    entries = {
        f"key-{n}": ApiKeyEntry(sha256=key_digest(key), subject=f"client-{n}", scopes=("rerank",))
        for n, key in enumerate(keys)
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "apikeys.json"
    path.write_text(json.dumps({name: e.model_dump(mode="json") for name, e in entries.items()}))
    authenticator = Authenticator(
        metrics=ServerMetrics(),
        key_source=None,
        api_keys=ApiKeyStore(path, reload_seconds=reload_seconds),
        required_scopes=["rerank"],
    )
    header = f"Bearer {keys[-1]}"
    return lambda: authenticator.authenticate(header)


def _key_pair(algorithm: str) -> tuple[bytes, VerificationKey]:
    if algorithm.startswith("HS"):
        return BENCH_SECRET, BENCH_SECRET
    private_key = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, private_key.public_key()


if __name__ == "__main__":
    print(
        json.dumps(
            {
                f"auth_verify_us_{algorithm.lower()}": round(
                    verify_seconds_per_token(algorithm) * 1e6, 1
                )
                for algorithm in ("HS256", "RS256", "ES256")
            }
            | side_by_side()
        )
    )
