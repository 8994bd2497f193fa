"""Our server (JWT on) against vLLM's own server: `python -m benchmarks.server_bench`.

Same model (the embedded all-MiniLM-L6-v2), same machine, same load generator, one run.
Both servers start and stay up; each cell (callers x documents per request) is then loaded
in alternating rounds, ours, vLLM's, ours, vLLM's, ... (`--rounds`, default 2), so that
whatever else the machine is doing hits both sides alike and the spread between rounds shows
how much noise there is. Every request's documents (and query) are new, so no cache flatters
either side; the server not being loaded sits idle (its CPU time in that round is reported).

Reported per cell and side: pairs/s and p50/p99 latency (median round, and every round), and
CPU seconds per request: the API process alone (our request path, or vLLM's) and the whole
process tree (with the engine), from the processes' own CPU time over each round. Per cell:
the throughput ratio ours / theirs of each round, its median and range. Per server: peak RSS.

The last stdout line is one JSON object, including `server_vs_vllm_throughput` (the median
round ratio at 32 callers x 16 documents) and `worst_cell` (the cell with the lowest median
ratio, with that ratio's range over the rounds).
"""

from __future__ import annotations

import argparse
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
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

from benchmarks.auth_bench import verify_seconds_per_token
from kuberank_server.auth.tokens import mint_token
from kuberank_server.engine.scorer import embedded_model_path

# (callers, documents per request, requests per round). The requests are fixed, not the time,
# so both sides do the same work; each round is a few seconds here (32 x 64 about 15 s).
CELLS = ((1, 1, 240), (8, 1, 480), (32, 1, 640), (32, 16, 128), (32, 64, 64))
HEADLINE_CELL = (32, 16)
DEFAULT_ROUNDS = 2  # about 10 minutes on the busy 2-core machine; 3 took 14
READY_TIMEOUT_SECONDS = 900  # two engines starting at once on a busy 2-core machine
BENCH_SECRET = "server-bench-secret-0123456789abcdef0123"  # noqa: S105 - throwaway key
OURS, THEIRS = "kuberank", "vllm"

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

# Both servers' engines get the same KV cache, in bytes (vLLM's CPU backend would otherwise
# read --gpu-memory-utilization as a share of the whole machine).
KV_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Server:
    """One side: how to start it and how to call it."""

    name: str
    command: list[str]
    env: dict[str, str]
    url: str
    ready_path: str
    headers: dict[str, str]


@dataclass
class Round:
    """One side's load of one cell, once."""

    pairs_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    seconds: float
    # CPU seconds the server's processes spent during the round: the API process alone, and
    # with its children (the engine).
    api_cpu_seconds: float
    tree_cpu_seconds: float


@dataclass
class Side:
    """One side's figures for one cell over all rounds (medians first, then every round)."""

    pairs_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    api_cpu_seconds_per_request: float
    cpu_seconds_per_request: float
    pairs_per_second_rounds: list[float]
    p50_ms_rounds: list[float]
    # CPU seconds the other server's processes used while this side was loaded: what idling
    # costs, to be read as noise.
    idle_other_cpu_seconds: float = 0.0


@dataclass
class CellResult:
    concurrency: int
    documents: int
    requests: int
    sides: dict[str, Side] = field(default_factory=dict)
    throughput_ratio_rounds: list[float] = field(default_factory=list)

    @property
    def throughput_ratio(self) -> float:
        return round(statistics.median(self.throughput_ratio_rounds), 3)

    def as_json(self) -> dict[str, object]:
        return {
            "concurrency": self.concurrency,
            "documents": self.documents,
            "requests": self.requests,
            **{name: asdict(side) for name, side in self.sides.items()},
            "throughput_ratio": self.throughput_ratio,
            "throughput_ratio_range": [min(self.throughput_ratio_rounds),
                                       max(self.throughput_ratio_rounds)],
            "throughput_ratio_rounds": self.throughput_ratio_rounds,
            "p50_ratio": round(self.sides[OURS].p50_ms / self.sides[THEIRS].p50_ms, 3),
        }  # fmt: skip


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def servers() -> tuple[Server, Server]:
    """Ours with JWT auth on, and `vllm serve` (no auth) on the same model and engine sizes."""
    model_path = embedded_model_path()
    token = mint_token(key=BENCH_SECRET, subject="bench", ttl_seconds=3600)
    ours_port, theirs_port = free_port(), free_port()
    ours = Server(
        OURS,
        [sys.executable, "-m", "kuberank_server.commands.cli", "serve", "--host", "127.0.0.1",
         "--port", str(ours_port), "--metrics-port", "0", "--log-level", "warning",
         "--cpu-kv-cache-bytes", str(KV_CACHE_BYTES), "--max-concurrent-requests", "64",
         # vLLM's server refuses nothing: neither does ours here (its admission still runs).
         "--max-queue-wait-seconds", "3600", "--drain-timeout-seconds", "0"],
        engine_env() | {"KUBERANK_JWT_SECRET": BENCH_SECRET},
        f"http://127.0.0.1:{ours_port}", "/ready", {"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    theirs = Server(
        THEIRS,
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
         "--runner", "pooling", "--dtype", "float32",
         "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--max-model-len", "256",
         "--host", "127.0.0.1", "--port", str(theirs_port),
         "--disable-uvicorn-access-log"],
        engine_env(), f"http://127.0.0.1:{theirs_port}", "/health", {},
    )  # fmt: skip
    return ours, theirs


@contextmanager
def running(server: Server, log_dir: Path) -> Iterator[psutil.Process]:
    """The server's API process, started, until the block ends (then SIGTERM)."""
    log_path = log_dir / f"{server.name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server.command, env=server.env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield psutil.Process(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tree(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User plus system CPU seconds these processes have used so far (gone ones count 0)."""
    total = 0.0
    for member in processes:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for member in tree(process):
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def wait_ready(server: Server, process: psutil.Process) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError(f"{server.name} exited; see its log")
        try:
            if httpx.get(server.url + server.ready_path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{server.name} not ready after {READY_TIMEOUT_SECONDS} s")


class Load:
    """Closed-loop load: `concurrency` clients, each sending its next request on an answer."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.model = httpx.get(server.url + "/v1/models", headers=server.headers).json()["data"][0][
            "id"
        ]
        self.serial = itertools.count()

    def body(self, documents: int) -> dict[str, object]:
        number = next(self.serial)
        return {
            "model": self.model,
            "query": QUERIES[number % len(QUERIES)],
            "documents": [f"{SENTENCES[(number + i) % len(SENTENCES)]} (r{number} d{i})."
                          for i in range(documents)],
        }  # fmt: skip

    async def run(self, concurrency: int, documents: int, requests: int) -> tuple[
        list[float], int, float
    ]:  # fmt: skip
        """Latencies, errors and elapsed seconds of `requests` requests."""
        latencies: list[float] = []
        errors = 0
        remaining = iter(range(requests))
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        url = self.server.url + "/v1/rerank"
        async with httpx.AsyncClient(
            timeout=300, limits=limits, headers=self.server.headers
        ) as client:

            async def client_loop() -> None:
                nonlocal errors
                for _ in remaining:
                    body = self.body(documents)
                    started = time.perf_counter()
                    response = await client.post(url, json=body)
                    latencies.append(time.perf_counter() - started)
                    errors += response.status_code != 200

            started = time.perf_counter()
            await asyncio.gather(*(client_loop() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        return latencies, errors, elapsed


def measure_round(
    load: Load, process: psutil.Process, concurrency: int, documents: int, requests: int
) -> Round:
    members = tree(process)
    api_before, tree_before = cpu_seconds([process]), cpu_seconds(members)
    latencies, errors, elapsed = asyncio.run(load.run(concurrency, documents, requests))
    api_cpu = cpu_seconds([process]) - api_before
    tree_cpu = cpu_seconds(members) - tree_before
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return Round(
        # Answered requests only: a refusal is quick, and is no throughput.
        pairs_per_second=round((requests - errors) * documents / elapsed, 1),
        p50_ms=round(quantiles[49] * 1000, 1),
        p99_ms=round(quantiles[98] * 1000, 1),
        errors=errors,
        seconds=round(elapsed, 2),
        api_cpu_seconds=api_cpu,
        tree_cpu_seconds=tree_cpu,
    )


def summarise(rounds: list[Round], requests: int, idle_other_cpu: float) -> Side:
    """One side's rounds of a cell: medians, and the rounds themselves."""
    return Side(
        pairs_per_second=round(statistics.median(r.pairs_per_second for r in rounds), 1),
        p50_ms=round(statistics.median(r.p50_ms for r in rounds), 1),
        p99_ms=round(statistics.median(r.p99_ms for r in rounds), 1),
        errors=sum(r.errors for r in rounds),
        api_cpu_seconds_per_request=round(
            statistics.median(r.api_cpu_seconds for r in rounds) / requests, 6
        ),
        cpu_seconds_per_request=round(
            statistics.median(r.tree_cpu_seconds for r in rounds) / requests, 6
        ),
        pairs_per_second_rounds=[r.pairs_per_second for r in rounds],
        p50_ms_rounds=[r.p50_ms for r in rounds],
        idle_other_cpu_seconds=round(idle_other_cpu, 2),
    )


def ratio_rounds(ours: list[Round], theirs: list[Round]) -> list[float]:
    """Ours / theirs in pairs/s, round by round (each pair of rounds ran back to back)."""
    return [
        round(a.pairs_per_second / b.pairs_per_second, 3) for a, b in zip(ours, theirs, strict=True)
    ]


def bench_cell(
    sides: list[tuple[Load, psutil.Process]], concurrency: int, documents: int, requests: int,
    rounds: int,
) -> CellResult:  # fmt: skip
    """`rounds` rounds of the cell, the sides in turn (A, B, A, B, ...)."""
    runs: dict[str, list[Round]] = {load.server.name: [] for load, _ in sides}
    idle: dict[str, float] = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for load, process in sides:
            others = [p for _, p in sides if p is not process]
            other_before = sum(cpu_seconds(tree(p)) for p in others)
            result = measure_round(load, process, concurrency, documents, requests)
            idle[load.server.name] += sum(cpu_seconds(tree(p)) for p in others) - other_before
            runs[load.server.name].append(result)
            print(f"{load.server.name:>8}  c={concurrency:<3} docs={documents:<3} "
                  f"{result.pairs_per_second:8.1f} pairs/s  p50 {result.p50_ms:8.1f} ms  "
                  f"p99 {result.p99_ms:8.1f} ms  API CPU "
                  f"{result.api_cpu_seconds / requests * 1000:6.2f} ms/request  "
                  f"errors {result.errors}", flush=True)  # fmt: skip
    cell = CellResult(concurrency, documents, requests)
    for name, measured in runs.items():
        cell.sides[name] = summarise(measured, requests, idle[name])
    cell.throughput_ratio_rounds = ratio_rounds(runs[OURS], runs[THEIRS])
    return cell


@contextmanager
def both_running(log_dir: Path) -> Iterator[list[tuple[Load, psutil.Process]]]:
    """Both servers started together (engine start-up is most of the wait), each warmed up."""
    with ExitStack() as stack:
        started = [(server, stack.enter_context(running(server, log_dir))) for server in servers()]
        sides = []
        for server, process in started:
            wait_ready(server, process)
            load = Load(server)
            asyncio.run(load.run(4, 16, 32))  # first-request costs are not throughput
            sides.append((load, process))
        yield sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help="rounds per cell and side (at least 2, for the spread)",
    )
    args = parser.parse_args()  # fmt: skip
    rounds = max(2, args.rounds)
    log_dir = Path(tempfile.mkdtemp(prefix="kuberank-server-bench-"))
    cells: list[CellResult] = []
    with both_running(log_dir) as sides:
        peak_rss = {load.server.name: tree_rss_mb(process) for load, process in sides}
        for concurrency, documents, requests in CELLS:
            cells.append(bench_cell(sides, concurrency, documents, requests, rounds))
            for load, process in sides:
                name = load.server.name
                peak_rss[name] = max(peak_rss[name], tree_rss_mb(process))
    jwt_verify_us = round(verify_seconds_per_token("HS256") * 1e6, 1)
    print(
        f"\n| callers x documents | {OURS} pairs/s | {THEIRS} pairs/s | ratio (range) | "
        f"{OURS} p50 | {THEIRS} p50 | {OURS} API CPU/request | {THEIRS} API CPU/request |"
    )
    for cell in cells:
        a, b = cell.sides[OURS], cell.sides[THEIRS]
        print(f"| {cell.concurrency} x {cell.documents} | {a.pairs_per_second} | "
              f"{b.pairs_per_second} | {cell.throughput_ratio} "
              f"({min(cell.throughput_ratio_rounds)}-{max(cell.throughput_ratio_rounds)}) | "
              f"{a.p50_ms} ms | {b.p50_ms} ms | {a.api_cpu_seconds_per_request * 1000:.2f} ms | "
              f"{b.api_cpu_seconds_per_request * 1000:.2f} ms |")  # fmt: skip
    print(f"JWT verification: {jwt_verify_us} us per request; logs in {log_dir}")
    headline = next(c for c in cells if (c.concurrency, c.documents) == HEADLINE_CELL)
    worst = min(cells, key=lambda c: c.throughput_ratio)
    print(json.dumps({
        "benchmark": "server",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (embedded, float32, CPU)",
        "rounds": rounds,
        "order": f"alternating: {OURS}, {THEIRS}, {OURS}, {THEIRS}, ... per cell",
        "cells": [cell.as_json() for cell in cells],
        OURS: {"peak_rss_mb": round(peak_rss[OURS], 1)},
        THEIRS: {"peak_rss_mb": round(peak_rss[THEIRS], 1)},
        "jwt_verify_us_per_request": jwt_verify_us,
        "server_vs_vllm_throughput": headline.throughput_ratio,
        "worst_cell": {"concurrency": worst.concurrency, "documents": worst.documents,
                       "throughput_ratio": worst.throughput_ratio,
                       "throughput_ratio_range": [min(worst.throughput_ratio_rounds),
                                                  max(worst.throughput_ratio_rounds)]},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
