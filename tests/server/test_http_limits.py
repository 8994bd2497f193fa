"""HTTP limits below the application (http_limits.py), over real sockets, on both ports:
the API port's uvicorn config (with a minimal app in place of the engine-backed one) and the
real metrics server. Each test is one finding of a hostile probe (issue 13, item 3; issue 19,
items 4 and 6)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import SimpleNamespace

import pytest
import uvicorn
from tests.support import free_port

from kuberank_server.http.http_limits import api_server_config, start_metrics_server
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.settings import ServerSettings

LIMITS = {
    "max_header_bytes": 8 * 1024,
    "header_timeout_seconds": 1.0,
    "body_timeout_seconds": 0.5,
    "max_connections": 8,
    "max_connections_per_client": 6,
}


class OkApp:
    """Answers at once without reading the body, as a GET route does; with the metrics the
    API port's protocol counts its refusals in, as the real app's."""

    def __init__(self) -> None:
        self.state = SimpleNamespace(metrics=ServerMetrics())

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})


ok_app = OkApp()


def refusals_counted(reason: str, port: str = "api") -> float:
    value = ok_app.state.metrics.registry.get_sample_value(
        "kuberank_http_refusals_total", {"port": port, "reason": reason}
    )
    return value or 0.0


@contextmanager
def api_port() -> Iterator[int]:
    settings = ServerSettings(host="127.0.0.1", port=free_port(), **LIMITS)
    config = api_server_config(ok_app, settings)
    config.lifespan = "off"
    server = uvicorn.Server(config)
    sockets = [config.bind_socket()]
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    try:
        _wait_started(server)
        yield settings.port
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def metrics_port() -> Iterator[int]:
    settings = ServerSettings(host="127.0.0.1", metrics_port=free_port(), **LIMITS)
    server = start_metrics_server(ok_app.state.metrics, settings)
    try:
        _wait_started(server)
        yield settings.metrics_port
    finally:
        server.should_exit = True


def _wait_started(server: uvicorn.Server) -> None:
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)


PortOf = Callable[[], AbstractContextManager[int]]
PORTS = pytest.mark.parametrize("port_of", [api_port, metrics_port], ids=["api", "metrics"])
PORT_LABEL = {api_port: "api", metrics_port: "metrics"}  # the refusal counter's `port`


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection from `source`, any address of 127.0.0.0/8 (each one a client address)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_and_error(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"connection: close" in head.lower()
    return status, json.loads(body)["error"]


@PORTS
def test_partial_headers_trickling_in_are_closed_after_the_header_timeout(
    port_of: PortOf,
) -> None:
    with port_of() as port:
        clients = [connect(port) for _ in range(6)]
        started = time.monotonic()
        for client in clients:
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        closed_at: dict[int, float] = {}
        while len(closed_at) < len(clients) and time.monotonic() - started < 5:
            for number, client in enumerate(clients):
                if number in closed_at:
                    continue
                try:
                    client.sendall(b"a")  # one byte at a time keeps uvicorn's own timers off
                except OSError:
                    closed_at[number] = time.monotonic() - started
            time.sleep(0.2)
        assert len(closed_at) == len(clients), "a trickling connection was held open"
        assert max(closed_at.values()) < LIMITS["header_timeout_seconds"] + 1.5
        status, error = status_and_error(read_until_closed(clients[0]))
        assert (status, error["type"]) == (408, "request_timeout")


@PORTS
def test_a_connection_that_sends_nothing_is_closed(
    port_of: PortOf,
) -> None:
    with port_of() as port:
        client = connect(port)
        started = time.monotonic()
        response = read_until_closed(client)
        assert time.monotonic() - started < LIMITS["header_timeout_seconds"] + 1
        assert status_and_error(response)[0] == 408


@PORTS
def test_headers_over_the_cap_get_431(port_of: PortOf) -> None:
    with port_of() as port:
        client = connect(port)
        try:
            client.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1024 * 1024)
        except OSError:
            pass  # the server may close before it has read all of it
        status, error = status_and_error(read_until_closed(client))
        assert (status, error["type"]) == (431, "request_header_fields_too_large")
        # Headers under the cap are still fine.
        fine = connect(port)
        fine.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 4000 + b"\r\n\r\n")
        assert fine.recv(100).startswith(b"HTTP/1.1 200")


@PORTS
def test_connections_past_the_cap_serve_only_the_probes(
    port_of: PortOf,
) -> None:
    with port_of() as port:
        # Two clients fill the port; a third client's request is refused at once, its probe
        # is answered (from a reserve past the cap).
        held = [connect(port, f"127.0.0.{2 + n % 2}") for n in range(LIMITS["max_connections"])]
        time.sleep(0.2)
        extra = connect(port, "127.0.0.4")
        started = time.monotonic()
        extra.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        status, error = status_and_error(read_until_closed(extra, timeout=2))
        assert (status, error["type"]) == (503, "service_unavailable")
        assert time.monotonic() - started < 0.5
        probe = connect(port, "127.0.0.4")
        probe.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert probe.recv(100).startswith(b"HTTP/1.1 200")
        for sock in held:
            sock.close()
        time.sleep(0.2)
        again = connect(port)
        again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert again.recv(100).startswith(b"HTTP/1.1 200")


@PORTS
def test_one_client_address_cannot_take_every_connection(port_of: PortOf) -> None:
    with port_of() as port:
        greedy = [connect(port, "127.0.0.2") for _ in range(LIMITS["max_connections_per_client"])]
        time.sleep(0.2)
        one_more = connect(port, "127.0.0.2")
        status, error = status_and_error(read_until_closed(one_more, timeout=2))
        assert (status, error["type"]) == (503, "service_unavailable")
        assert "from this client address" in str(error["message"])
        other = connect(port, "127.0.0.3")
        other.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.recv(100).startswith(b"HTTP/1.1 200")
        for sock in greedy:
            sock.close()


MALFORMED_REQUESTS = {
    "garbage": b"GARBAGE\r\n\r\n",
    "content_length_and_chunked": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two_content_lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "nul_in_a_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
}


@PORTS
@pytest.mark.parametrize("request_bytes", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS)
def test_what_the_parser_cannot_read_gets_400_in_the_envelope(
    port_of: PortOf, request_bytes: bytes
) -> None:
    counted = refusals_counted("parse_error", PORT_LABEL[port_of])
    with port_of() as port:
        client = connect(port)
        client.sendall(request_bytes)
        response = read_until_closed(client)
    assert b"content-type: application/json" in response.lower()
    status, error = status_and_error(response)
    assert (status, error["type"]) == (400, "invalid_request_error")
    assert refusals_counted("parse_error", PORT_LABEL[port_of]) == counted + 1


def test_every_protocol_refusal_is_counted_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    reasons = ("header_timeout", "header_too_large", "client_connections")
    before = {reason: refusals_counted(reason) for reason in reasons}
    with caplog.at_level(logging.WARNING, logger="kuberank_server.refusals"), api_port() as port:
        read_until_closed(connect(port))  # sends nothing: 408
        big = connect(port)
        big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16 * 1024)
        read_until_closed(big)
        held = [connect(port, "127.0.0.2") for _ in range(LIMITS["max_connections_per_client"])]
        time.sleep(0.2)
        read_until_closed(connect(port, "127.0.0.2"))
        for sock in held:
            sock.close()
    assert refusals_counted("header_timeout") >= before["header_timeout"] + 1
    assert refusals_counted("header_too_large") == before["header_too_large"] + 1
    assert refusals_counted("client_connections") == before["client_connections"] + 1
    logged = [json.loads(record.getMessage()) for record in caplog.records
              if record.name == "kuberank_server.refusals"]  # fmt: skip
    assert set(reasons) <= {line.get("reason") for line in logged}


def test_a_flood_of_refusals_is_logged_within_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kuberank_server.refusals"), api_port() as port:
        for _ in range(60):
            client = connect(port)
            client.sendall(MALFORMED_REQUESTS["garbage"])
            read_until_closed(client)
        time.sleep(1.2)  # the summary follows the window
    lines = [json.loads(record.getMessage()) for record in caplog.records
             if record.name == "kuberank_server.refusals"]  # fmt: skip
    suppressed = sum(line.get("suppressed", 0) for line in lines)
    assert len(lines) < 60
    assert len([line for line in lines if "reason" in line]) + suppressed == 60


def test_a_websocket_upgrade_is_served_as_the_plain_request_it_also_is() -> None:
    with api_port() as port:
        client = connect(port)
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                       b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")  # fmt: skip
        response = client.recv(65536)
    assert response.startswith(b"HTTP/1.1 200"), response
    assert response.endswith(b"ok\r\n0\r\n\r\n")  # chunked: the app answered


@PORTS
def test_a_body_that_never_completes_is_closed(
    port_of: PortOf,
) -> None:
    with port_of() as port:
        client = connect(port)
        client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        client.settimeout(0.5)
        data = read_until_closed(client)  # the answer (no one reads the body), then the close
        assert time.monotonic() - started < LIMITS["body_timeout_seconds"] + 2
        assert data.startswith(b"HTTP/1.1 200")


@PORTS
def test_keep_alive_requests_within_the_limits_are_served(
    port_of: PortOf,
) -> None:
    with port_of() as port:
        client = connect(port)
        for _ in range(3):
            # Headers in two parts, well inside the header timeout.
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.3)
            client.sendall(b"\r\n")
            response = client.recv(65536)
            assert response.startswith(b"HTTP/1.1 200"), response
            time.sleep(LIMITS["header_timeout_seconds"] * 1.5)  # idle keep-alive: not slow
