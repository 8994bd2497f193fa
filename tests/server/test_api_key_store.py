"""API keys without an engine: the key file's format and errors, the reload bound, start-up
checks of the auth modes, which credential each mode accepts, and rates shared with JWTs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.server.api_key_support import write_key_file
from tests.server.auth_support import (
    PROTECTED_PATH,
    SECRET,
    assert_rejected,
    bearer,
    claims,
    running_auth_server,
    sign,
)

from kuberank_server.auth import AuthConfigurationError, Authenticator
from kuberank_server.auth.api_keys import (
    ApiKeyFileError,
    ApiKeyStore,
    is_api_key,
    key_digest,
    new_api_key,
    parse_api_keys,
)
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings


def entry(key: str, subject: str = "client-k", **fields: Any) -> dict[str, Any]:
    return {"sha256": key_digest(key), "subject": subject, "scopes": ["rerank"], **fields}


def test_a_new_key_is_prefixed_random_and_never_repeats() -> None:
    keys = {new_api_key() for _ in range(1000)}

    assert len(keys) == 1000
    assert all(is_api_key(key) and len(key) == 46 for key in keys)  # kr_ + 43 (256 bits)
    assert not is_api_key(sign(claims()))  # a JWT starts with eyJ


BAD_FILES: list[tuple[str, str, str]] = [
    ("not json", "{", "Invalid JSON"),
    ("a list", "[]", "file: Input should be an object"),
    ("bad hash", json.dumps({"k": {"sha256": "abc", "subject": "s"}}), "k.sha256"),
    ("no subject", json.dumps({"k": {"sha256": "a" * 64}}), "k.subject: Field required"),
    ("unknown field", json.dumps({"k": {**entry("x"), "key": "kr_x"}}), "k.key: Extra inputs"),
    ("naive expiry", json.dumps({"k": entry("x", expires="2030-01-01T00:00:00")}), "timezone"),
    ("zero rate", json.dumps({"k": entry("x", rate=0)}), "k.rate"),
    ("bad name", json.dumps({"-k": entry("x")}), "-k"),
    ("one key twice", json.dumps({"a": entry("x"), "b": entry("x")}), "'a' and 'b'"),
]


@pytest.mark.parametrize(
    ("content", "message"), [pytest.param(c, m, id=case) for case, c, m in BAD_FILES]
)
def test_a_malformed_key_file_is_refused_with_the_field_named(content: str, message: str) -> None:
    with pytest.raises(ApiKeyFileError, match=message):
        parse_api_keys(content.encode(), "apikeys.json")


def test_changes_take_effect_at_the_first_check_after_the_reload_interval(tmp_path: Path) -> None:
    now = [0.0]
    first, second = new_api_key(), new_api_key()
    path = tmp_path / "apikeys.json"
    write_key_file(path, {"first": entry(first)})
    store = ApiKeyStore(path, reload_seconds=5, clock=lambda: now[0])

    write_key_file(path, {"second": entry(second)})
    now[0] = 4.9
    assert store.lookup(first) is not None and store.lookup(second) is None  # not yet checked
    now[0] = 5.0
    assert store.lookup(first) is None
    found = store.lookup(second)
    assert found is not None and found.name == "second"


def test_a_vanished_or_broken_file_keeps_the_keys_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    key = new_api_key()
    path = tmp_path / "apikeys.json"
    write_key_file(path, {"kept": entry(key)})
    store = ApiKeyStore(path, reload_seconds=1, clock=lambda: now[0])

    path.unlink()
    now[0] += 1
    assert store.lookup(key) is not None
    path.write_text('{"kept": ')
    now[0] += 1
    assert store.lookup(key) is not None
    now[0] += 1
    store.lookup(key)  # the same broken file: reported once, not at every check

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "cannot read API key file" in errors[0] and "keeping the 1 keys" in errors[0]
    assert "is invalid" in errors[1]


BAD_MODES: list[tuple[str, dict[str, Any], str]] = [
    ("apiKey without a file", {"auth_mode": "apiKey"}, "needs KUBERANK_API_KEYS_FILE"),
    (
        "jwtOrApiKey without a JWT key",
        {"auth_mode": "jwtOrApiKey", "api_keys_file": "{keys}"},
        "jwtOrApiKey needs exactly one key source",
    ),
    (
        "a key file in jwt mode",
        {"jwt_secret": SECRET, "api_keys_file": "{keys}"},
        "KUBERANK_AUTH_MODE=jwt accepts no API keys",
    ),
    ("missing file", {"auth_mode": "apiKey", "api_keys_file": "/nonexistent"}, "cannot read"),
    ("broken file", {"auth_mode": "apiKey", "api_keys_file": "{broken}"}, "Invalid JSON"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), [pytest.param(o, m, id=case) for case, o, m in BAD_MODES]
)
def test_an_auth_mode_without_what_it_needs_fails_at_start(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    write_key_file(tmp_path / "keys.json", {})
    (tmp_path / "broken.json").write_text("{")
    files = {"keys": tmp_path / "keys.json", "broken": tmp_path / "broken.json"}
    settings = ServerSettings(
        **{k: v.format(**files) if isinstance(v, str) else v for k, v in overrides.items()}
    )

    with pytest.raises(AuthConfigurationError, match=message):
        Authenticator.from_settings(settings, ServerMetrics())


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[Path, str]:
    key = new_api_key()
    path = tmp_path / "apikeys.json"
    write_key_file(path, {"k1": entry(key, subject="shared-subject")})
    return path, key


def test_an_api_key_only_server_reads_every_bearer_as_a_key_and_refuses_jwts(
    key_file: tuple[Path, str],
) -> None:
    path, key = key_file
    metrics = ServerMetrics()
    settings = ServerSettings(auth_mode="apiKey", api_keys_file=path)
    with running_auth_server(Authenticator.from_settings(settings, metrics), metrics) as server:
        by_key = httpx.post(server.url + PROTECTED_PATH, headers={"X-API-Key": key})
        by_jwt = httpx.post(server.url + PROTECTED_PATH, headers=bearer(sign(claims())))
        missing = httpx.post(server.url + PROTECTED_PATH)

    assert by_key.json()["subject"] == "shared-subject"
    assert_rejected(by_jwt, status=401, error_type="authentication_error")
    assert by_jwt.json()["error"]["message"] == "API key is not valid"
    assert "X-API-Key" in missing.json()["error"]["message"]
    assert "error=" not in missing.headers["WWW-Authenticate"]


def test_a_jwt_only_server_says_it_takes_no_api_keys(key_file: tuple[Path, str]) -> None:
    _, key = key_file
    metrics = ServerMetrics()
    settings = ServerSettings(jwt_secret=SECRET)
    with running_auth_server(Authenticator.from_settings(settings, metrics), metrics) as server:
        answers = [
            httpx.post(server.url + PROTECTED_PATH, headers=headers)
            for headers in ({"X-API-Key": key}, bearer(key))
        ]

    for answer in answers:
        assert_rejected(answer, status=401, error_type="authentication_error")
        assert "does not accept API keys" in answer.json()["error"]["message"]
        assert key not in answer.text
    assert server.failures("credential_not_accepted") == 2


def test_a_key_without_a_rate_of_its_own_shares_its_subjects_rate_with_jwts(
    key_file: tuple[Path, str],
) -> None:
    path, key = key_file
    metrics = ServerMetrics()
    settings = ServerSettings(
        auth_mode="jwtOrApiKey",
        jwt_secret=SECRET,
        jwt_issuer=None,
        api_keys_file=path,
        rate_limit_per_subject=0.1,
        rate_limit_burst=2,
    )
    token = sign(claims(sub="shared-subject", iss=None, aud=None))
    with running_auth_server(Authenticator.from_settings(settings, metrics), metrics) as server:
        statuses = [
            httpx.post(server.url + PROTECTED_PATH, headers=headers).status_code
            for headers in (bearer(key), bearer(token), {"X-API-Key": key})
        ]

    assert statuses == [200, 200, 429]
    assert server.failures("rate_limited") == 1
