"""Operator benchmark on the real control plane: `python -m benchmarks.operator_bench`.

The control plane of scripts/control_plane (etcd, kube-apiserver, controller-manager, scheduler)
with kwok playing the kubelet of fake GPU nodes: the only stand-in, its pods turn Running and
Ready with no container. The operator runs as its own process (`python -m
kuberank_operator.cli`, what `kuberank-operator` runs), watching every namespace as the chart
runs it, logged in as its own user, so the API server's audit log counts its requests.

For 50 and then 500 RerankerServices, each on a fresh control plane:

- the burst: all created one after another (as `kubectl apply -f` of a folder does), timed
  until every one has its children (Deployment, Service, PodDisruptionBudget, ServiceMonitor:
  prometheus-operator's CRD is installed) and until every one's status is Ready (the real
  Deployment and ReplicaSet controllers, scheduler and kwok in the loop); the operator's own
  CPU seconds and its API requests per service meanwhile;
- steady state: once the operator is quiet, a minute with nothing changing (its requests per
  service), then a full reconcile of every service as its periodic resync runs one (a restart:
  the resume handler is the resync's own code), counted from the audit log. Requests per
  service per minute at steady state = the quiet minute's + one pass per resync interval.

Autoscaling is off in these services: the HPA controller would ask for metrics that no
adapter serves here, for each of 500 HPAs every 15 s. With 50, also the latency from a
RerankerService's creation until its children exist (one at a time). The last stdout line is
one JSON object with all numbers; the control planes' logs go to artifacts/bench-*.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from scripts.control_plane import build
from scripts.control_plane.cluster import ControlPlane, User
from scripts.upstream_crds import SERVICE_MONITOR
from tests.control_plane import OPERATOR_USER
from tests.operator.harness import (
    CRD_PATH,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    RERANKERS,
    SECRETS,
    SERVICE_MONITORS,
    SERVICES,
    jwt_secret,
    reranker,
)
from tests.operator.real_cluster import (
    RESTRICTED,
    WRITE_VERBS,
    AuditEntry,
    AuditLog,
    OperatorProcess,
)

from kuberank_operator.kube import Resource
from kuberank_operator.main import RESYNC_SECONDS

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
CHILDREN = (DEPLOYMENTS, SERVICES, DISRUPTION_BUDGETS, SERVICE_MONITORS)
SIZES = (50, 500)
PODS_PER_NODE = 100  # kwok nodes hold 110 pods
LATENCY_SAMPLES = 30
QUIET_SECONDS = 60.0
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
TIMEOUT_SECONDS = 900.0  # a guard against a hang; a loaded 2-core machine needs minutes for 500


def service(name: str) -> dict[str, Any]:
    return reranker(name, autoscaling={"enabled": False})


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wait(
    condition: Callable[[], Any], what: str, within: float = TIMEOUT_SECONDS, every: float = 0.2
) -> Any:
    deadline = time.monotonic() + within
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within} s")
        time.sleep(every)
    return result


@dataclass
class Bench:
    cp: ControlPlane
    http: httpx.Client
    operator: OperatorProcess
    audit: AuditLog

    @property
    def pid(self) -> int:
        assert self.operator.process is not None
        return self.operator.process.pid

    def names(self, resource: Resource) -> set[str]:
        # Names only: the API server sends each object's metadata, not 500 whole objects.
        response = self.http.get(resource.path(NAMESPACE), headers={"Accept": METADATA_ONLY})
        response.raise_for_status()
        return {item["metadata"]["name"] for item in response.json()["items"]}

    def ready(self) -> set[str]:
        response = self.http.get(RERANKERS.path(NAMESPACE))
        response.raise_for_status()
        return {
            item["metadata"]["name"]
            for item in response.json()["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (item.get("status") or {}).get("conditions", [])
            )
        }

    def create(self, name: str) -> None:
        self.http.post(RERANKERS.path(NAMESPACE), json=service(name)).raise_for_status()

    def operator_requests(self, since: int) -> list[AuditEntry]:
        """The operator's requests since `since`, each once (a watch is logged twice)."""
        unique = {entry.id: entry for entry in self.audit.operator_requests(since)}
        return list(unique.values())

    def quiet(self, for_seconds: float = 5.0) -> float:
        """Wait until the audit log has grown by nothing for `for_seconds` (only the operator
        and this bench are audited, and the bench asks nothing meanwhile); returns when
        (time.monotonic()) it last grew."""
        size, changed = -1, time.monotonic()
        deadline = changed + TIMEOUT_SECONDS
        while time.monotonic() - changed < for_seconds:
            if (now := self.audit.mark()) != size:
                size, changed = now, time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError("the operator never went quiet")
            time.sleep(0.2)
        return changed


@contextmanager
def control_plane(size: int) -> Iterator[Bench]:
    logs = ROOT / "artifacts" / f"bench-control-plane-{size}"
    operator_user = User(OPERATOR_USER, os.urandom(16).hex(), ("system:masters",))
    with (
        tempfile.TemporaryDirectory(prefix="kuberank-bench-") as workdir,
        ControlPlane.start(Path(workdir), logs, extra_users=[operator_user]) as cp,
        cp.client(timeout=60) as http,
    ):
        for index in range(math.ceil((size + LATENCY_SAMPLES + 1) / PODS_PER_NODE)):
            cp.add_node(f"gpu-node-{index}", gpus=PODS_PER_NODE, cpu="512", memory="2Ti")
        for crd in (SERVICE_MONITOR.copy, CRD_PATH):
            cp.kubectl("apply", "--server-side", "-f", str(crd))
        established = cp.kubectl(
            "wait", "--for=condition=Established", "--timeout=120s", "crd", "--all", check=False
        )
        if established.returncode:
            raise RuntimeError(f"CRDs not established: {established.stderr}")
        namespace = {"metadata": {"name": NAMESPACE, "labels": RESTRICTED}}
        http.post("/api/v1/namespaces", json=namespace).raise_for_status()
        wait(lambda: cp.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"), "SA")
        http.post(SECRETS.path(NAMESPACE), json=jwt_secret()).raise_for_status()
        operator = OperatorProcess(cp, "", logs / "operator.log", verbose=False)
        operator.start()
        try:
            bench = Bench(cp, http, operator, AuditLog(cp.audit_log))
            bench.create("warm-up")
            wait(lambda: "warm-up" in bench.ready(), "the warm-up service Ready")
            yield bench
        finally:
            operator.stop()


def burst(bench: Bench, size: int) -> dict[str, Any]:
    names = [f"burst-{index}" for index in range(size)]
    mark = bench.audit.mark()
    cpu_before = cpu_seconds(bench.pid)
    started = time.monotonic()
    for name in names:
        bench.create(name)
    created = time.monotonic() - started

    def children_done() -> bool:
        return all(set(names) <= bench.names(resource) for resource in CHILDREN)

    wait(children_done, f"children of {size}", every=1.0)
    children = time.monotonic() - started
    wait(lambda: set(names) <= bench.ready(), f"{size} Ready", every=1.0)
    ready = time.monotonic() - started
    cpu = cpu_seconds(bench.pid) - cpu_before
    bench.quiet()  # its last status writes (pods turning Ready) belong to the burst
    requests = bench.operator_requests(mark)
    by_verb = Counter(r.verb for r in requests)
    print(
        f"{size}: created in {created:.1f} s, children {children:.1f} s, Ready {ready:.1f} s,"
        f" operator CPU {cpu:.1f} s, {len(requests) / size:.1f} requests per service",
        flush=True,
    )
    return {
        "children_s": round(children, 1),
        "ready_s": round(ready, 1),
        "operator_cpu_s": round(cpu, 2),
        "requests_per_service": round(len(requests) / size, 2),
        "requests_per_service_by_verb": {v: round(n / size, 2) for v, n in sorted(by_verb.items())},
    }


def per_object(requests: list[AuditEntry]) -> list[AuditEntry]:
    """Requests about one object (get, patch...), not Kopf's lists and watches of a kind."""
    return [r for r in requests if r.verb not in ("list", "watch")]


def steady_state(bench: Bench, size: int) -> dict[str, Any]:
    services = size + 1  # the warm-up one too
    mark = bench.audit.mark()
    time.sleep(QUIET_SECONDS)
    quiet = bench.operator_requests(mark)
    # The periodic resync's cost: a full reconcile of every service, by a restart (resume runs
    # what the resync timer runs).
    bench.operator.stop()
    mark = bench.audit.mark()
    started = time.monotonic()
    bench.operator.start()
    # Healthy before it is busy: wait for a first read of each service, then until it is quiet.
    wait(lambda: len(per_object(bench.operator_requests(mark))) >= services, "a pass", every=1.0)
    last = bench.quiet()
    passed = bench.operator_requests(mark)
    writes = [r for r in passed if r.verb in WRITE_VERBS and r.code < 400]
    quiet_rate = len(quiet) / services / (QUIET_SECONDS / 60)
    pass_per_service = len(per_object(passed)) / services
    steady = quiet_rate + pass_per_service / (RESYNC_SECONDS / 60)
    print(
        f"{size}: quiet minute {len(quiet)} requests; a full reconcile pass"
        f" {pass_per_service:.1f} requests per service ({len(passed) - len(per_object(passed))}"
        f" lists and watches), {len(writes)} writes, {last - started:.1f} s",
        flush=True,
    )
    return {
        "quiet_minute_requests": len(quiet),  # for all services together
        "quiet_minute_by_request": dict(Counter(f"{r.verb} {r.resource}" for r in quiet)),
        "resync_pass_requests_per_service": round(pass_per_service, 2),
        "resync_pass_writes": len(writes),
        "resync_pass_s": round(last - started, 1),
        "resync_pass_per_service": {
            f"{verb} {resource or 'discovery'}": round(n / services, 2)
            for (verb, resource), n in sorted(
                Counter((r.verb, r.resource) for r in per_object(passed)).items()
            )
        },
        "steady_requests_per_service_per_min": round(steady, 2),
    }


def create_to_children_latency(bench: Bench) -> list[float]:
    latencies = []
    for index in range(LATENCY_SAMPLES):
        name = f"latency-{index}"
        started = time.perf_counter()
        bench.create(name)
        for resource in CHILDREN:
            while bench.http.get(resource.path(NAMESPACE, name)).status_code == 404:
                time.sleep(0.005)
        latencies.append(time.perf_counter() - started)
    return latencies


def main() -> dict[str, Any]:
    problem = build.missing()
    if problem is not None:
        sys.exit(f"the control plane is not built ({problem}): run `make control-plane`")
    version = build.versions()["kubernetes"]
    runs: dict[str, Any] = {}
    latencies: list[float] = []
    rss = 0.0
    for size in SIZES:
        with control_plane(size) as bench:
            runs[str(size)] = burst(bench, size) | steady_state(bench, size)
            if size == SIZES[0]:
                latencies = create_to_children_latency(bench)
                print(f"create->children p50 {statistics.median(latencies) * 1000:.0f} ms")
            rss = rss_mb(bench.pid)
    small, large = (runs[str(size)] for size in SIZES)
    return {
        "benchmark": "operator",
        "api_server": f"kube-apiserver {version}, kwok nodes",
        "create_to_children_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "create_to_children_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "runs": runs,
        "ready_500_over_50": round(large["ready_s"] / small["ready_s"], 2),
        "operator_cpu_500_over_50": round(large["operator_cpu_s"] / small["operator_cpu_s"], 2),
        "rss_mb_at_500": round(rss, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
