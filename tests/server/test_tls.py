"""HTTPS on the API port with real certificates made here: trust, hostname, rotation.

uvicorn serves with `kuberank_server.http.tls` and the API port's config exactly as
`kuberank-server serve` sets them up, in a thread on loopback. The app behind it is a
one-route stand-in (the TLS layer is what is under test;
`test_serve_process_speaks_https_with_the_settings` runs the real server process with the
same settings). Clients name the Service's DNS name in SNI and check it
against the certificate, as in-cluster callers do.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from tests.server.certificates import SERVICE_NAMES, Authority, KeyPair, MountedSecret
from tests.support import engine_test_env, free_port

from kuberank_server.commands.cli import main as cli_main
from kuberank_server.http.http_limits import api_server_config
from kuberank_server.http.tls import (
    ReloadingCertificate,
    TLSConfigurationError,
    uvicorn_tls_options,
)
from kuberank_server.runtime.settings import ServerSettings

HOSTNAME = "ranker.search.svc"
CHECK_SECONDS = 0.2


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


class HttpsServer:
    def __init__(self, certificate: ReloadingCertificate, **limits: Any) -> None:
        self.certificate = certificate
        self.port = free_port()
        settings = ServerSettings(host="127.0.0.1", port=self.port, log_level="warning", **limits)
        config = api_server_config(_app(), settings, **certificate.server_options())
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="https-server", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> HttpsServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def trusting(*authorities: Authority) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cadata="".join(a.pem.decode() for a in authorities))
    return context


def get_health(server: HttpsServer | str, verify: ssl.SSLContext) -> tuple[int, str]:
    """GET /health on a new connection: (status, fingerprint of the certificate served)."""
    url = server if isinstance(server, str) else f"{server.url}/health"
    with httpx.Client(verify=verify) as client:
        response = client.get(url, extensions={"sni_hostname": HOSTNAME})
        return response.status_code, served_fingerprint(response)


def served_fingerprint(response: httpx.Response) -> str:
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    return hashlib.sha256(ssl_object.getpeercert(True)).hexdigest()


@pytest.fixture
def secret(tmp_path: Path) -> MountedSecret:
    return MountedSecret(tmp_path / "tls")


@pytest.fixture
def first_ca() -> Authority:
    return Authority.new("kuberank test CA 1")


@pytest.fixture
def first_pair(first_ca: Authority, secret: MountedSecret) -> KeyPair:
    pair = first_ca.issue()
    secret.write(pair)
    return pair


@pytest.fixture
def https_server(secret: MountedSecret, first_pair: KeyPair) -> Iterator[HttpsServer]:
    certificate = ReloadingCertificate(secret.cert_file, secret.key_file, CHECK_SECONDS)
    with HttpsServer(certificate) as server:
        yield server


def wait_past_check_interval() -> None:
    time.sleep(CHECK_SECONDS * 1.5)


def test_a_client_trusting_the_ca_gets_an_answer_for_every_service_name(
    https_server: HttpsServer, first_ca: Authority, first_pair: KeyPair
) -> None:
    assert get_health(https_server, trusting(first_ca)) == (200, first_pair.fingerprint)
    for name in SERVICE_NAMES:
        with httpx.Client(verify=trusting(first_ca)) as client:
            response = client.get(f"{https_server.url}/health", extensions={"sni_hostname": name})
            assert response.json() == {"status": "ok"}


def test_a_client_not_trusting_the_ca_fails_the_handshake(https_server: HttpsServer) -> None:
    stranger = Authority.new("some other CA")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get_health(https_server, trusting(stranger))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get_health(https_server, ssl.create_default_context())  # the system's CAs


def test_a_name_the_certificate_does_not_cover_fails_the_handshake(
    https_server: HttpsServer, first_ca: Authority
) -> None:
    with httpx.Client(verify=trusting(first_ca)) as client, pytest.raises(
        httpx.ConnectError, match=r"Hostname mismatch|doesn't match"
    ):  # fmt: skip
        client.get(f"{https_server.url}/health", extensions={"sni_hostname": "other.search.svc"})


def test_plain_http_is_not_answered_on_the_https_port(https_server: HttpsServer) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://127.0.0.1:{https_server.port}/health")


def test_rotation_is_served_to_new_connections_without_a_restart(
    https_server: HttpsServer, secret: MountedSecret, first_ca: Authority, first_pair: KeyPair
) -> None:
    kept_open = httpx.Client(verify=trusting(first_ca))
    before = kept_open.get(f"{https_server.url}/health", extensions={"sni_hostname": HOSTNAME})
    assert served_fingerprint(before) == first_pair.fingerprint

    # A new CA (an issuer replaced): new connections get the new certificate at once.
    second_ca = Authority.new("kuberank test CA 2")
    second_pair = second_ca.issue()
    secret.write(second_pair)
    wait_past_check_interval()
    assert get_health(https_server, trusting(second_ca)) == (200, second_pair.fingerprint)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get_health(https_server, trusting(first_ca))

    # A renewal by the same CA: a new certificate, served to a client trusting that CA.
    renewed = second_ca.issue()
    secret.write(renewed)
    wait_past_check_interval()
    assert get_health(https_server, trusting(second_ca)) == (200, renewed.fingerprint)

    # The connection opened before the rotations still works, on the certificate it began with.
    after = kept_open.get(f"{https_server.url}/health", extensions={"sni_hostname": HOSTNAME})
    assert after.status_code == 200 and served_fingerprint(after) == first_pair.fingerprint
    kept_open.close()
    assert https_server.certificate.loads == 3


def test_files_are_looked_at_no_more_often_than_the_interval(
    secret: MountedSecret, first_ca: Authority, first_pair: KeyPair
) -> None:
    certificate = ReloadingCertificate(secret.cert_file, secret.key_file, 3600)
    with HttpsServer(certificate) as server:
        secret.write(first_ca.issue())
        wait_past_check_interval()
        # Within the hour the old certificate is still served (and still valid).
        assert get_health(server, trusting(first_ca)) == (200, first_pair.fingerprint)
        assert certificate.loads == 1


def test_a_broken_rotation_keeps_the_previous_certificate_until_fixed(
    https_server: HttpsServer,
    secret: MountedSecret,
    first_ca: Authority,
    first_pair: KeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    new_pair = first_ca.issue()
    with caplog.at_level(logging.WARNING, logger="kuberank_server.http.tls"):
        secret.write(new_pair, key_pem=first_pair.key_pem)  # certificate and key do not match
        wait_past_check_interval()
        assert get_health(https_server, trusting(first_ca)) == (200, first_pair.fingerprint)
    assert "do not load; still serving the previous certificate" in caplog.text

    secret.write(new_pair)
    wait_past_check_interval()
    assert get_health(https_server, trusting(first_ca)) == (200, new_pair.fingerprint)


def test_unusable_files_are_refused_at_start_naming_the_file(
    secret: MountedSecret, first_ca: Authority, first_pair: KeyPair, tmp_path: Path
) -> None:
    missing = tmp_path / "absent.crt"
    with pytest.raises(TLSConfigurationError, match=f"not found: {missing}"):
        ReloadingCertificate(missing, secret.key_file, 5)
    other_key = first_ca.issue().key_pem
    (tmp_path / "other.key").write_bytes(other_key)
    with pytest.raises(TLSConfigurationError, match="cannot load the TLS certificate"):
        ReloadingCertificate(secret.cert_file, tmp_path / "other.key", 5)


def test_silent_connections_count_from_accept_and_the_handshake_has_the_header_timeout(
    secret: MountedSecret, first_ca: Authority, first_pair: KeyPair
) -> None:
    """Issue 19, item 5: 3,000 silent sockets were accepted uncounted and each held 60 s."""
    certificate = ReloadingCertificate(secret.cert_file, secret.key_file, CHECK_SECONDS)
    limits = {"max_connections": 4, "max_connections_per_client": 3, "header_timeout_seconds": 1}
    with HttpsServer(certificate, **limits) as server:
        silent = [socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                           source_address=(f"127.0.0.{2 + n // 3}", 0))
                  for n in range(12)]  # fmt: skip
        time.sleep(0.3)
        # The cap (4) and the probes' reserve (8) are taken by sockets that never said hello:
        # the next connection is closed at once, before any handshake.
        refused = socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                           source_address=("127.0.0.9", 0))  # fmt: skip
        started = time.monotonic()
        assert refused.recv(10) == b""
        assert time.monotonic() - started < 0.5
        # A silent socket is closed once the header timeout has passed, not after 60 s.
        silent[0].settimeout(5)
        assert silent[0].recv(10) == b""
        assert time.monotonic() - started < limits["header_timeout_seconds"] + 1
        for sock in silent:
            sock.close()
        time.sleep(0.3)
        assert get_health(server, trusting(first_ca)) == (200, first_pair.fingerprint)


def test_settings_take_both_files_or_neither(secret: MountedSecret, first_pair: KeyPair) -> None:
    assert uvicorn_tls_options(ServerSettings()) == {}
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        ServerSettings(tls_cert_file=secret.cert_file)
    settings = ServerSettings(tls_cert_file=secret.cert_file, tls_key_file=secret.key_file)
    assert set(uvicorn_tls_options(settings)) == {"tls_context"}


def test_serve_exits_with_a_usage_error_on_unusable_tls_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.pem"
    status = cli_main(
        ["serve", "--tls-cert-file", str(absent), "--tls-key-file", str(absent),
         "--metrics-port", "0"]
    )  # fmt: skip
    assert status == 2
    assert f"TLS file not found: {absent}" in capsys.readouterr().err


@pytest.mark.engine
def test_serve_process_speaks_https_with_the_settings(
    secret: MountedSecret, first_ca: Authority, first_pair: KeyPair, artifacts_dir: Path
) -> None:
    """`kuberank-server serve` with the env the operator sets: HTTPS on the API port at once
    (`/health` answers while the engine loads), plain HTTP on the metrics port."""
    port, metrics_port = free_port(), free_port()
    env = engine_test_env() | {
        "KUBERANK_JWT_SECRET": "tls-test-secret-0123456789abcdef01234",
        "KUBERANK_TLS_CERT_FILE": str(secret.cert_file),
        "KUBERANK_TLS_KEY_FILE": str(secret.key_file),
    }
    log_path = artifacts_dir / "tls-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kuberank_server.commands.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--metrics-port", str(metrics_port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"https://127.0.0.1:{port}/health"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()[-4000:]
            try:
                assert get_health(url, trusting(first_ca)) == (200, first_pair.fingerprint)
                break
            except httpx.ConnectError as error:
                assert "CERTIFICATE" not in str(error), error
                assert time.monotonic() < deadline, "no HTTPS answer within 120 s"
                time.sleep(0.5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url, verify=trusting(Authority.new("stranger")))
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.status_code == 200
        # The handshake is the guarded protocol's (counted from accept), not uvicorn's, so
        # uvicorn's own start line says http://; the server's line says what the port speaks.
        assert f"HTTPS with {secret.cert_file}" in log_path.read_text()
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
