"""Autoscaling under real traffic on the real control plane, per driver, connection recycling
on and off: `python -m benchmarks.autoscale_bench`.

What is real: the control plane of scripts/control_plane (kube-apiserver; the Deployment,
ReplicaSet, EndpointSlice and HPA controllers of kube-controller-manager at their default
settings, the HPA's 15 s sync included; kube-scheduler), the operator (`kuberank_operator.cli`,
driver hpa or keda) writing the Deployment, Service, ServiceMonitor, HPA and model cache claim
(bound by the real binder to a hostPath volume the bench makes: the compile cache) of a CPU
RerankerService, Prometheus scraping the pods as the operator's ServiceMonitor asks,
prometheus-adapter v0.12.0 built from its Go module with the monitoring chart's rules serving
custom.metrics.k8s.io, and `kuberank-server` processes (the embedded MiniLM, one core each) run
from the Deployment's own pod template, its env and probes. Callers are closed loops with
keep-alive pools (httpx, as internal services call).

STAND-INS, each named in the code:
- benchmarks.cluster_standins.KubeletStandIn: the node's kubelet and container runtime (and the
  pod network: loopback ports);
- benchmarks.cluster_standins.KubeProxyStandIn: the Service, per connection, over its
  EndpointSlices;
- benchmarks.cluster_standins.PrometheusOperatorStandIn: prometheus-operator and Prometheus'
  Kubernetes discovery, turning the operator's ServiceMonitor into the scrape job and the
  targets (from the EndpointSlices) it would give Prometheus.
Driver keda: the operator writes a ScaledObject instead, and KEDA's operator and metrics server
(built from KEDA's Go module, scripts/control_plane/autoscaling_stack.start_keda) turn it into
the HPA the same HPA controller runs, its metrics KEDA's Prometheus triggers.
`--drivers` and `--modes` run a part of the grid (both drivers, both modes by default).

The RerankerService: target 4 requests in progress per pod (16 by default; one CPU pod
saturates early), maxReplicas 2 (the node has two cores), a 20 s scale-down window (300 s by
default), a 5 s scrape interval (15 s by default), connections recycled after 10 s in mode
recycling_on (60 s by default). prometheus-adapter relists its series every minute, its chart's
default.

Per mode, a step load: LOW_CALLERS closed-loop callers once the HPA reads its metric
(ScalingActive), then HIGH_CALLERS (above one pod's target) until the new pod has served
SHARE_WINDOW_SECONDS, then LOW_CALLERS again until the HPA has removed it. Reported per mode:
- desired_replicas_seconds: load step to the Deployment's replicas set to 2 by the HPA;
- first_answer_seconds: load step to the new pod's first answer through the Service;
- new_replica_share: the new pod's share of the API requests answered in the
  SHARE_WINDOW_SECONDS after it turned ready (each pod's own kuberank_requests_total);
- scale_in_seconds: load back down to the Deployment's replicas set to 1;
- replicas_over_time: [seconds since the load began, spec.replicas, readyReplicas];
- failed_requests: answers other than 200 and transport errors, across the whole mode.
The last stdout line is one JSON object: those keys by driver and mode, plus details.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families
from scripts.control_plane import autoscaling_stack
from scripts.control_plane.cluster import ControlPlane, User, node_ready
from scripts.upstream_crds import SERVICE_MONITOR
from tests.charts.adapter_stand_in import shipped_adapter_rules
from tests.control_plane import OPERATOR_USER
from tests.operator.harness import (
    AUTOSCALERS,
    CRD_PATH,
    DEPLOYMENTS,
    RERANKERS,
    SERVICE_MONITORS,
)
from tests.operator.real_cluster import OperatorProcess

import kuberank_operator
from benchmarks.cluster_standins import (
    KubeletStandIn,
    KubeProxyStandIn,
    PrometheusOperatorStandIn,
)
from benchmarks.server_bench import SENTENCES
from kuberank_contract import METRICS_PORT

LOG_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "autoscale_bench"
CPU_SAMPLE = Path(kuberank_operator.__file__).parent / "samples" / "cpu.yaml"
NAMESPACE = "bench"
NODE = "cpu-node-1"
RERANK_ROUTE = "/v1/rerank"

# The RerankerService (see the module docstring).
TARGET_CONCURRENCY = 4
MIN_REPLICAS, MAX_REPLICAS = 1, 2
SCALE_DOWN_STABILIZATION_SECONDS = 20
SCRAPE_INTERVAL = "5s"
ADAPTER_RELIST_INTERVAL = "1m"  # the prometheus-adapter chart's metricsRelistInterval
DRAIN_TIMEOUT_SECONDS = 20
# spec.model.cache: a claim the real binder binds to a hostPath volume the bench makes per mode.
CACHE_SIZE = "1Gi"
CACHE_STORAGE_CLASS = "bench-hostpath"
MODES = {
    # spec.traffic: (maxRequestsPerConnection, maxConnectionAgeSeconds); 0 turns one off.
    "recycling_on": (1000, 10),
    "recycling_off": (0, 0),
}
DRIVERS = ("hpa", "keda")

# The load.
LOW_CALLERS, HIGH_CALLERS = 2, 12
CALLING_SERVICES = 3  # callers share this many httpx clients (connection pools)
DOCUMENTS_PER_REQUEST = 8
LOW_SECONDS = 15.0
SHARE_WINDOW_SECONDS = 30.0
READY_TIMEOUT_SECONDS = 600.0  # a start took 105 s compiling, 65 s from the cache; more if busy
SCALE_IN_TIMEOUT_SECONDS = 300.0
REQUEST_TIMEOUT_SECONDS = 60.0


def log(message: str) -> None:
    print(f"[autoscale_bench] {message}", flush=True)


def cpu_sample_model() -> dict[str, Any]:
    """spec.model of the CPU sample RerankerService: the server image's embedded MiniLM."""
    sample = yaml.safe_load(CPU_SAMPLE.read_text())
    return dict(sample["spec"]["model"])


def reranker_service(name: str, driver: str, mode: str) -> dict[str, Any]:
    max_requests, max_age = MODES[mode]
    return {
        "apiVersion": "kuberank.io/v1alpha1",
        "kind": "RerankerService",
        "metadata": {"name": name},
        "spec": {
            "model": {
                **cpu_sample_model(),
                # The compile cache on it: a new pod loads what the first compiled.
                "cache": {"size": CACHE_SIZE, "storageClassName": CACHE_STORAGE_CLASS},
            },
            "resources": {"gpu": 0, "cpu": "1", "memory": "4Gi"},
            "auth": {"mode": "disabled"},
            "autoscaling": {
                "driver": driver,
                "minReplicas": MIN_REPLICAS,
                "maxReplicas": MAX_REPLICAS,
                "targetConcurrency": TARGET_CONCURRENCY,
                "scaleDownStabilizationSeconds": SCALE_DOWN_STABILIZATION_SECONDS,
            },
            "traffic": {
                "maxRequestsPerConnection": max_requests,
                "maxConnectionAgeSeconds": max_age,
            },
            "monitoring": {"interval": SCRAPE_INTERVAL},
        },
    }


@dataclass
class Bench:
    cp: ControlPlane
    api: httpx.AsyncClient
    kubelet: KubeletStandIn
    workdir: Path  # the control plane's, Prometheus' and the volumes' files
    log_dir: Path
    # The stand-ins and watchers running beside the steps: a failure in one ends the run.
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        return task

    async def stop(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    @property
    def prometheus_dir(self) -> Path:
        return self.workdir / "prometheus"

    async def get(self, path: str) -> dict[str, Any] | None:
        response = await self.api.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    async def wait(self, condition: Callable[[], Any], what: str, within: float) -> Any:
        """Until `condition()` (or what it returns, when awaitable) is true; returns it."""
        deadline = time.monotonic() + within
        while True:
            for task in self.background:
                if task.done():
                    task.result()  # raises what ended it
                    raise RuntimeError(f"{task.get_coro()} ended")
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {within} s; logs in {self.log_dir}")
            await asyncio.sleep(0.5)


@contextlib.contextmanager
def control_plane(workdir: Path, log_dir: Path) -> Iterator[ControlPlane]:
    operator_user = User(OPERATOR_USER, os.urandom(16).hex(), ("system:masters",))
    with ControlPlane.start(workdir, log_dir / "control-plane", [operator_user]) as cp:
        for crd in (SERVICE_MONITOR.copy, CRD_PATH):
            cp.kubectl("apply", "--server-side", "-f", str(crd))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=120s", "crd", "--all")
        with cp.client() as http:
            http.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        yield cp


async def answered_requests(client: httpx.AsyncClient, url: str) -> float:
    """A pod's API requests answered so far (its own kuberank_requests_total)."""
    response = await client.get(f"{url}/metrics")
    response.raise_for_status()
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "kuberank_requests_total" and sample.labels.get("route") == RERANK_ROUTE
    )


@dataclass
class Load:
    """Closed-loop callers (each sends its next request once the last is answered) sharing
    CALLING_SERVICES keep-alive connection pools through the Service."""

    base_url: str
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    target_callers: int = 0
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    answered: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        per_pool = -(-HIGH_CALLERS // CALLING_SERVICES)
        self.clients = [
            httpx.AsyncClient(
                base_url=self.base_url,
                timeout=REQUEST_TIMEOUT_SECONDS,
                limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
            )
            for _ in range(CALLING_SERVICES)
        ]

    def set_callers(self, count: int) -> None:
        """Callers numbered `count` and up stop after their current request."""
        self.target_callers = count
        for number in range(count):
            if number not in self.tasks or self.tasks[number].done():
                self.tasks[number] = asyncio.create_task(self._caller(number))

    async def _caller(self, number: int) -> None:
        client = self.clients[number % CALLING_SERVICES]
        sent = 0
        while number < self.target_callers:
            sent += 1
            documents = [
                f"{SENTENCES[(number + sent + i) % len(SENTENCES)]} ({number}.{sent}.{i})"
                for i in range(DOCUMENTS_PER_REQUEST)
            ]
            body = {
                "query": f"How do I make queries fast? ({number}.{sent})",
                "documents": documents,
            }
            try:
                response = await client.post(RERANK_ROUTE, json=body)
            except httpx.HTTPError as error:
                self.failures[type(error).__name__] += 1
                await asyncio.sleep(0.1)  # no hot loop while nothing answers
                continue
            if response.status_code == 200:
                self.answered += 1
            else:
                self.failures[f"HTTP {response.status_code}"] += 1

    async def stop(self) -> None:
        self.target_callers = 0
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for client in self.clients:
            await client.aclose()


@dataclass
class ReplicaWatch:
    """The Deployment's spec.replicas (what the HPA set) and readyReplicas, every half second."""

    bench: Bench
    name: str
    started: float = field(default_factory=time.monotonic)
    changes: list[list[float]] = field(default_factory=list)
    replicas: int = 0
    set_at: dict[int, float] = field(default_factory=dict)  # replicas -> when last set to it

    async def run(self) -> None:
        while True:
            deployment = await self.bench.get(DEPLOYMENTS.path(NAMESPACE, self.name))
            if deployment is not None:
                replicas = int(deployment["spec"].get("replicas", 0))
                ready = int((deployment.get("status") or {}).get("readyReplicas", 0))
                if replicas != self.replicas:
                    self.set_at[replicas] = time.monotonic()
                    self.replicas = replicas
                if not self.changes or self.changes[-1][1:] != [replicas, ready]:
                    at = round(time.monotonic() - self.started, 1)
                    self.changes.append([at, replicas, ready])
            await asyncio.sleep(0.5)


async def hpa_reads_its_metric(bench: Bench, name: str) -> bool:
    hpa = await bench.get(AUTOSCALERS.path(NAMESPACE, name))
    conditions = ((hpa or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "ScalingActive" and c["status"] == "True" for c in conditions)


async def run_mode(bench: Bench, driver: str, mode: str) -> dict[str, Any]:
    name = f"{driver}-{mode.replace('_', '-')}"
    kubelet = bench.kubelet
    log(f"{mode}: RerankerService {name} (traffic {MODES[mode]})")
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": CACHE_SIZE},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": CACHE_STORAGE_CLASS,
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(bench.workdir / "volumes" / name)},
        },
    }
    (await bench.api.post("/api/v1/persistentvolumes", json=volume)).raise_for_status()
    created = await bench.api.post(
        RERANKERS.path(NAMESPACE), json=reranker_service(name, driver, mode)
    )
    created.raise_for_status()
    monitor = await bench.wait(
        lambda: bench.get(SERVICE_MONITORS.path(NAMESPACE, name)), "the ServiceMonitor", 60
    )
    discovery = PrometheusOperatorStandIn(bench.cp, monitor, kubelet, bench.prometheus_dir)
    autoscaling_stack.reload_prometheus(
        bench.cp, bench.prometheus_dir, prometheus_config([discovery.job()])
    )
    proxy = KubeProxyStandIn(bench.cp, NAMESPACE, name, kubelet)
    watch = ReplicaWatch(bench, name)
    tasks = [bench.start(proxy.run()), bench.start(discovery.run())]
    load: Load | None = None
    max_requests, max_age = MODES[mode]
    result: dict[str, Any] = {
        "traffic": {"maxRequestsPerConnection": max_requests, "maxConnectionAgeSeconds": max_age}
    }
    try:
        await bench.wait(lambda: kubelet.ready_pods() == 1, "the first pod", READY_TIMEOUT_SECONDS)
        (first,) = kubelet.pods
        await bench.wait(lambda: proxy.endpoints, "the first endpoint", 60)
        load = Load(f"http://127.0.0.1:{proxy.port}")
        await bench.wait(lambda: hpa_reads_its_metric(bench, name), "the HPA's metric", 180)
        watch.started = time.monotonic()  # the timeline starts with the load
        tasks.append(bench.start(watch.run()))
        load.set_callers(LOW_CALLERS)
        await asyncio.sleep(LOW_SECONDS)
        log(f"{mode}: load step {LOW_CALLERS} -> {HIGH_CALLERS} callers")
        step_at = time.monotonic()
        load.set_callers(HIGH_CALLERS)
        await bench.wait(lambda: watch.replicas == MAX_REPLICAS, "the HPA's scale-out", 180)
        result["desired_replicas_seconds"] = round(watch.set_at[MAX_REPLICAS] - step_at, 1)
        hpa = await bench.get(AUTOSCALERS.path(NAMESPACE, name))
        result["hpa_metrics_at_scale_out"] = (hpa or {}).get("status", {}).get("currentMetrics")
        await bench.wait(lambda: kubelet.ready_pods() == 2, "the new pod", READY_TIMEOUT_SECONDS)
        (new,) = [pod for pod in kubelet.pods.values() if pod.name != first]
        assert new.ready_at is not None
        result["new_pod_ready_seconds"] = round(new.ready_at - step_at, 1)
        urls = [kubelet.pods[first].url(METRICS_PORT), new.url(METRICS_PORT)]
        async with httpx.AsyncClient(timeout=5) as client:
            before = [await answered_requests(client, url) for url in urls]
            await asyncio.sleep(SHARE_WINDOW_SECONDS)
            after = [await answered_requests(client, url) for url in urls]
        served = [a - b for a, b in zip(after, before, strict=True)]
        result["new_replica_share"] = round(served[1] / max(sum(served), 1.0), 3)
        result["requests_in_window"] = {"first_pod": served[0], "new_pod": served[1]}
        answer = proxy.first_answer.get(new.name)
        result["first_answer_seconds"] = None if answer is None else round(answer - step_at, 1)
        log(f"{mode}: load step {HIGH_CALLERS} -> {LOW_CALLERS} callers")
        low_at = time.monotonic()
        load.set_callers(LOW_CALLERS)
        await bench.wait(
            lambda: watch.replicas == MIN_REPLICAS, "the HPA's scale-in", SCALE_IN_TIMEOUT_SECONDS
        )
        result["scale_in_seconds"] = round(watch.set_at[MIN_REPLICAS] - low_at, 1)
        await bench.wait(lambda: len(kubelet.pods) == 1, "the removed pod gone", 120)
    finally:
        if load is not None:
            await load.stop()
        for task in tasks:
            await bench.stop(task)
        await bench.api.delete(RERANKERS.path(NAMESPACE, name))
        await bench.wait(lambda: not kubelet.pods, f"{name}'s pods gone", 120)
    assert load is not None  # the try block ran to its end
    result |= {
        "replicas_over_time": watch.changes,
        "failed_requests": sum(load.failures.values()),
        "failures_by_kind": dict(load.failures),
        "answered_requests": load.answered,
        "connections_per_pod": dict(proxy.connections),
        # Process start to Ready, per pod in start order (each compiles: emptyDir caches).
        "pod_start_seconds": kubelet.start_seconds(name),
    }
    return result


def prometheus_config(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"global": {"scrape_interval": SCRAPE_INTERVAL}, "scrape_configs": jobs}


async def _ready_node(bench: Bench, path: str) -> bool:
    return node_ready(await bench.get(path))


async def main_async(drivers: list[str], modes: list[str]) -> dict[str, Any]:
    # SIGTERM or SIGINT (ignored by default in a background job) cancel the run, and the
    # clean-up stops the server processes and the control plane before the bench exits.
    main_task = asyncio.current_task()
    assert main_task is not None
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stop_signal, main_task.cancel)
    log_dir = LOG_DIR / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True)
    log(f"logs in {log_dir}")
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="kuberank-autoscale-") as workdir,
        control_plane(Path(workdir), log_dir) as cp,
    ):
        async with cp.async_client(timeout=30) as api:
            kubelet = KubeletStandIn(cp, NODE, NAMESPACE, log_dir / "pods")
            bench = Bench(cp, api, kubelet, Path(workdir), log_dir)
            kubelet_task = bench.start(kubelet.run())
            operator = OperatorProcess(
                cp,
                NAMESPACE,
                log_dir / "operator.log",
                env={
                    "KUBERANK_OPERATOR_DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT_SECONDS),
                },
            )
            try:
                node = f"/api/v1/nodes/{NODE}"
                await bench.wait(lambda: _ready_node(bench, node), f"node {NODE}", 60)
                url = await asyncio.to_thread(
                    autoscaling_stack.start_prometheus,
                    cp,
                    bench.prometheus_dir,
                    prometheus_config([]),
                )
                await asyncio.to_thread(
                    autoscaling_stack.start_prometheus_adapter,
                    cp,
                    bench.workdir / "prometheus-adapter",
                    url,
                    shipped_adapter_rules(),
                    ADAPTER_RELIST_INTERVAL,
                )
                if "keda" in drivers:
                    keda = bench.workdir / "keda"
                    await asyncio.to_thread(autoscaling_stack.start_keda, cp, keda)
                # Each service names its driver; KEDA's triggers query this Prometheus.
                operator.env["KUBERANK_OPERATOR_KEDA_PROMETHEUS_URL"] = url
                await asyncio.to_thread(operator.start)
                for driver in drivers:
                    for mode in modes:
                        result = await run_mode(bench, driver, mode)
                        results.setdefault(driver, {})[mode] = result
                        log(f"{driver} {mode}: {json.dumps(result)}")
            finally:
                operator.stop()
                await bench.stop(kubelet_task)
    summary: dict[str, Any] = {
        key: {
            driver: {mode: result.get(key) for mode, result in by_mode.items()}
            for driver, by_mode in results.items()
        }
        for key in (
            "desired_replicas_seconds",
            "first_answer_seconds",
            "new_replica_share",
            "failed_requests",
            "scale_in_seconds",
            "replicas_over_time",
        )
    }
    summary["settings"] = {
        "target_concurrency": TARGET_CONCURRENCY,
        "max_replicas": MAX_REPLICAS,
        "scale_down_stabilization_seconds": SCALE_DOWN_STABILIZATION_SECONDS,
        "scrape_interval": SCRAPE_INTERVAL,
        "adapter_relist_interval": ADAPTER_RELIST_INTERVAL,
        "callers": [LOW_CALLERS, HIGH_CALLERS, LOW_CALLERS],
        "share_window_seconds": SHARE_WINDOW_SECONDS,
    }
    # Other work on the machine slows engine starts: say how busy it was.
    summary["load_average_1m_at_end"] = round(os.getloadavg()[0], 1)
    summary["details"] = results
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", nargs="+", choices=DRIVERS, default=list(DRIVERS))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = parser.parse_args()
    started = time.monotonic()
    summary = asyncio.run(main_async(args.drivers, args.modes))
    summary["bench_seconds"] = round(time.monotonic() - started)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
