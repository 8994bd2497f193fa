"""How long one request's token check takes: `python -m benchmarks.auth_bench`.

HS256, RS256 and ES256 side by side, in one run. The server benchmark imports
`verify_seconds_per_token` to report auth's share of a request's latency.
"""

from __future__ import annotations

import asyncio
import json
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kuberank_server.auth.authenticator import Authenticator
from kuberank_server.auth.keys import StaticKey, VerificationKey
from kuberank_server.auth.tokens import mint_token
from kuberank_server.metrics import ServerMetrics

# A throwaway key, long enough (66 bytes) for every HS* algorithm.
BENCH_SECRET = b"kuberank-bench-secret-" * 3


def verify_seconds_per_token(algorithm: str = "HS256", iterations: int = 2000) -> float:
    """Mean seconds `Authenticator.authenticate` spends on one valid bearer header.

    Covers everything a request pays for: header parsing, signature, claims, scopes.
    Runs its own event loop, so call it from synchronous code.
    """
    signing_key, verification_key = _key_pair(algorithm)
    authenticator = Authenticator(
        metrics=ServerMetrics(),
        key_source=StaticKey(verification_key),
        algorithms=[algorithm],
        required_scopes=["rerank"],
    )
    header = "Bearer " + mint_token(key=signing_key, subject="bench", algorithm=algorithm)

    async def timed() -> float:
        await authenticator.authenticate(header)  # warm-up: first-use costs are not per request
        start = time.perf_counter()
        for _ in range(iterations):
            await authenticator.authenticate(header)
        return (time.perf_counter() - start) / iterations

    return asyncio.run(timed())


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
        )
    )
