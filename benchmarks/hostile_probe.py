"""The hostile probe's figures (issue 13), rerun: `python -m benchmarks.hostile_probe`.

`kuberank-server serve` (the embedded model, default limits, JWT on) runs as its own process
on loopback; the load generator runs here, on the same cores, as in the original probe.

- worst request: the probe's 1,000 documents of ~7 KB, and the largest request the default
  token budget admits (documents at the model's 256-token limit until the budget is full):
  status, wall time and CPU seconds of the server's process tree (API process + engine);
- overload: 200 closed-loop callers with 16 documents each for `OVERLOAD_SECONDS`, honouring
  Retry-After: answered-200 latency p50/p95/max, how many were refused and how fast;
- memory: RSS of the process tree at rest, after a few requests with a 2 MB document each,
  and again after a pause.

The last stdout line is one JSON object with all numbers.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.server_bench import engine_env, free_port, running, tree_rss_mb, wait_ready
from kuberank_contract import DEFAULT_MAX_REQUEST_TOKENS
from kuberank_server.auth.tokens import mint_token

SECRET = "hostile-probe-secret-0123456789abcdef0123"  # noqa: S105 - throwaway key
QUERY = "How to optimize database query performance?"
SENTENCES = (
    "Using indexes can speed up queries.",
    "Regularly cleaning unused data improves IO efficiency.",
    "Choosing the right data structure is key to algorithm design.",
    "Caching hot data effectively reduces database pressure.",
)
EMBEDDED_DOCUMENT_TOKENS = 256  # the embedded model's context: documents are cut to it
OVERLOAD_CALLERS = 200
OVERLOAD_SECONDS = 60
CLIENT_TIMEOUT_SECONDS = 120


def document(number: int, characters: int) -> str:
    text = f"[{number}] " + " ".join(SENTENCES)
    return (text + " ") * (characters // (len(text) + 1) + 1)


def tree_cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def timed_request(
    process: psutil.Process, url: str, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    cpu_before, started = tree_cpu_seconds(process), time.monotonic()
    response = httpx.post(f"{url}/v1/rerank", headers=headers, json=body,
                          timeout=CLIENT_TIMEOUT_SECONDS)  # fmt: skip
    return {
        "status": response.status_code,
        "wall_seconds": round(time.monotonic() - started, 2),
        "cpu_seconds": round(tree_cpu_seconds(process) - cpu_before, 2),
        "documents": len(body["documents"]),
        "body_mb": round(len(json.dumps(body)) / 2**20, 2),
        "prompt_tokens": response.json().get("usage", {}).get("prompt_tokens")
        if response.status_code == 200
        else None,
        "error": response.json().get("error", {}).get("message")
        if response.status_code != 200
        else None,
    }


def worst_requests(process: psutil.Process, url: str, headers: dict[str, str]) -> dict[str, Any]:
    probe = {"query": QUERY, "documents": [document(i, 7_000) for i in range(1000)],
             "return_documents": False}  # fmt: skip
    # Each document reaches the 256-token cut; the query takes a few tokens of the budget.
    fitting = DEFAULT_MAX_REQUEST_TOKENS // (EMBEDDED_DOCUMENT_TOKENS + 1) - 1
    largest = {"query": QUERY, "documents": [document(i, 2_000) for i in range(fitting)],
               "return_documents": False}  # fmt: skip
    return {
        "probe_1000_docs_7kb": timed_request(process, url, headers, probe),
        "largest_within_budget": timed_request(process, url, headers, largest),
    }


async def overload(url: str, headers: dict[str, str]) -> dict[str, Any]:
    ok_latencies: list[float] = []
    refused_latencies: list[float] = []
    retry_afters: list[int] = []
    others: dict[int, int] = {}
    stop_at = time.monotonic() + OVERLOAD_SECONDS
    limits = httpx.Limits(max_connections=OVERLOAD_CALLERS + 10)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=CLIENT_TIMEOUT_SECONDS) as client:  # fmt: skip

        async def caller(number: int) -> None:
            sent = 0
            while time.monotonic() < stop_at:
                sent += 1
                documents = [f"{SENTENCES[i % 4]} (caller {number}, request {sent}, doc {i})"
                             for i in range(16)]  # fmt: skip
                started = time.monotonic()
                body = {"query": QUERY, "documents": documents}
                response = await client.post("/v1/rerank", json=body)
                elapsed = time.monotonic() - started
                if response.status_code == 200:
                    ok_latencies.append(elapsed)
                elif response.status_code == 429:
                    refused_latencies.append(elapsed)
                    retry_after = int(response.headers["Retry-After"])
                    retry_afters.append(retry_after)
                    await asyncio.sleep(retry_after)
                else:
                    others[response.status_code] = others.get(response.status_code, 0) + 1

        await asyncio.gather(*(caller(number) for number in range(OVERLOAD_CALLERS)))

    def quantile(values: list[float], q: float) -> float | None:
        if len(values) < 2:
            return round(values[0], 2) if values else None
        return round(statistics.quantiles(values, n=100)[int(q * 100) - 1], 2)

    return {
        "callers": OVERLOAD_CALLERS,
        "seconds": OVERLOAD_SECONDS,
        "answered_200": len(ok_latencies),
        "latency_200_p50_s": quantile(ok_latencies, 0.5),
        "latency_200_p95_s": quantile(ok_latencies, 0.95),
        "latency_200_max_s": round(max(ok_latencies), 2) if ok_latencies else None,
        "refused_429": len(refused_latencies),
        "refusal_latency_p95_s": quantile(refused_latencies, 0.95),
        "retry_after_min_s": min(retry_afters) if retry_afters else None,
        "retry_after_max_s": max(retry_afters) if retry_afters else None,
        "other_statuses": others,
    }


def memory(process: psutil.Process, url: str, headers: dict[str, str]) -> dict[str, Any]:
    baseline = tree_rss_mb(process)
    api_baseline = process.memory_info().rss / 2**20
    for number in range(5):
        body = {"query": QUERY, "documents": [document(number, 2 * 2**20), *SENTENCES],
                "return_documents": False}  # fmt: skip
        httpx.post(f"{url}/v1/rerank", headers=headers, json=body, timeout=CLIENT_TIMEOUT_SECONDS)
    after = tree_rss_mb(process)
    api_after = process.memory_info().rss / 2**20
    time.sleep(10)
    return {
        "tree_rss_baseline_mb": round(baseline, 1),
        "tree_rss_after_5x2mb_mb": round(after, 1),
        "tree_rss_10s_later_mb": round(tree_rss_mb(process), 1),
        "api_process_rss_baseline_mb": round(api_baseline, 1),
        "api_process_rss_after_5x2mb_mb": round(api_after, 1),
        "api_process_rss_10s_later_mb": round(process.memory_info().rss / 2**20, 1),
    }


def main() -> int:
    port, workdir = free_port(), Path(tempfile.mkdtemp(prefix="hostile-probe-"))
    url = f"http://127.0.0.1:{port}"
    env = engine_env() | {"KUBERANK_JWT_SECRET": SECRET}
    command = [sys.executable, "-m", "kuberank_server.commands.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--metrics-port", "0", "--log-level", "warning"]  # fmt: skip
    headers = {"Authorization": "Bearer " + mint_token(
        key=SECRET, subject="hostile-probe", scopes=["rerank"], ttl_seconds=3600)}  # fmt: skip
    results: dict[str, Any] = {}
    with running(command, env, workdir / "server.log") as process:
        wait_ready(url, "/ready", process, workdir / "server.log")
        results["memory"] = memory(process, url, headers)
        print(json.dumps({"memory": results["memory"]}), flush=True)
        results["worst_request"] = worst_requests(process, url, headers)
        print(json.dumps({"worst_request": results["worst_request"]}), flush=True)
        results["overload"] = asyncio.run(overload(url, headers))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
