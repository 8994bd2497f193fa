"""The auth matrix over real HTTP: every way a token can be wrong, and what the client sees."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from tests.server.auth_support import (
    AUDIENCE,
    ISSUER,
    PROTECTED_PATH,
    SECRET,
    AuthServer,
    assert_rejected,
    assert_token_not_logged,
    bearer,
    claims,
    hmac_sign_with_raw_key,
    private_pem,
    public_pem,
    rsa_private_key,
    running_auth_server,
    sign,
)

from kuberank_server.auth import Authenticator
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings


def seconds_from_now(seconds: int) -> int:
    """A timestamp taken when the test runs: tokens must not age between collection and use."""
    return int(time.time()) + seconds


OTHER_SECRET = "a-different-secret-of-enough-length-0123456789"


@pytest.fixture(scope="module")
def hs_server() -> Iterator[AuthServer]:
    """HS256 with issuer and audience enforced, the default `rerank` scope and leeway."""
    metrics = ServerMetrics()
    settings = ServerSettings(jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    with running_auth_server(Authenticator.from_settings(settings, metrics), metrics) as server:
        yield server


@pytest.fixture(scope="module")
def rsa_key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private key PEM, public key PEM) files of one fresh RSA key."""
    folder = tmp_path_factory.mktemp("rsa")
    key = rsa_private_key()
    (folder / "private.pem").write_bytes(private_pem(key))
    (folder / "public.pem").write_bytes(public_pem(key.public_key()))
    return folder / "private.pem", folder / "public.pem"


@pytest.fixture(scope="module")
def rs_server(rsa_key_files: tuple[Path, Path]) -> Iterator[AuthServer]:
    metrics = ServerMetrics()
    settings = ServerSettings(jwt_public_key_file=rsa_key_files[1], jwt_algorithms=["RS256"])
    with running_auth_server(Authenticator.from_settings(settings, metrics), metrics) as server:
        yield server


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


# (case, Authorization header, reason): headers are built when the test runs.
HS256_REJECTIONS: list[tuple[str, Callable[[], str | None], str]] = [
    ("no header", lambda: None, "missing_token"),
    ("basic scheme", lambda: "Basic Y2xpZW50OnNlY3JldA==", "malformed_header"),
    ("bearer without token", lambda: "Bearer", "malformed_header"),
    ("two tokens", lambda: f"Bearer {sign(claims())} {sign(claims())}", "malformed_header"),
    ("not a jwt", lambda: "Bearer not-a-jwt", "malformed_token"),
    ("bad signature", lambda: f"Bearer {sign(claims(), key=OTHER_SECRET)}", "invalid_signature"),
    ("expired", lambda: f"Bearer {sign(claims(exp=seconds_from_now(-3600)))}", "expired"),
    (
        "not yet valid",
        lambda: f"Bearer {sign(claims(nbf=seconds_from_now(3600)))}",
        "not_yet_valid",
    ),
    ("wrong issuer", lambda: f"Bearer {sign(claims(iss='https://evil.test'))}", "invalid_issuer"),
    ("no issuer", lambda: f"Bearer {sign(claims(iss=None))}", "invalid_issuer"),
    ("wrong audience", lambda: f"Bearer {sign(claims(aud='other-api'))}", "invalid_audience"),
    ("no audience", lambda: f"Bearer {sign(claims(aud=None))}", "invalid_audience"),
    ("no exp", lambda: f"Bearer {sign(claims(exp=None))}", "missing_claim"),
    ("no subject", lambda: f"Bearer {sign(claims(sub=None))}", "missing_claim"),
    (
        "alg none",
        lambda: f"Bearer {sign(claims(), key=None, algorithm='none')}",
        "invalid_algorithm",
    ),
    (
        "unconfigured HS512",
        lambda: f"Bearer {sign(claims(), key=SECRET * 2, algorithm='HS512')}",
        "invalid_algorithm",
    ),
]


@pytest.mark.parametrize(
    ("header", "reason"),
    [pytest.param(header, reason, id=case) for case, header, reason in HS256_REJECTIONS],
)
def test_a_bad_token_gets_401_with_a_challenge_and_is_counted(
    hs_server: AuthServer,
    logs: pytest.LogCaptureFixture,
    header: Callable[[], str | None],
    reason: str,
) -> None:
    authorization = header()
    before = hs_server.failures(reason)

    response = httpx.post(
        hs_server.url + PROTECTED_PATH,
        headers={"Authorization": authorization} if authorization is not None else {},
    )

    assert_rejected(response, status=401, error_type="authentication_error")
    assert hs_server.failures(reason) == before + 1
    token = (authorization or "").removeprefix("Bearer").strip()
    if token:
        assert token not in response.text
        assert_token_not_logged(logs, token)


def test_no_credentials_get_the_bare_challenge_and_bad_ones_the_invalid_token_error(
    hs_server: AuthServer,
) -> None:
    # RFC 6750 3.1: no error code when the client sent no credentials at all.
    missing = httpx.post(hs_server.url + PROTECTED_PATH)
    expired = httpx.post(
        hs_server.url + PROTECTED_PATH, headers=bearer(sign(claims(exp=seconds_from_now(-3600))))
    )

    assert "error=" not in missing.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    assert expired.json()["error"]["message"] == "token has expired"


def test_a_token_without_the_required_scope_gets_403(
    hs_server: AuthServer, logs: pytest.LogCaptureFixture
) -> None:
    token = sign(claims(scope="search:read"))
    before = hs_server.failures("missing_scope")

    response = httpx.post(hs_server.url + PROTECTED_PATH, headers=bearer(token))

    assert_rejected(
        response, status=403, error_type="permission_error", challenge='error="insufficient_scope"'
    )
    assert "rerank" in response.json()["error"]["message"]
    assert hs_server.failures("missing_scope") == before + 1
    assert_token_not_logged(logs, token)


@pytest.mark.parametrize(
    "token_claims",
    [
        pytest.param(claims, id="scope string"),
        pytest.param(lambda: claims(scope=None, scp=["search:read", "rerank"]), id="scp list"),
        pytest.param(lambda: claims(exp=seconds_from_now(-5)), id="expired within leeway"),
    ],
)
def test_a_good_token_reaches_the_route_as_its_subject(
    hs_server: AuthServer,
    logs: pytest.LogCaptureFixture,
    token_claims: Callable[[], dict[str, object]],
) -> None:
    token = sign(token_claims())

    response = httpx.post(hs_server.url + PROTECTED_PATH, headers=bearer(token))

    assert response.status_code == 200, response.text
    assert response.json()["subject"] == "client-a"
    assert response.json()["logged_subject"] == "client-a"
    assert "rerank" in response.json()["scopes"]
    assert_token_not_logged(logs, token)


def test_open_routes_need_no_token(hs_server: AuthServer) -> None:
    assert httpx.get(hs_server.url + "/health").status_code == 200


def test_an_rs256_server_accepts_tokens_signed_by_its_private_key(
    rs_server: AuthServer, rsa_key_files: tuple[Path, Path]
) -> None:
    token = sign(claims(), key=rsa_key_files[0].read_bytes(), algorithm="RS256")

    response = httpx.post(rs_server.url + PROTECTED_PATH, headers=bearer(token))

    assert response.status_code == 200, response.text
    assert response.json()["subject"] == "client-a"


def test_an_hs256_token_keyed_with_the_public_key_is_refused(
    rs_server: AuthServer, rsa_key_files: tuple[Path, Path], logs: pytest.LogCaptureFixture
) -> None:
    """Key confusion: the public key is public, so an HMAC made with it proves nothing."""
    forged = hmac_sign_with_raw_key(claims(), rsa_key_files[1].read_bytes())
    assert jwt.get_unverified_header(forged)["alg"] == "HS256"
    before = rs_server.failures("invalid_algorithm")

    response = httpx.post(rs_server.url + PROTECTED_PATH, headers=bearer(forged))

    assert_rejected(response, status=401, error_type="authentication_error")
    assert rs_server.failures("invalid_algorithm") == before + 1
    assert_token_not_logged(logs, forged)


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        pytest.param(
            lambda: sign(claims(), key=private_pem(rsa_private_key()), algorithm="RS256"),
            "invalid_signature",
            id="another private key",
        ),
        pytest.param(
            lambda: sign(claims(), key=None, algorithm="none"), "invalid_algorithm", id="alg none"
        ),
    ],
)
def test_an_rs256_server_refuses_other_signers(
    rs_server: AuthServer, make_token: Callable[[], str], reason: str
) -> None:
    before = rs_server.failures(reason)

    response = httpx.post(rs_server.url + PROTECTED_PATH, headers=bearer(make_token()))

    assert_rejected(response, status=401, error_type="authentication_error")
    assert rs_server.failures(reason) == before + 1
