"""Operator benchmark against kmock's emulator: `python -m benchmarks.operator_bench`.

The operator runs as its own process (`python -m kuberank_operator.cli`, what the
`kuberank-operator` command runs), so its RSS is its own; the emulator runs here.

- create-to-children latency: 100 RerankerServices created one after another, each timed
  from its POST until its Deployment, Service, HPA, PDB and ServiceMonitor all exist;
- reconcile 50 and 500: that many created at once against a fresh operator, each given one
  pod as its Deployment appears (a stand-in for the ReplicaSet controller and the kubelet: the
  pod runs, not ready yet), timed until every one has all its children and a status that
  reports its pod (`Starting`): the pod watch is part of the work measured;
- the operator's RSS once 500 are reconciled;
- the operator process's own CPU time for each burst: wall time also holds the emulator's
  work (kmock, in this process, on the same two cores); CPU seconds are the operator's alone.

The last stdout line is one JSON object with all numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kmock
from tests.operator.harness import (
    AUTOSCALERS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    PODS,
    RERANKERS,
    SECRETS,
    SERVICE_MONITORS,
    SERVICES,
    EmulatedCluster,
    emulated_cluster,
    jwt_secret,
    reranker,
    server_pod,
    starting,
    write_kubeconfig,
)

from kuberank_operator.kube import Resource

CHILDREN = (DEPLOYMENTS, SERVICES, AUTOSCALERS, DISRUPTION_BUDGETS, SERVICE_MONITORS)
NAMESPACE = "bench"
LATENCY_SAMPLES = 100
TIMEOUT_SECONDS = 600.0  # a guard against a hang; a shared, loaded machine needs minutes for 500


def _stored(cluster: EmulatedCluster, resource: Resource, name: str) -> Any:
    """The emulator's stored object, None if absent: its raw store, since the public view
    type-checks every key (slow when polled)."""
    key = (kmock.resource(resource.group, resource.version, resource.plural), NAMESPACE, name)
    found = cluster.emulator.objects._objects.get(key)
    return None if found is None or found.deleted else found


def reconciled(
    cluster: EmulatedCluster, name: str, with_status: bool = False, ready_reason: str | None = None
) -> bool:
    if any(_stored(cluster, resource, name) is None for resource in CHILDREN):
        return False
    if not with_status:
        return True
    conditions = (_stored(cluster, RERANKERS, name).last.get("status") or {}).get("conditions")
    if not conditions:
        return False
    return ready_reason is None or any(
        c["type"] == "Ready" and c["reason"] == ready_reason for c in conditions
    )


async def make_pods(cluster: EmulatedCluster, names: list[str]) -> None:
    """Stand-in for the ReplicaSet controller and the kubelet: as each Deployment appears, one
    pod of it, running and not ready yet (a server loading its model)."""
    pending = list(names)
    while pending:
        waiting = []
        for name in pending:
            stored = _stored(cluster, DEPLOYMENTS, name)
            if stored is None:
                waiting.append(name)
                continue
            deployment = stored.last.raw
            image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            pod = server_pod(deployment, f"{name}-7c9d8f6b5-q2x4z")
            await cluster.create(PODS, NAMESPACE, pod | {"status": starting(image, since)})
        pending = waiting
        await asyncio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@asynccontextmanager
async def operator_process(cluster: EmulatedCluster, workdir: Path) -> AsyncIterator[int]:
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", cluster.url)
    env = os.environ | {"KUBECONFIG": str(kubeconfig), "KUBERANK_OPERATOR_LIVENESS_PORT": "0"}
    with (workdir / "operator.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kuberank_operator.cli", env=env, stdout=log, stderr=log
        )
    try:
        yield process.pid
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()


async def wait_all(
    cluster: EmulatedCluster, names: list[str], with_status: bool, ready_reason: str | None = None
) -> None:
    pending = set(names)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while pending:
        pending = {
            name for name in pending if not reconciled(cluster, name, with_status, ready_reason)
        }
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(pending)} of {len(names)} not reconciled in {TIMEOUT_SECONDS} s"
            )
        await asyncio.sleep(0.1)


@asynccontextmanager
async def fresh_cluster() -> AsyncIterator[tuple[EmulatedCluster, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        async with emulated_cluster(Path(tmp), record_requests=False) as cluster:
            await cluster.create(SECRETS, NAMESPACE, jwt_secret())
            async with operator_process(cluster, Path(tmp)) as pid:
                # Ready once it has created the children of a first resource.
                await cluster.create(RERANKERS, NAMESPACE, reranker("warm-up"))
                await wait_all(cluster, ["warm-up"], with_status=True)
                yield cluster, pid


async def create_to_children_latency() -> list[float]:
    latencies = []
    async with fresh_cluster() as (cluster, _):
        for index in range(LATENCY_SAMPLES):
            name = f"latency-{index}"
            started = time.perf_counter()
            await cluster.create(RERANKERS, NAMESPACE, reranker(name))
            # The emulator has no change notification to await: poll its store.
            while not reconciled(cluster, name):  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            latencies.append(time.perf_counter() - started)
    return latencies


async def reconcile_many(count: int) -> tuple[float, float, float]:
    """(seconds until all `count` have children and a status reporting their pod, the
    operator's CPU seconds spent on them, its RSS in MB then)."""
    async with fresh_cluster() as (cluster, pid):
        names = [f"burst-{index}" for index in range(count)]
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        pods = asyncio.create_task(make_pods(cluster, names))
        for name in names:  # as `kubectl apply -f` of a folder does: one after another
            await cluster.create(RERANKERS, NAMESPACE, reranker(name))
        await wait_all(cluster, names, with_status=True, ready_reason="Starting")
        await pods
        return time.perf_counter() - started, cpu_seconds(pid) - cpu_before, rss_mb(pid)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main() -> dict[str, Any]:
    latencies = await create_to_children_latency()
    print(
        f"create->children over {len(latencies)}: p50 {statistics.median(latencies) * 1000:.0f} ms",
        flush=True,
    )
    seconds_50, cpu_50, _ = await reconcile_many(50)
    print(f"reconcile 50: {seconds_50:.2f} s (operator CPU {cpu_50:.2f} s)", flush=True)
    seconds_500, cpu_500, rss_500 = await reconcile_many(500)
    print(
        f"reconcile 500: {seconds_500:.2f} s (operator CPU {cpu_500:.2f} s), "
        f"operator RSS {rss_500:.0f} MB",
        flush=True,
    )
    return {
        "benchmark": "operator",
        "create_to_children_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "create_to_children_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "reconcile_50_s": round(seconds_50, 2),
        "reconcile_500_s": round(seconds_500, 2),
        "reconcile_500_over_50": round(seconds_500 / seconds_50, 2),
        "operator_cpu_50_s": round(cpu_50, 2),
        "operator_cpu_500_s": round(cpu_500, 2),
        "operator_cpu_500_over_50": round(cpu_500 / cpu_50, 2),
        "rss_mb_at_500": round(rss_500, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
