"""HTTP limits below the application (http_limits.py), over real sockets, on both ports:
the API port's uvicorn config (with a minimal app in place of the engine-backed one) and the
real metrics server. Each test is one finding of the hostile probe (issue 13, item 3)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Counter
from tests.support import free_port

from kuberank_server.http.http_limits import api_server_config, start_metrics_server
from kuberank_server.runtime.settings import ServerSettings

LIMITS = {
    "max_header_bytes": 8 * 1024,
    "header_timeout_seconds": 1.0,
    "body_timeout_seconds": 0.5,
    "max_connections": 8,
}


async def ok_app(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
    """Answers at once without reading the body, as a GET route does."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"ok"})


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
    registry = CollectorRegistry()
    Counter("probe_total", "a metric to serve", registry=registry).inc()
    settings = ServerSettings(host="127.0.0.1", metrics_port=free_port(), **LIMITS)
    server = start_metrics_server(registry, settings)
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


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
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
def test_connections_past_the_cap_are_refused_at_once(
    port_of: PortOf,
) -> None:
    with port_of() as port:
        held = [connect(port) for _ in range(LIMITS["max_connections"])]
        time.sleep(0.2)
        extra = connect(port)
        started = time.monotonic()
        status, error = status_and_error(read_until_closed(extra, timeout=2))
        assert (status, error["type"]) == (503, "service_unavailable")
        assert time.monotonic() - started < 0.5
        for sock in held:
            sock.close()
        time.sleep(0.2)
        again = connect(port)
        again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert again.recv(100).startswith(b"HTTP/1.1 200")


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
