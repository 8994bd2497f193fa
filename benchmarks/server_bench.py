"""Our server (JWT on) against vLLM's own server: `python -m benchmarks.server_bench`.

Same model (the embedded all-MiniLM-L6-v2), same machine, same load generator, one run:
each server is started alone, loaded at concurrency 1, 8 and 32 with 1, 16 and 64 documents
per request, then stopped. Every request's documents (and query) are new, so no cache
flatters either side. Reported per cell: pairs/s, p50 and p99 latency; per server: peak RSS
(the API process and its engine processes); and JWT verification time per request.

The last stdout line is one JSON object, including `server_vs_vllm_throughput`: ours /
theirs in pairs/s at concurrency 32 with 16 documents.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from benchmarks.auth_bench import verify_seconds_per_token
from kuberank_server.auth.tokens import mint_token
from kuberank_server.engine.scorer import embedded_model_path

CONCURRENCIES = (1, 8, 32)
DOCUMENTS_PER_REQUEST = (1, 16, 64)
HEADLINE_CELL = (32, 16)
# Fixed request counts keep a full run (two servers, 18 cells) to a few minutes here.
PAIRS_PER_CELL = 1600
MAX_REQUESTS_PER_CELL = 200
READY_TIMEOUT_SECONDS = 300
BENCH_SECRET = "server-bench-secret-0123456789abcdef0123"  # noqa: S105 - throwaway key

QUERIES = (
    "How to optimize database query performance?",
    "What makes a cache effective?",
    "How do indexes work?",
    "Why is my disk IO slow?",
    "How should I choose a data structure?",
    "What is query planning?",
    "When should data be archived?",
    "How do I reduce database load?",
)
SENTENCES = (
    "Using indexes can speed up queries",
    "Regularly cleaning unused data improves IO efficiency",
    "Choosing the right data structure is key to algorithm design",
    "Caching hot data effectively reduces database pressure",
    "Query planners estimate the cost of each join order",
    "Archiving cold rows keeps tables small and scans fast",
)


@dataclass
class Cell:
    concurrency: int
    documents: int
    requests: int
    pairs_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class ServerRun:
    name: str
    cells: list[Cell]
    peak_rss_mb: float


# Both servers' engines get the same KV cache, in bytes (vLLM's CPU backend would otherwise
# read --gpu-memory-utilization as a share of the whole machine).
KV_CACHE_BYTES = 1 << 30


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[psutil.Process]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield psutil.Process(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def wait_ready(url: str, ready_path: str, process: psutil.Process, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError(f"server exited; see {log_path}")
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_SECONDS} s; see {log_path}")


class Load:
    """Closed-loop load: `concurrency` clients, each sending its next request on an answer."""

    def __init__(self, url: str, model: str, headers: dict[str, str]) -> None:
        self.url = url
        self.model = model
        self.headers = headers
        self.serial = itertools.count()

    def body(self, documents: int) -> dict[str, object]:
        number = next(self.serial)
        return {
            "model": self.model,
            "query": QUERIES[number % len(QUERIES)],
            "documents": [f"{SENTENCES[(number + i) % len(SENTENCES)]} (r{number} d{i})."
                          for i in range(documents)],
        }  # fmt: skip

    async def cell(self, concurrency: int, documents: int) -> Cell:
        requests = max(2 * concurrency, min(MAX_REQUESTS_PER_CELL, PAIRS_PER_CELL // documents))
        latencies: list[float] = []
        errors = 0
        remaining = iter(range(requests))
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=300, limits=limits, headers=self.headers) as client:

            async def client_loop() -> None:
                nonlocal errors
                for _ in remaining:
                    body = self.body(documents)
                    started = time.perf_counter()
                    response = await client.post(self.url + "/v1/rerank", json=body)
                    latencies.append(time.perf_counter() - started)
                    errors += response.status_code != 200

            started = time.perf_counter()
            await asyncio.gather(*(client_loop() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
        return Cell(
            concurrency=concurrency,
            documents=documents,
            requests=requests,
            pairs_per_second=round(requests * documents / elapsed, 1),
            p50_ms=round(quantiles[49] * 1000, 1),
            p99_ms=round(quantiles[98] * 1000, 1),
            errors=errors,
        )


def bench_server(
    name: str, command: list[str], env: dict[str, str], url: str, ready_path: str,
    headers: dict[str, str], log_dir: Path,
) -> ServerRun:  # fmt: skip
    log_path = log_dir / f"{name}.log"
    with running(command, env, log_path) as process:
        wait_ready(url, ready_path, process, log_path)
        model = httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"]
        load = Load(url, model, headers)
        asyncio.run(load.cell(4, 16))  # warm-up: first-request costs are not throughput
        cells: list[Cell] = []
        peak_rss = tree_rss_mb(process)
        for concurrency, documents in itertools.product(CONCURRENCIES, DOCUMENTS_PER_REQUEST):
            cell = asyncio.run(load.cell(concurrency, documents))
            peak_rss = max(peak_rss, tree_rss_mb(process))
            print(f"{name:>8}  c={concurrency:<3} docs={documents:<3} "
                  f"{cell.pairs_per_second:8.1f} pairs/s  p50 {cell.p50_ms:8.1f} ms  "
                  f"p99 {cell.p99_ms:8.1f} ms  errors {cell.errors}", flush=True)  # fmt: skip
            cells.append(cell)
    return ServerRun(name, cells, round(peak_rss, 1))


def main() -> None:
    model_path = embedded_model_path()
    log_dir = Path(tempfile.mkdtemp(prefix="kuberank-server-bench-"))
    port = free_port()
    ours_url = f"http://127.0.0.1:{port}"
    token = mint_token(key=BENCH_SECRET, subject="bench", ttl_seconds=3600)
    ours = bench_server(
        "kuberank",
        [sys.executable, "-m", "kuberank_server.commands.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--metrics-port", "0", "--log-level", "warning",
         "--cpu-kv-cache-bytes", str(KV_CACHE_BYTES), "--max-concurrent-requests", "64"],
        engine_env() | {"KUBERANK_JWT_SECRET": BENCH_SECRET},
        ours_url, "/ready", {"Authorization": f"Bearer {token}"}, log_dir,
    )  # fmt: skip
    port = free_port()
    theirs = bench_server(
        "vllm",
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
         "--runner", "pooling", "--dtype", "float32",
         "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--max-model-len", "256",
         "--host", "127.0.0.1", "--port", str(port),
         "--disable-uvicorn-access-log"],
        engine_env(), f"http://127.0.0.1:{port}", "/health", {}, log_dir,
    )  # fmt: skip
    jwt_verify_us = round(verify_seconds_per_token("HS256") * 1e6, 1)
    headline = {
        run.name: next(c for c in run.cells if (c.concurrency, c.documents) == HEADLINE_CELL)
        for run in (ours, theirs)
    }
    ratio = headline["kuberank"].pairs_per_second / headline["vllm"].pairs_per_second
    print(f"JWT verification: {jwt_verify_us} us per request; logs in {log_dir}")
    print(json.dumps({
        "benchmark": "server",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (embedded, float32, CPU)",
        "kuberank": {"peak_rss_mb": ours.peak_rss_mb, "cells": [asdict(c) for c in ours.cells]},
        "vllm": {"peak_rss_mb": theirs.peak_rss_mb, "cells": [asdict(c) for c in theirs.cells]},
        "jwt_verify_us_per_request": jwt_verify_us,
        "server_vs_vllm_throughput": round(ratio, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
