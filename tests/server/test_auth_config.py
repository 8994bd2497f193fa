"""Start-up checks of the auth settings: a configuration that cannot work never serves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.server.auth_support import (
    PROTECTED_PATH,
    SECRET,
    bearer,
    claims,
    public_pem,
    rsa_private_key,
    running_auth_server,
    sign,
)

from kuberank_server.auth import AuthConfigurationError, Authenticator
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    files = {
        "rsa": public_pem(rsa_private_key().public_key()),
        "ec": public_pem(ec.generate_private_key(ec.SECP256R1()).public_key()),
        "garbage": b"not a key\n",
        "secret_with_newline": SECRET.encode() + b"\n",
        "empty": b"\n",
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in files}


def settings_with_files(overrides: dict[str, Any], key_files: dict[str, Path]) -> ServerSettings:
    """Settings from `overrides`, where "{name}" stands for the path of key file `name`."""
    return ServerSettings(
        **{
            name: value.format(**key_files) if isinstance(value, str) else value
            for name, value in overrides.items()
        }
    )


BAD_CONFIGURATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("no key source", {}, "exactly one key source.*none is set"),
    (
        "two key sources",
        {"jwt_secret": SECRET, "jwks_url": "https://idp.test/jwks"},
        "exactly one key source.*got KUBERANK_JWT_SECRET, KUBERANK_JWKS_URL",
    ),
    ("alg none", {"jwt_secret": SECRET, "jwt_algorithms": ["HS256", "none"]}, "'none'.*never"),
    ("unknown alg", {"jwt_secret": SECRET, "jwt_algorithms": ["HS257"]}, "unknown JWT algorithm"),
    ("no algorithms", {"jwt_secret": SECRET, "jwt_algorithms": []}, "is empty"),
    ("secret with RS256", {"jwt_secret": SECRET, "jwt_algorithms": ["RS256"]}, "also names RS256"),
    ("short secret", {"jwt_secret": "too-short"}, "9 bytes; HS256 needs at least 32"),
    ("secret short for HS512", {"jwt_secret": SECRET, "jwt_algorithms": ["HS512"]}, "HS512"),
    ("missing secret file", {"jwt_secret_file": "/nonexistent/secret"}, "cannot read"),
    ("empty secret file", {"jwt_secret_file": "{empty}"}, "is empty"),
    ("public key with HS256", {"jwt_public_key_file": "{rsa}"}, "also names HS256"),
    ("not a PEM key", {"jwt_public_key_file": "{garbage}", "jwt_algorithms": ["RS256"]}, "no PEM"),
    (
        "RSA key with ES256",
        {"jwt_public_key_file": "{rsa}", "jwt_algorithms": ["RS256", "ES256"]},
        "cannot verify ES256",
    ),
    ("EC key with RS256", {"jwt_public_key_file": "{ec}", "jwt_algorithms": ["RS256"]}, "RS256"),
    ("JWKS with HS256", {"jwks_url": "https://idp.test/jwks"}, "also names HS256"),
    (
        "JWKS not over http",
        {"jwks_url": "file:///etc/jwks.json", "jwt_algorithms": ["RS256"]},
        "must be an http",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [pytest.param(overrides, message, id=case) for case, overrides, message in BAD_CONFIGURATIONS],
)
def test_a_configuration_that_cannot_work_fails_at_start_with_a_clear_error(
    key_files: dict[str, Path], overrides: dict[str, Any], message: str
) -> None:
    settings = settings_with_files(overrides, key_files)

    with pytest.raises(AuthConfigurationError, match=message) as raised:
        Authenticator.from_settings(settings, ServerMetrics())

    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"jwt_public_key_file": "{ec}", "jwt_algorithms": ["ES256"]}, id="EC key"),
        pytest.param(
            {"jwt_public_key_file": "{rsa}", "jwt_algorithms": ["RS256", "PS256"]}, id="RSA key"
        ),
        pytest.param(
            {"jwks_url": "https://idp.test/jwks", "jwt_algorithms": ["RS256", "ES256"]}, id="JWKS"
        ),
        pytest.param({"jwt_secret_file": "{secret_with_newline}"}, id="secret file"),
    ],
)
def test_a_workable_configuration_starts(
    key_files: dict[str, Path], overrides: dict[str, Any]
) -> None:
    settings = settings_with_files(overrides, key_files)

    assert isinstance(Authenticator.from_settings(settings, ServerMetrics()), Authenticator)


async def test_the_secret_file_newline_is_not_part_of_the_key(key_files: dict[str, Path]) -> None:
    settings = ServerSettings(jwt_secret_file=key_files["secret_with_newline"])
    authenticator = Authenticator.from_settings(settings, ServerMetrics())

    principal = await authenticator.authenticate("Bearer " + sign(claims(iss=None, aud=None)))

    assert principal.subject == "client-a"


def test_settings_from_the_environment_configure_the_same_checks(
    monkeypatch: pytest.MonkeyPatch, key_files: dict[str, Path]
) -> None:
    monkeypatch.setenv("KUBERANK_JWT_PUBLIC_KEY_FILE", str(key_files["rsa"]))
    monkeypatch.setenv("KUBERANK_JWT_ALGORITHMS", '["RS256", "ES256"]')

    with pytest.raises(AuthConfigurationError, match="cannot verify ES256"):
        Authenticator.from_settings(ServerSettings(), ServerMetrics())


def test_disabled_auth_is_loud_at_start_and_serves_everyone_as_anonymous(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    metrics = ServerMetrics()
    authenticator = Authenticator.from_settings(ServerSettings(auth_mode="disabled"), metrics)

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("AUTHENTICATION IS DISABLED" in message for message in warnings)
    with running_auth_server(authenticator, metrics) as server:
        without_token = httpx.post(server.url + PROTECTED_PATH)
        with_garbage = httpx.post(server.url + PROTECTED_PATH, headers=bearer("garbage"))

    assert without_token.status_code == 200
    assert without_token.json()["subject"] == "anonymous"
    assert with_garbage.json()["subject"] == "anonymous"
