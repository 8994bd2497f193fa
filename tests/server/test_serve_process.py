"""`kuberank-server serve` as a real process on loopback: an official client SDK, the metrics
port, the request log, and a graceful drain under load."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.server.harness import SEED_DOCUMENTS, SEED_LAST_INDEX, SEED_QUERY
from tests.support import LiveServer, engine_test_env, free_port

pytestmark = pytest.mark.engine

DESIGN_METRICS = (
    "kuberank_requests_total",
    "kuberank_request_duration_seconds",
    "kuberank_documents_per_request",
    "kuberank_pairs_scored_total",
    "kuberank_prompt_tokens_total",
    "kuberank_requests_in_flight",
    "kuberank_requests_waiting",
    "kuberank_auth_failures_total",
    "kuberank_truncated_documents_total",
    "kuberank_requests_in_progress",
    "kuberank_connections_recycled_total",
    "kuberank_startup_seconds",
)


def test_official_cohere_sdk_works_unchanged(live_server: LiveServer) -> None:
    import cohere

    client = cohere.ClientV2(api_key=live_server.token(), base_url=live_server.url)
    response = client.rerank(model="rerank-v3.5", query=SEED_QUERY, documents=SEED_DOCUMENTS)
    ranking = [result.index for result in response.results]
    assert sorted(ranking) == [0, 1, 2, 3]
    assert ranking[-1] == SEED_LAST_INDEX
    top = client.rerank(model="rerank-v3.5", query=SEED_QUERY, documents=SEED_DOCUMENTS, top_n=1)
    assert [result.index for result in top.results] == [0]

    wrong_key = cohere.ClientV2(api_key="not-a-token", base_url=live_server.url)
    with pytest.raises(cohere.errors.UnauthorizedError):
        wrong_key.rerank(model="rerank-v3.5", query=SEED_QUERY, documents=SEED_DOCUMENTS)


def test_metrics_port_has_design_and_vllm_metrics(live_server: LiveServer) -> None:
    headers = live_server.headers()
    httpx.post(f"{live_server.url}/v1/rerank", headers=headers, json=SEED).raise_for_status()
    httpx.post(f"{live_server.url}/v1/rerank", json={"query": "q", "documents": ["d"]})
    text = httpx.get(live_server.metrics_url).text
    for name in DESIGN_METRICS:
        assert f"# TYPE {name} " in text, name
    assert 'kuberank_requests_total{code="200",route="/v1/rerank"}' in text
    assert 'kuberank_auth_failures_total{reason="missing_token"}' in text
    for phase in ("engine", "golden_query", "total"):
        assert f'kuberank_startup_seconds{{phase="{phase}"}}' in text, phase
    assert "vllm:num_requests_waiting{" in text
    assert "vllm:num_requests_running{" in text
    # The API port does not serve metrics, and the metrics port needs no token.
    assert httpx.get(f"{live_server.url}/metrics").status_code in (401, 404)


def test_one_json_log_line_per_request_without_the_token(live_server: LiveServer) -> None:
    token = live_server.token(subject="log-reader")
    response = httpx.post(
        f"{live_server.url}/v2/rerank",
        headers={"Authorization": f"Bearer {token}", "X-Request-Id": "log-check-1"},
        json={"query": SEED_QUERY, "documents": SEED_DOCUMENTS},
    )
    assert response.headers["x-request-id"] == "log-check-1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in live_server.log_path.read_text().splitlines()
                 if line.startswith('{"request_id"')]  # fmt: skip
        mine = [line for line in lines if line["request_id"] == "log-check-1"]
        if mine:
            break
        time.sleep(0.2)
    assert mine == [{
        "request_id": "log-check-1", "method": "POST", "route": "/v2/rerank", "status": 200,
        "latency_ms": mine[0]["latency_ms"], "documents": 4, "subject": "log-reader",
    }]  # fmt: skip
    assert token not in live_server.log_path.read_text()


SEED = {"query": SEED_QUERY, "documents": SEED_DOCUMENTS}


def _host_port(url: str) -> tuple[str, int]:
    host, port = httpx.URL(url).host, httpx.URL(url).port
    assert port is not None
    return host, port


def test_both_ports_close_slow_headers_and_refuse_huge_ones(live_server: LiveServer) -> None:
    """The probe's slowloris and 32 MB header, against `serve`'s real API and metrics ports
    at the default limits (10 s to finish headers, 32 KiB of them)."""
    ports = [_host_port(live_server.url), _host_port(live_server.metrics_url)]
    slow = [socket.create_connection(address, timeout=30) for address in ports for _ in range(5)]
    for sock in slow:
        sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    for address in ports:
        big = socket.create_connection(address, timeout=30)
        try:
            big.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 32 * 1024 * 1024)
        except OSError:
            pass  # closed before all of it was read, as it should be
        assert _read_all(big).startswith(b"HTTP/1.1 431 "), address
    started = time.monotonic()
    answers = [_read_all(sock) for sock in slow]
    assert time.monotonic() - started < 15
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return data


@dataclass
class Outcome:
    sent_at: float
    status: int | None  # None: the connection was refused or dropped


@pytest.fixture
def draining_server(artifacts_dir: Path) -> Iterator[LiveServer]:
    port = free_port()
    log_path = artifacts_dir / "drain-server.log"
    secret = "drain-test-secret-0123456789abcdef0123"
    env = engine_test_env() | {
        "KUBERANK_JWT_SECRET": secret,
        "KUBERANK_DRAIN_TIMEOUT_SECONDS": "30",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kuberank_server.commands.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--metrics-port", "0"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", metrics_url="", secret=secret,
                         log_path=log_path, process=process)  # fmt: skip
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_readiness_then_graceful_drain_under_load(draining_server: LiveServer) -> None:
    server = draining_server
    headers = server.headers()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        # 1. Up at once, not ready until the engine and the golden query are done.
        first_ready = await _first_answer(client, "/ready")
        assert first_ready.status_code == 503, "ready before the engine could have loaded"
        assert (await client.get("/health")).status_code == 200
        loading = await client.post("/v1/rerank", headers=headers, json=SEED)
        assert loading.status_code == 503
        await _wait_ready(client)

        # 2. Load: 8 clients, 64 distinct documents per request.
        outcomes: list[Outcome] = []
        stop_sending = asyncio.Event()

        async def load(worker: int) -> None:
            number = 0
            while not stop_sending.is_set():
                number += 1
                documents = [f"{SEED_DOCUMENTS[i % 4]} (w{worker} r{number} d{i})"
                             for i in range(64)]  # fmt: skip
                outcome = Outcome(time.monotonic(), None)
                outcomes.append(outcome)
                try:
                    response = await client.post(
                        "/v1/rerank", headers=headers,
                        json={"query": SEED_QUERY, "documents": documents},
                    )  # fmt: skip
                    outcome.status = response.status_code
                except httpx.TransportError:
                    outcome.status = None

        workers = [asyncio.create_task(load(worker)) for worker in range(8)]
        # An upload that stalls after its headers and a few bytes: the probe saw it hold the
        # drain for the whole timeout, then get a plain-text 500.
        stalled = socket.create_connection(_host_port(server.url), timeout=60)
        token = headers["Authorization"].encode()
        stalled.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                        b"\r\nContent-Length: 1000\r\nAuthorization: " + token +
                        b"\r\n\r\n{\"query\": ")  # fmt: skip
        await asyncio.sleep(4)
        stop_sending.set()
        await asyncio.sleep(0.3)  # the last requests sent have reached the server
        in_flight = sum(1 for outcome in outcomes if outcome.status is None)
        assert in_flight > 0, "no request in flight at SIGTERM: the test would prove nothing"

        # 3. SIGTERM: not ready at once, new requests refused, accepted ones finish.
        server.process.send_signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        await asyncio.sleep(0.2)
        ready = await client.get("/ready")
        late = await client.post("/v1/rerank", headers=headers, json=SEED)
        assert ready.status_code == 503
        assert late.status_code == 503
        assert late.json()["error"]["type"] == "service_unavailable"
        await asyncio.gather(*workers)

    accepted = [outcome for outcome in outcomes if outcome.sent_at < signalled_at]
    assert len(accepted) >= 8
    assert [outcome.status for outcome in accepted] == [200] * len(accepted)
    exit_code = await asyncio.to_thread(server.process.wait, 30)
    assert exit_code == 0
    assert time.monotonic() - signalled_at < 30
    assert "drain complete" in server.log_path.read_text()
    stalled_answer = await asyncio.to_thread(_read_all, stalled)
    assert stalled_answer.startswith(b"HTTP/1.1 503 "), stalled_answer
    assert b'"type":"service_unavailable"' in stalled_answer


async def _first_answer(client: httpx.AsyncClient, path: str) -> httpx.Response:
    async with asyncio.timeout(120):
        while True:
            try:
                return await client.get(path)
            except httpx.TransportError:
                await asyncio.sleep(0.1)


async def _wait_ready(client: httpx.AsyncClient, timeout_seconds: float = 300) -> None:
    deadline = time.monotonic() + timeout_seconds
    while (await client.get("/ready")).status_code != 200:
        assert time.monotonic() < deadline, "not ready in time"
        await asyncio.sleep(0.5)
