"""`kuberank-server token` end to end: what it prints verifies against the same settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from tests.server.auth_support import SECRET, private_pem, public_pem, rsa_private_key

from kuberank_server.auth import Authenticator, Principal
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings

ISSUER = "https://tokens.kuberank.test"
AUDIENCE = "rerank-api"


def run_token_command(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script's entry point in a fresh process, with only `env`'s KUBERANK_*."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("KUBERANK_")}
    return subprocess.run(
        [sys.executable, "-m", "kuberank_server.commands.cli", "token", *args],
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def verify(token: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Principal:
    """Verify as a server configured by the same environment would."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    authenticator = Authenticator.from_settings(ServerSettings(), ServerMetrics())
    return await authenticator.authenticate(f"Bearer {token}")


async def test_a_token_minted_from_the_server_settings_verifies_against_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "KUBERANK_JWT_SECRET": SECRET,
        "KUBERANK_JWT_ISSUER": ISSUER,
        "KUBERANK_JWT_AUDIENCE": AUDIENCE,
        "KUBERANK_JWT_REQUIRED_SCOPES": '["rerank", "score"]',
    }

    minted = run_token_command(
        "--subject", "search-svc", "--scope", "rerank", "--scope", "score", "--ttl", "600", env=env
    )

    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert minted.stdout == token + "\n"  # the token and nothing else: `$(kuberank-server token)`
    principal = await verify(token, env, monkeypatch)
    assert principal.subject == "search-svc"
    assert principal.scopes == {"rerank", "score"}
    assert principal.claims["iss"] == ISSUER
    assert principal.claims["aud"] == AUDIENCE
    assert principal.claims["exp"] - principal.claims["iat"] == 600


async def test_scopes_default_to_the_ones_the_server_requires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    env = {"KUBERANK_JWT_SECRET_FILE": str(secret_file)}

    minted = run_token_command("--subject", "batch-job", env=env)

    assert minted.returncode == 0, minted.stderr
    principal = await verify(minted.stdout.strip(), env, monkeypatch)
    assert principal.subject == "batch-job"
    assert principal.scopes == {"rerank"}


async def test_a_private_key_mints_tokens_for_a_public_key_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa_private_key()
    (tmp_path / "private.pem").write_bytes(private_pem(key))
    (tmp_path / "public.pem").write_bytes(public_pem(key.public_key()))
    env = {"KUBERANK_JWT_ALGORITHMS": '["PS256", "RS256"]'}

    minted = run_token_command(
        "--subject", "svc", "--private-key-file", str(tmp_path / "private.pem"), env=env
    )

    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert jwt.get_unverified_header(token)["alg"] == "PS256"  # the first configured that fits
    server_env = env | {"KUBERANK_JWT_PUBLIC_KEY_FILE": str(tmp_path / "public.pem")}
    assert (await verify(token, server_env, monkeypatch)).subject == "svc"


def test_a_secret_file_flag_takes_the_key_from_that_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)

    minted = run_token_command("--subject", "svc", "--secret-file", str(secret_file))

    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "svc"
    assert claims["scope"] == "rerank"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ("--subject", "svc"), {}, "no signing key.*KUBERANK_JWT_SECRET", id="no key configured"
        ),
        pytest.param(
            ("--subject", "svc"),
            {"KUBERANK_JWT_SECRET": "short"},
            "5 bytes; HS256 needs at least 32",
            id="secret too short",
        ),
        pytest.param(
            ("--subject", "svc", "--secret-file", "/nonexistent/secret"),
            {},
            "cannot read JWT secret file",
            id="missing secret file",
        ),
        pytest.param(
            ("--subject", "svc", "--ttl", "0"),
            {"KUBERANK_JWT_SECRET": SECRET},
            "lifetime must be positive",
            id="zero ttl",
        ),
        pytest.param(
            ("--subject", "svc"),
            {"KUBERANK_JWT_SECRET": SECRET, "KUBERANK_JWT_ALGORITHMS": '["none"]'},
            "'none'",
            id="alg none",
        ),
    ],
)
def test_a_token_that_cannot_be_minted_is_a_clear_error_and_exit_2(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_token_command(*args, env=env)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("kuberank-server token: error: ")
    assert re.search(message, result.stderr), result.stderr
    assert SECRET not in result.stderr


def test_a_private_key_that_fits_no_configured_algorithm_is_refused(tmp_path: Path) -> None:
    (tmp_path / "private.pem").write_bytes(private_pem(rsa_private_key()))

    result = run_token_command(
        "--subject", "svc", "--private-key-file", str(tmp_path / "private.pem"),
        env={"KUBERANK_JWT_ALGORITHMS": '["ES256"]'},
    )  # fmt: skip

    assert result.returncode == 2
    assert "fits none of KUBERANK_JWT_ALGORITHMS (ES256)" in result.stderr
