"""`kuberank-server serve --dev`: loopback only, a random JWT secret unless one is configured,
and a ready-to-paste curl with a fresh token printed once the server is ready."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import threading
import time
import urllib.request

from pydantic import SecretStr

from kuberank_contract import JWT_AUTH_MODES
from kuberank_server.auth.algorithms import AuthConfigurationError
from kuberank_server.auth.keys import configured_key_sources
from kuberank_server.auth.tokens import mint_token_from_settings
from kuberank_server.runtime.settings import ServerSettings

DEV_TOKEN_TTL_SECONDS = 12 * 3600
_DEV_READY_TIMEOUT_SECONDS = 600
PUBLIC_KEYS_ONLY = "<a token from your issuer: this server verifies public keys only>"


def quiet_engine_logs() -> None:
    """vLLM's own logs (about 200 lines per start) only for errors, unless VLLM_LOGGING_LEVEL
    asks otherwise: the start-up phases (`kuberank_server.startup`) say what happens. Set
    before vLLM is imported; its engine processes inherit it."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def dev_settings(settings: ServerSettings) -> ServerSettings:
    """`settings` bound to 127.0.0.1 over plain HTTP (the printed curl must work whatever the
    environment says), /docs open, with a random secret if JWT auth has no key source."""
    settings = settings.model_copy(
        update={"host": "127.0.0.1", "tls_cert_file": None, "tls_key_file": None, "open_docs": True}
    )
    if settings.auth_mode in JWT_AUTH_MODES and not configured_key_sources(settings):
        settings = settings.model_copy(update={"jwt_secret": SecretStr(secrets.token_urlsafe(32))})
    return settings


def print_dev_curl_when_ready(settings: ServerSettings) -> None:
    """In a background thread: wait for `/ready`, then print `dev_curl`."""

    def wait_then_print() -> None:
        url = f"http://{settings.host}:{settings.port}"
        deadline = time.monotonic() + _DEV_READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if _is_ready(url):
                print(dev_curl(settings, url), flush=True)
                return
            time.sleep(0.5)

    threading.Thread(target=wait_then_print, name="dev-curl", daemon=True).start()


def _is_ready(url: str) -> bool:
    """`/ready` answers 200. urllib, not httpx: httpx logs every request at INFO, which made
    these polls about a hundred lines of the newcomer's `make run`."""
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:  # noqa: S310 (http://)
            return bool(response.status == 200)
    except OSError:  # refused while uvicorn starts; HTTPError (503) while the engine loads
        return False


def dev_curl(settings: ServerSettings, url: str) -> str:
    """A ready-to-paste curl of the seed example, with a freshly minted token."""
    from kuberank_server.ui.examples import EXAMPLE_DOCUMENTS, EXAMPLE_QUERY

    body = json.dumps({"query": EXAMPLE_QUERY, "documents": list(EXAMPLE_DOCUMENTS)})
    headers = ["-H", "Content-Type: application/json"]
    if settings.auth_mode in JWT_AUTH_MODES:
        headers += ["-H", f"Authorization: Bearer {_dev_token(settings)}"]
    command = shlex.join(["curl", "-sS", f"{url}/v1/rerank", *headers, "-d", body])
    return f"\nkuberank-server is ready. Try it:\n\n{command}\n"


def _dev_token(settings: ServerSettings) -> str:
    try:
        # The same minting, key loading and key checks as `kuberank-server token`.
        return mint_token_from_settings(settings, subject="dev", ttl_seconds=DEV_TOKEN_TTL_SECONDS)
    except AuthConfigurationError:
        # The server started with these settings, so the key is fine: it is a public one
        # (a PEM key or a JWKS), which verifies tokens but cannot sign them.
        return PUBLIC_KEYS_ONLY
