"""Autoscaling under real traffic, connection recycling on and off:
`python -m benchmarks.autoscale_bench`.

What is real: kuberank server processes (`kuberank-server serve`, CPU, the embedded MiniLM,
auth disabled, settings passed as the operator's `KUBERANK_*` env), their own
`kuberank_requests_in_progress` and `kuberank_requests_total` read from their metrics ports,
SIGTERM drains, callers with keep-alive connection pools (httpx, as internal services call).
What stands in for the cluster, each named so below:
- `KubeProxyStandIn`: a TCP proxy on loopback that picks a ready backend at random for each
  new *connection*, as kube-proxy's iptables/IPVS rules do; it never looks at requests.
- `ReplicaSetStandIn`: starts a server process per replica, adds it to the proxy's endpoints
  once `/ready` answers 200 (kubelet's readiness probe and the endpoints controller), and
  removes one by taking it out of the endpoints, waiting the operator's preStop sleep, then
  SIGTERM (the drain), as a pod deletion does. Scale-down removes the newest pod first, as
  the ReplicaSet controller prefers.
- `benchmarks.hpa_standin.HorizontalPodAutoscaler`: the HPA's documented algorithm
  (desired = ceil(current x metric / target), 10 % tolerance, scale-down stabilization),
  fed every sync period with each pod's own gauge, scraped directly (where a cluster has
  Prometheus and prometheus-adapter in between; tests/charts proves that wire).

The clock is compressed to fit about ten minutes on a 2-core machine: HPA sync every 3 s
(15 s in Kubernetes), a 20 s scale-down window (the CR's default is 300 s), connections
recycled after 10 s (spec.traffic's default is 60 s) and a target of 4 requests in progress
per pod (16 by default; one CPU pod saturates early). maxReplicas is 2.

Per mode, a step load: LOW_CALLERS closed-loop callers, then HIGH_CALLERS (above one pod's
target), held until the new pod has served SHARE_WINDOW_SECONDS, then LOW_CALLERS again
through the scale-down. Reported per mode:
- new_replica_share: the new pod's share of the API requests answered in the
  SHARE_WINDOW_SECONDS after it turned ready (each pod's own kuberank_requests_total);
- scale_out_seconds: from the load step to the new pod in the proxy's endpoints;
- replicas_over_time: [seconds since the load started, replicas, ready replicas] at each
  change, and scale_downs_in_low_phase;
- failed_requests: answers other than 200 and transport errors, across the whole mode.
The last stdout line is one JSON object with those four keys, each by mode, plus details.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.support import free_port

from benchmarks.hpa_standin import HorizontalPodAutoscaler
from benchmarks.server_bench import SENTENCES
from kuberank_operator.autoscaling_metrics import REQUESTS_IN_PROGRESS
from kuberank_operator.builders.deployment import PRE_STOP_SLEEP_SECONDS

CONCURRENCY_METRIC = REQUESTS_IN_PROGRESS.name
LOG_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "autoscale_bench"
RERANK_ROUTE = "/v1/rerank"

# The compressed clock (see the module docstring).
TARGET_CONCURRENCY = 4
MIN_REPLICAS, MAX_REPLICAS = 1, 2
SYNC_SECONDS = 3.0
SCALE_DOWN_STABILIZATION_SECONDS = 20.0
MODES = {
    # spec.traffic: (maxRequestsPerConnection, maxConnectionAgeSeconds); 0 turns one off.
    "recycling_on": (1000, 10),
    "recycling_off": (0, 0),
}
DRAIN_TIMEOUT_SECONDS = 20

# The load.
LOW_CALLERS, HIGH_CALLERS = 2, 12
CALLING_SERVICES = 3  # callers share this many httpx clients (connection pools)
DOCUMENTS_PER_REQUEST = 8
LOW_SECONDS = 15.0
SHARE_WINDOW_SECONDS = 30.0
LOW_AFTER_SECONDS = 45.0
READY_TIMEOUT_SECONDS = 600.0  # engine start is ~35 s alone, minutes on a busy machine
REQUEST_TIMEOUT_SECONDS = 60.0


def log(message: str) -> None:
    print(f"[autoscale_bench] {message}", flush=True)


@dataclass
class Pod:
    name: str
    port: int
    metrics_port: int
    process: asyncio.subprocess.Process
    created_at: float
    ready_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def scrape(self, client: httpx.AsyncClient) -> dict[str, float] | None:
        """This pod's in-progress gauge and answered API requests; None when its metrics
        port does not answer (still starting)."""
        try:
            response = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        values = {"in_progress": 0.0, "answered": 0.0}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == CONCURRENCY_METRIC:
                    values["in_progress"] = sample.value
                elif (
                    sample.name == "kuberank_requests_total"
                    and sample.labels.get("route") == RERANK_ROUTE
                ):
                    values["answered"] += sample.value
        return values


class KubeProxyStandIn:
    """Stand-in for kube-proxy: each new client connection goes to a ready backend chosen at
    random, and stays there for its lifetime (kube-proxy balances connections, not requests)."""

    def __init__(self) -> None:
        self.endpoints: list[Pod] = []
        self.connections: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if not self.endpoints:  # no ready endpoint: the connection is refused
            client_w.close()
            return
        pod = random.choice(self.endpoints)  # noqa: S311 - load balancing, not security
        try:
            backend_r, backend_w = await asyncio.open_connection("127.0.0.1", pod.port)
        except OSError:
            client_w.close()
            return
        self.connections[pod.name] += 1
        await asyncio.gather(_pipe(client_r, backend_w), _pipe(backend_r, client_w))
        for writer in (client_w, backend_w):
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then half-close, so each side sees the other's close."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class ReplicaSetStandIn:
    """Stand-in for the Deployment's ReplicaSet, the kubelet's readiness probe and the
    endpoints controller: server processes as pods, ready ones in the proxy's endpoints."""

    def __init__(self, proxy: KubeProxyStandIn, env: dict[str, str], log_dir: Path) -> None:
        self.proxy = proxy
        self.env = env
        self.log_dir = log_dir
        self.pods: list[Pod] = []  # not being deleted: what the HPA counts
        self.every_pod: list[Pod] = []
        self.terminating: set[asyncio.Task[None]] = set()
        self.probes: set[asyncio.Task[None]] = set()
        self.turned_ready = asyncio.Queue[Pod]()

    async def add_pod(self) -> Pod:
        name = f"pod-{len(self.every_pod) + 1}"
        port, metrics_port = free_port(), free_port()
        # Each pod's engine threads on a core of its own, as a pod's CPU request gives it:
        # a new pod adds capacity instead of sharing the first one's core.
        core = len(self.every_pod) % (os.cpu_count() or 1)
        env = self.env | {"VLLM_CPU_OMP_THREADS_BIND": str(core)}
        log_file = (self.log_dir / f"{name}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kuberank_server.commands.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            env=env,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        log_file.close()
        pod = Pod(name, port, metrics_port, process, time.monotonic())
        self.pods.append(pod)
        self.every_pod.append(pod)
        probe = asyncio.create_task(self._probe_until_ready(pod))
        self.probes.add(probe)
        probe.add_done_callback(self.probes.discard)
        return pod

    async def _probe_until_ready(self, pod: Pod) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while pod in self.pods and pod.process.returncode is None:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{pod.url}/ready")).status_code == 200:
                        pod.ready_at = time.monotonic()
                        self.proxy.endpoints.append(pod)
                        log(f"{pod.name} ready after {pod.ready_at - pod.created_at:.1f} s")
                        self.turned_ready.put_nowait(pod)
                        return
                await asyncio.sleep(1)
        if pod.process.returncode is not None:
            log(f"{pod.name} exited before turning ready; see {self.log_dir}")

    def remove_newest(self) -> None:
        pod = self.pods.pop()
        task = asyncio.create_task(self._terminate(pod))
        self.terminating.add(task)
        task.add_done_callback(self.terminating.discard)

    async def _terminate(self, pod: Pod) -> None:
        """A pod deletion: out of the endpoints at once, preStop sleep, SIGTERM, drain."""
        if pod in self.proxy.endpoints:
            self.proxy.endpoints.remove(pod)
        await asyncio.sleep(PRE_STOP_SLEEP_SECONDS)
        if pod.process.returncode is None:
            pod.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(pod.process.wait(), DRAIN_TIMEOUT_SECONDS + 30)
        except TimeoutError:
            pod.process.kill()
            await pod.process.wait()
        log(f"{pod.name} stopped (exit {pod.process.returncode})")

    async def delete_all(self) -> None:
        while self.pods:
            self.remove_newest()
        await asyncio.gather(*self.terminating)


@dataclass
class Load:
    """Closed-loop callers (each sends its next request once the last is answered) sharing
    CALLING_SERVICES keep-alive connection pools through the proxy."""

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
class Timeline:
    started: float
    changes: list[list[float]] = field(default_factory=list)

    def record(self, replicas: int, ready: int) -> None:
        if not self.changes or self.changes[-1][1:] != [replicas, ready]:
            self.changes.append([round(time.monotonic() - self.started, 1), replicas, ready])


async def autoscale(
    replica_set: ReplicaSetStandIn,
    hpa: HorizontalPodAutoscaler,
    timeline: Timeline,
    scale_downs: list[float],
) -> None:
    """The HPA's sync loop: scrape each pod's gauge, compute, scale the ReplicaSet."""
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            pods = list(replica_set.pods)
            scraped = await asyncio.gather(*(pod.scrape(client) for pod in pods))
            values = {
                pod.name: (None if sample is None else sample["in_progress"])
                for pod, sample in zip(pods, scraped, strict=True)
            }
            now = time.monotonic()
            desired = hpa.desired_replicas(now, len(pods), {CONCURRENCY_METRIC: values})
            if desired != len(pods):
                log(f"HPA: {values} -> {desired} replicas")
            for _ in range(desired - len(pods)):
                await replica_set.add_pod()
            for _ in range(len(pods) - desired):
                replica_set.remove_newest()
                scale_downs.append(now)
            timeline.record(len(replica_set.pods), len(replica_set.proxy.endpoints))
            await asyncio.sleep(SYNC_SECONDS)


async def run_mode(mode: str, cache_dir: Path, log_dir: Path) -> dict[str, Any]:
    max_requests, max_age = MODES[mode]
    env = dict(os.environ) | {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "KUBERANK_AUTH_MODE": "disabled",
        "KUBERANK_MAX_REQUESTS_PER_CONNECTION": str(max_requests),
        "KUBERANK_MAX_CONNECTION_AGE_SECONDS": str(max_age),
        "KUBERANK_DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT_SECONDS),
        # One compile cache for every pod, as on the service's cache volume.
        "KUBERANK_COMPILE_CACHE_DIR": str(cache_dir),
    }
    proxy = KubeProxyStandIn()
    await proxy.start()
    mode_dir = log_dir / mode
    mode_dir.mkdir()
    replica_set = ReplicaSetStandIn(proxy, env, mode_dir)
    hpa = HorizontalPodAutoscaler(
        min_replicas=MIN_REPLICAS,
        max_replicas=MAX_REPLICAS,
        targets={CONCURRENCY_METRIC: TARGET_CONCURRENCY},
        scale_down_stabilization_seconds=SCALE_DOWN_STABILIZATION_SECONDS,
    )
    load = Load(f"http://127.0.0.1:{proxy.port}")
    scale_downs: list[float] = []
    result: dict[str, Any] = {
        "traffic": {"maxRequestsPerConnection": max_requests, "maxConnectionAgeSeconds": max_age}
    }
    controller: asyncio.Task[None] | None = None
    try:
        log(f"{mode}: starting the first pod (traffic {max_requests} requests / {max_age} s)")
        first = await replica_set.add_pod()
        try:
            await asyncio.wait_for(replica_set.turned_ready.get(), READY_TIMEOUT_SECONDS)
        except TimeoutError:
            raise RuntimeError(f"{first.name} not ready; see {mode_dir}") from None
        timeline = Timeline(time.monotonic())
        controller = asyncio.create_task(autoscale(replica_set, hpa, timeline, scale_downs))
        load.set_callers(LOW_CALLERS)
        await asyncio.sleep(LOW_SECONDS)
        log(f"{mode}: load step {LOW_CALLERS} -> {HIGH_CALLERS} callers")
        step_at = time.monotonic()
        load.set_callers(HIGH_CALLERS)
        try:
            new = await asyncio.wait_for(replica_set.turned_ready.get(), READY_TIMEOUT_SECONDS)
        except TimeoutError:
            result |= {"new_replica_share": None, "scale_out_seconds": None}
        else:
            assert new.ready_at is not None
            result["scale_out_seconds"] = round(new.ready_at - step_at, 1)
            async with httpx.AsyncClient(timeout=5) as client:
                before = [await pod.scrape(client) for pod in (first, new)]
                await asyncio.sleep(SHARE_WINDOW_SECONDS)
                after = [await pod.scrape(client) for pod in (first, new)]
            served = [
                (a or {}).get("answered", 0.0) - (b or {}).get("answered", 0.0)
                for b, a in zip(before, after, strict=True)
            ]
            result["new_replica_share"] = round(served[1] / max(sum(served), 1.0), 3)
            result["requests_in_window"] = {"first_pod": served[0], "new_pod": served[1]}
        log(f"{mode}: load step {HIGH_CALLERS} -> {LOW_CALLERS} callers")
        low_from = time.monotonic()
        load.set_callers(LOW_CALLERS)
        await asyncio.sleep(LOW_AFTER_SECONDS)
        result["scale_downs_in_low_phase"] = sum(1 for t in scale_downs if t >= low_from)
    finally:
        if controller is not None:
            controller.cancel()
        await load.stop()
        await replica_set.delete_all()
        await proxy.stop()
    result |= {
        "replicas_over_time": timeline.changes,
        "failed_requests": sum(load.failures.values()),
        "failures_by_kind": dict(load.failures),
        "answered_requests": load.answered,
        "connections_per_pod": dict(proxy.connections),
        # Engine start to ready, per pod in start order; the compile cache is shared.
        "pod_start_seconds": [
            round(pod.ready_at - pod.created_at, 1)
            for pod in replica_set.every_pod
            if pod.ready_at is not None
        ],
    }
    return result


async def main_async() -> dict[str, Any]:
    # SIGTERM or SIGINT (ignored by default in a background job) cancel the run, and each
    # mode's clean-up stops its server processes before the bench exits.
    main_task = asyncio.current_task()
    assert main_task is not None
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stop_signal, main_task.cancel)
    results: dict[str, Any] = {}
    log_dir = LOG_DIR / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True)
    log(f"server logs in {log_dir}")
    with tempfile.TemporaryDirectory(prefix="kuberank-compile-cache-") as cache_dir:
        for mode in MODES:
            results[mode] = await run_mode(mode, Path(cache_dir), log_dir)
            log(f"{mode}: {json.dumps(results[mode])}")
    summary: dict[str, Any] = {
        key: {mode: results[mode].get(key) for mode in MODES}
        for key in (
            "new_replica_share",
            "scale_out_seconds",
            "replicas_over_time",
            "failed_requests",
        )
    }
    summary["settings"] = {
        "target_concurrency": TARGET_CONCURRENCY,
        "max_replicas": MAX_REPLICAS,
        "hpa_sync_seconds": SYNC_SECONDS,
        "scale_down_stabilization_seconds": SCALE_DOWN_STABILIZATION_SECONDS,
        "callers": [LOW_CALLERS, HIGH_CALLERS, LOW_CALLERS],
        "share_window_seconds": SHARE_WINDOW_SECONDS,
    }
    # Other work on the machine slows engine starts, hence scale_out_seconds: say how busy.
    summary["load_average_1m_at_end"] = round(os.getloadavg()[0], 1)
    summary["details"] = results
    return summary


def main() -> None:
    started = time.monotonic()
    summary = asyncio.run(main_async())
    summary["bench_seconds"] = round(time.monotonic() - started)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
