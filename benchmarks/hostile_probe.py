"""The hostile probes' figures (issues 13 and 19), rerun: `python -m benchmarks.hostile_probe`.

`kuberank-server serve` (the embedded model, default limits, JWT on) runs as its own process
on loopback; the load generator runs here, on the same cores, as in the original probe.

- worst request: the probe's 1,000 documents of ~7 KB, and the largest request the default
  token budget admits (documents at the model's 256-token limit until the budget is full):
  status, wall time and CPU seconds of the server's process tree (API process + engine);
- overload: 200 closed-loop callers with 16 documents each for `OVERLOAD_SECONDS`, honouring
  Retry-After: answered-200 latency p50/p95/max, how many were refused and how fast;
- memory: RSS of the process tree at rest, after a few requests with a 2 MB document each,
  and again after a pause.

Round two (issue 19), each figure also for a baseline source tree (`--baseline DIR`, e.g.
`git archive <commit> server contract | tar -x -C DIR`), side by side:

- drain: 20 accepted requests of 64 documents each, then SIGTERM: statuses, and how many
  were 500s (goal 0; a 503 in the envelope with Retry-After is the right answer for what the
  drain cannot finish);
- abandoned: 3 of the largest requests the token budget admits, the client gone after 3 s:
  CPU seconds the server's process tree spends after that (goal < 3 s);
- retries: 150 closed-loop callers with 16 documents for 45 s, honouring Retry-After: share
  of retries made after waiting it out that are served (goal >= 0.8), p95 of the 200s;
- flood: one client address holding 1,030 connections that re-send `GET /health` every 3 s
  for 32 s, while another sends 10 real requests: how many of those are served (goal all).

The last stdout line is one JSON object with all numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.server_bench import (
    Server,
    engine_env,
    free_port,
    running,
    tree_rss_mb,
    wait_ready,
)
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
                body = caller_body(number, sent)
                started = time.monotonic()
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


# --- round two (issue 19) -------------------------------------------------------------------
DRAIN_REQUESTS, DRAIN_DOCUMENTS = 20, 64
ABANDONED_REQUESTS, ABANDON_AFTER_SECONDS = 3, 3.0
RETRY_CALLERS, RETRY_SECONDS = 150, 45
FLOOD_CONNECTIONS, FLOOD_SECONDS, FLOOD_RESEND_SECONDS, FLOOD_REAL_REQUESTS = 1030, 32, 3.0, 10


def probe_server(name: str, tree: Path | None) -> Server:
    """`kuberank-server serve` from this checkout, or from the source tree `tree`, on a free
    port (its log: `<name>.log` in the directory `running` is given)."""
    env = engine_env() | {"KUBERANK_JWT_SECRET": SECRET}
    module = "kuberank_server.commands.cli"
    if tree is not None:
        env["PYTHONPATH"] = f"{tree / 'contract'}:{tree / 'server'}"
        if (tree / "server" / "kuberank_server" / "cli.py").exists():  # before the restructure
            module = "kuberank_server.cli"
    port = free_port()
    command = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "0", "--log-level", "warning"]  # fmt: skip
    return Server(name, command, env, f"http://127.0.0.1:{port}", "/ready", probe_headers())


def caller_body(number: int, sent: int) -> dict[str, Any]:
    """A load caller's request: 16 documents, distinct per caller and request."""
    documents = [f"{SENTENCES[i % 4]} (caller {number}, request {sent}, doc {i})"
                 for i in range(16)]  # fmt: skip
    return {"query": QUERY, "documents": documents}


def probe_headers() -> dict[str, str]:
    token = mint_token(key=SECRET, subject="hostile-probe", scopes=["rerank"], ttl_seconds=3600)
    return {"Authorization": f"Bearer {token}"}


async def drain(process: psutil.Process, url: str) -> dict[str, Any]:
    statuses: list[int] = []
    plain_text_500s = 0
    async with httpx.AsyncClient(base_url=url, headers=probe_headers(),
                                 timeout=CLIENT_TIMEOUT_SECONDS) as client:  # fmt: skip

        async def call(number: int) -> None:
            nonlocal plain_text_500s
            documents = [document(number * 100 + i, 2_000) for i in range(DRAIN_DOCUMENTS)]
            body = {"query": QUERY, "documents": documents, "return_documents": False}
            try:
                response = await client.post("/v1/rerank", json=body)
            except httpx.TransportError:
                statuses.append(0)
                return
            statuses.append(response.status_code)
            if response.status_code == 500 and "json" not in response.headers.get(
                "content-type", ""
            ):
                plain_text_500s += 1

        calls = [asyncio.create_task(call(number)) for number in range(DRAIN_REQUESTS)]
        await asyncio.sleep(2)  # all sent and admitted (or refused)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.gather(*calls)
    return {
        "requests": DRAIN_REQUESTS,
        "statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
        "answered_500": statuses.count(500),
        "plain_text_500": plain_text_500s,
        "answered_503": statuses.count(503),
        "last_answer_after_sigterm_s": round(time.monotonic() - signalled, 1),
    }


def abandoned(process: psutil.Process, url: str) -> dict[str, Any]:
    fitting = DEFAULT_MAX_REQUEST_TOKENS // (EMBEDDED_DOCUMENT_TOKENS + 1) - 1
    body = json.dumps({"query": QUERY, "documents": [document(i, 2_000) for i in range(fitting)],
                       "return_documents": False}).encode()  # fmt: skip
    head = (f"POST /v1/rerank HTTP/1.1\r\nHost: probe\r\nContent-Type: application/json\r\n"
            f"Authorization: {probe_headers()['Authorization']}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    sockets = []
    for _ in range(ABANDONED_REQUESTS):
        sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        sock.sendall(head + body)
        sockets.append(sock)
    time.sleep(ABANDON_AFTER_SECONDS)
    answered_before_close = []
    for sock in sockets:
        sock.setblocking(False)
        try:
            answered_before_close.append(sock.recv(12).decode(errors="replace"))
        except BlockingIOError:
            answered_before_close.append("")
        sock.close()
    closed_at_cpu, closed_at = tree_cpu_seconds(process), time.monotonic()
    # Until the tree is idle: under 0.05 CPU seconds in a second, twice in a row.
    quiet, last = 0, closed_at_cpu
    while quiet < 2 and time.monotonic() - closed_at < 180:
        time.sleep(1)
        now = tree_cpu_seconds(process)
        quiet = quiet + 1 if now - last < 0.05 else 0
        last = now
    return {
        "requests": ABANDONED_REQUESTS,
        "documents_each": fitting,
        "answers_before_the_close": answered_before_close,
        "cpu_seconds_after_close": round(last - closed_at_cpu, 2),
        "idle_after_s": round(time.monotonic() - closed_at, 1),
    }


async def retries(url: str) -> dict[str, Any]:
    ok_latencies: list[float] = []
    retried = retried_served = refused = timed_out = 0
    retry_afters: list[int] = []
    stop_at = time.monotonic() + RETRY_SECONDS
    limits = httpx.Limits(max_connections=RETRY_CALLERS + 10)
    async with httpx.AsyncClient(base_url=url, headers=probe_headers(), limits=limits,
                                 timeout=CLIENT_TIMEOUT_SECONDS) as client:  # fmt: skip

        async def caller(number: int) -> None:
            nonlocal retried, retried_served, refused, timed_out
            sent, retrying = 0, False
            while time.monotonic() < stop_at:
                sent += 1
                body = caller_body(number, sent)
                started = time.monotonic()
                try:
                    response = await client.post("/v1/rerank", json=body)
                except httpx.TransportError:  # past the client's timeout
                    timed_out += 1
                    continue
                retried += retrying
                if response.status_code == 200:
                    ok_latencies.append(time.monotonic() - started)
                    retried_served += retrying
                    retrying = False
                elif response.status_code == 429:
                    refused += 1
                    retrying = True
                    retry_afters.append(int(response.headers["Retry-After"]))
                    await asyncio.sleep(retry_afters[-1])

        await asyncio.gather(*(caller(number) for number in range(RETRY_CALLERS)))
    p95 = statistics.quantiles(ok_latencies, n=20)[-1] if len(ok_latencies) > 1 else None
    spread = None
    if retry_afters:
        spread = [min(retry_afters), statistics.median(retry_afters), max(retry_afters)]
    return {
        "callers": RETRY_CALLERS,
        "seconds": RETRY_SECONDS,
        "answered_200": len(ok_latencies),
        "refused_429": refused,
        "client_timeouts": timed_out,
        "retry_after_min_median_max_s": spread,
        "retries_after_waiting": retried,
        "retries_served": retried_served,
        "retry_success_share": round(retried_served / retried, 3) if retried else None,
        "latency_200_p50_s": round(statistics.median(ok_latencies), 2) if ok_latencies else None,
        "latency_200_p95_s": round(p95, 2) if p95 is not None else None,
    }


async def flood(url: str) -> dict[str, Any]:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    stop_at = time.monotonic() + FLOOD_SECONDS
    probe = b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n"

    async def hold() -> None:
        # One client address (127.0.0.2), each connection re-sending /health every 3 s.
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0))
        except OSError:
            return
        try:
            while time.monotonic() < stop_at:
                writer.write(probe)
                await writer.drain()
                await asyncio.sleep(FLOOD_RESEND_SECONDS)
                await reader.read(65536)
        except OSError:
            pass
        finally:
            writer.close()

    holders = [asyncio.create_task(hold()) for _ in range(FLOOD_CONNECTIONS)]
    await asyncio.sleep(3)  # every connection opened
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=url, headers=probe_headers(), timeout=30) as client:
        for _ in range(FLOOD_REAL_REQUESTS):
            try:
                body = {"query": QUERY, "documents": list(SENTENCES)}
                response = await client.post("/v1/rerank", json=body)
                statuses.append(response.status_code)
            except httpx.TransportError:
                statuses.append(0)
            await asyncio.sleep(2.5)
    await asyncio.gather(*holders)
    return {
        "flood_connections": FLOOD_CONNECTIONS,
        "real_requests": FLOOD_REAL_REQUESTS,
        "real_requests_served": statuses.count(200),
        "real_statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
    }


PHASES = ("drain", "abandoned", "retries", "flood")


def round_two(tree: Path | None, workdir: Path, phases: set[str]) -> dict[str, Any]:
    """The figures for one source tree: a server for the drain, another for the rest."""
    name = "baseline" if tree else "current"
    results: dict[str, Any] = {}

    def report(phase: str, figures: dict[str, Any]) -> None:
        results[phase] = figures
        print(json.dumps({name: {phase: figures}}), flush=True)

    if "drain" in phases:
        server = probe_server(f"{name}-drain", tree)
        with running(server, workdir) as process:
            wait_ready(server, process)
            report("drain", asyncio.run(drain(process, server.url)))
    if phases - {"drain"}:
        server = probe_server(name, tree)
        url = server.url
        with running(server, workdir) as process:
            wait_ready(server, process)
            if "abandoned" in phases:
                report("abandoned", abandoned(process, url))
            if "retries" in phases:
                report("retries", asyncio.run(retries(url)))
                time.sleep(5)
            if "flood" in phases:
                report("flood", asyncio.run(flood(url)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", default="one,two", help="which probes: one, two or both")
    parser.add_argument("--baseline", type=Path, help="source tree of the code to compare with")
    parser.add_argument("--phases", default=",".join(PHASES), help="round two's phases to run")
    parser.add_argument("--baseline-phases", help="round two's phases for the baseline "
                        "(default: --phases)")  # fmt: skip
    args = parser.parse_args()
    rounds = set(args.rounds.split(","))
    phases = set(args.phases.split(","))
    baseline_phases = set((args.baseline_phases or args.phases).split(","))
    workdir = Path(tempfile.mkdtemp(prefix="hostile-probe-"))
    results: dict[str, Any] = {}
    if "one" in rounds:
        results["round_one"] = round_one(workdir)
    if "two" in rounds:
        results["round_two"] = {"current": round_two(None, workdir, phases)}
        if args.baseline:
            results["round_two"]["baseline"] = round_two(args.baseline, workdir, baseline_phases)
    print(json.dumps(results))
    return 0


def round_one(workdir: Path) -> dict[str, Any]:
    server = probe_server("server", None)
    url, headers = server.url, server.headers
    results: dict[str, Any] = {}
    with running(server, workdir) as process:
        wait_ready(server, process)
        results["memory"] = memory(process, url, headers)
        print(json.dumps({"memory": results["memory"]}), flush=True)
        results["worst_request"] = worst_requests(process, url, headers)
        print(json.dumps({"worst_request": results["worst_request"]}), flush=True)
        results["overload"] = asyncio.run(overload(url, headers))
    return results


if __name__ == "__main__":
    raise SystemExit(main())
