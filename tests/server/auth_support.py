"""Helpers for the auth tests: real HTTP servers on loopback, keys, and hand-made tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from fastapi import Depends, FastAPI, Request
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from tests.support import free_port

from kuberank_server.auth import Authenticator, Principal, require_principal
from kuberank_server.http.errors import install_error_handlers
from kuberank_server.observability.metrics import ServerMetrics

SECRET = "auth-tests-shared-secret-0123456789abcdef"
ISSUER = "https://auth.kuberank.test"
AUDIENCE = "kuberank"
PROTECTED_PATH = "/v1/rerank"


# ------------------------------------------------------------------ keys and tokens ---------
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims a correctly configured server accepts; an override of None drops the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "client-a",
        "iat": now,
        "exp": now + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "scope": "rerank",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(
    payload: Mapping[str, Any],
    key: Any = SECRET,
    algorithm: str = "HS256",
    kid: str | None = None,
) -> str:
    return jwt.encode(
        dict(payload), key, algorithm=algorithm, headers={"kid": kid} if kid else None
    )


def hmac_sign_with_raw_key(payload: Mapping[str, Any], secret: bytes) -> str:
    """HS256 by hand: PyJWT refuses PEM bytes as an HMAC key, an attacker's code does not."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps(dict(payload)).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ the app under test -------
def protected_app(authenticator: Authenticator) -> FastAPI:
    """One protected route with the real dependency, one open route, the server's error
    handlers: auth in isolation, without an engine."""

    async def close_authenticator(app: FastAPI) -> Any:
        yield
        await authenticator.aclose()

    app = FastAPI(lifespan=close_authenticator)  # type: ignore[arg-type]
    app.state.authenticator = authenticator

    install_error_handlers(app)

    @app.post(PROTECTED_PATH)
    async def protected(
        request: Request, principal: Annotated[Principal, Depends(require_principal)]
    ) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "scopes": sorted(principal.scopes),
            "logged_subject": request.state.subject,
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    # log_config=None: uvicorn's records reach the root logger, so caplog sees them too.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class AuthServer:
    url: str
    metrics: ServerMetrics

    def failures(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "kuberank_auth_failures_total", {"reason": reason}
        )
        return value or 0.0


@contextmanager
def running_auth_server(
    authenticator: Authenticator, metrics: ServerMetrics
) -> Iterator[AuthServer]:
    with serve_in_thread(protected_app(authenticator)) as url:
        yield AuthServer(url, metrics)


# ------------------------------------------------------------------ assertions ---------------
def assert_rejected(
    response: httpx.Response, *, status: int, error_type: str, challenge: str | None = None
) -> None:
    """The shared error envelope, and the Bearer challenge on 401/403."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "param"}
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    if status in (401, 403):
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        if challenge is not None:
            assert challenge in response.headers["WWW-Authenticate"]


def assert_token_not_logged(caplog: pytest.LogCaptureFixture, *tokens: str) -> None:
    """Neither a token nor its signature part shows up in any captured log record."""
    assert caplog.records, "nothing was logged, so this check would prove nothing"
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    for token in tokens:
        for secret_part in (token, token.rsplit(".", 1)[-1]):
            if len(secret_part) >= 16:
                assert secret_part not in logged


# ------------------------------------------------------------------ a real JWKS endpoint -----
class JwksEndpoint:
    """A JWKS document served over HTTP on 127.0.0.1 that counts its fetches.

    `delay_seconds` holds each answer back, so that a burst of requests overlaps a fetch;
    `failing` answers 500, as an identity provider in trouble would.
    """

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.failing = False
        self._keys: list[dict[str, Any]] = []
        self._fetches = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with endpoint._lock:
                    endpoint._fetches += 1
                    document = {"keys": list(endpoint._keys)}
                time.sleep(endpoint.delay_seconds)
                status, body = (
                    (500, b"{}") if endpoint.failing else (200, json.dumps(document).encode())
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logging.getLogger("tests.jwks").debug(format, *args)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def publish(self, **public_keys_by_kid: PublicKeyTypes) -> None:
        keys = []
        for kid, key in public_keys_by_kid.items():
            keys.append(_public_jwk(key) | {"kid": kid, "use": "sig"})
        with self._lock:
            self._keys = keys

    @property
    def fetches(self) -> int:
        with self._lock:
            return self._fetches

    def __enter__(self) -> JwksEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _public_jwk(key: PublicKeyTypes) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(key, as_dict=True)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(key, as_dict=True)
    raise TypeError(f"no JWK form for {type(key).__name__} in these tests")
