"""STAND-INS for the node pieces the local control plane lacks (no container runtime, no
kube-proxy), so that pods the real scheduler binds run as real `kuberank-server` processes.

- `KubeletStandIn`: the kubelet of one node that kwok does not manage (not annotated for it).
  It registers the node and heartbeats its Ready condition; for each pod bound to the node it
  runs the container's command as a process with the container's env, reports the pod Running
  with an IP of its own, runs the startup and readiness probes at their periods and reports
  Ready; for a pod being deleted it runs the preStop sleep, sends SIGTERM, waits up to the
  grace period, then deletes the pod as the kubelet does. Its own rules, named here because a
  kubelet does them differently:
  - the pod network: a pod's IP (from POD_NETWORK) is not routable here. Each container port is
    served on a loopback port instead (the server is told by its --host/--port/--metrics-port
    flags), and `loopback(ip, port)` tells the other stand-ins which;
  - volumes: an emptyDir is a folder of the pod's own, a claim bound to a hostPath volume is that
    path (shared by the pods using it); env values under a mount path point into the folder
    (other volume kinds are refused);
  - the CPU manager: with the static policy a pod with whole CPUs gets those cores alone (a
    cpuset); here each pod's processes are bound to one core, in turn (CPU affinity, which
    vLLM's CPU worker follows);
  - no liveness probe and no restarts: a container that exits is reported and left.
- `KubeProxyStandIn`: a Service's virtual IP as a loopback TCP proxy. Each new connection goes to
  a ready endpoint of the Service's EndpointSlices (written by the real EndpointSlice
  controller), chosen at random, and stays there (kube-proxy balances connections, not
  requests).
- `PrometheusOperatorStandIn`: prometheus-operator and Prometheus' Kubernetes service discovery
  (Debian's Prometheus is built without it) for one ServiceMonitor: the scrape job
  prometheus-operator generates, with its targets (every endpoint of the selected Services'
  EndpointSlices on the ServiceMonitor's port, labelled namespace, service, pod, container and
  endpoint) written to a file_sd file that Prometheus watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from scripts.control_plane.cluster import ControlPlane, free_port

POD_NETWORK = ipaddress.ip_network("10.245.0.0/16")
SYNC_SECONDS = 0.5  # how often pods and EndpointSlices are listed (both components watch)
HEARTBEAT_SECONDS = 10.0  # the kubelet's node status update frequency
# Where the container's ports are told to the server (the image's entrypoint flags).
PORT_FLAGS = {"http": "--port", "metrics": "--metrics-port"}


def log(message: str) -> None:
    print(f"[stand-ins] {message}", flush=True)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: bool) -> dict[str, Any]:
    return {"type": kind, "status": str(status), "lastTransitionTime": _now()}


@dataclass
class RunningPod:
    name: str
    container: str  # its one container's name and image
    image: str
    ip: str
    loopback: dict[int, int]  # container port -> loopback port
    process: asyncio.subprocess.Process
    created_at: float
    ready_at: float | None = None
    terminating: bool = False
    exited_unexpectedly: bool = False

    def url(self, container_port: int) -> str:
        return f"http://127.0.0.1:{self.loopback[container_port]}"


@dataclass
class KubeletStandIn:
    cp: ControlPlane
    node: str
    namespace: str
    log_dir: Path
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory: str = "24Gi"
    pods: dict[str, RunningPod] = field(default_factory=dict)  # running, by pod name
    every_pod: list[RunningPod] = field(default_factory=list)  # in start order
    _addresses: Iterator[ipaddress.IPv4Address] = field(
        default_factory=lambda: POD_NETWORK.hosts()  # type: ignore[arg-type,return-value]
    )
    _started: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _errors: list[BaseException] = field(default_factory=list)  # of a pod's start or stop

    def ready_pods(self) -> int:
        return sum(1 for pod in self.pods.values() if pod.ready_at and not pod.terminating)

    def start_seconds(self, prefix: str) -> list[float]:
        """Process start to Ready of the pods named `prefix`..., in start order."""
        return [
            round(pod.ready_at - pod.created_at, 1)
            for pod in self.every_pod
            if pod.name.startswith(prefix) and pod.ready_at is not None
        ]

    def pod_at(self, ip: str) -> RunningPod | None:
        return next((pod for pod in self.pods.values() if pod.ip == ip), None)

    def loopback(self, ip: str, container_port: int) -> int | None:
        """The loopback port serving `ip`:`container_port` (the pod network stand-in)."""
        pod = self.pod_at(ip)
        return None if pod is None else pod.loopback.get(container_port)

    async def run(self) -> None:
        """Register the node, then heartbeat it and sync its pods until cancelled; a pod's
        processes are stopped when the task is."""
        async with self.cp.async_client(timeout=30) as api:
            await self._register(api)
            heartbeat = asyncio.create_task(self._heartbeat(api))
            try:
                while not self._errors:
                    await self._sync(api)
                    await asyncio.sleep(SYNC_SECONDS)
                raise self._errors[0]  # a pod it could not run or stop ends the stand-in
            finally:
                heartbeat.cancel()
                for task in self._tasks:
                    task.cancel()
                for pod in self.pods.values():
                    if pod.process.returncode is None:
                        pod.process.kill()
                        await pod.process.wait()

    async def _register(self, api: httpx.AsyncClient) -> None:
        capacity = {"cpu": str(self.cpus), "memory": self.memory, "pods": "110"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"},
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        (await api.post("/api/v1/nodes", json=node)).raise_for_status()
        await self._report_node(api)

    async def _report_node(self, api: httpx.AsyncClient) -> None:
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            }
        }
        response = await api.patch(
            f"/api/v1/nodes/{self.node}/status",
            json=status,
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        response.raise_for_status()

    async def _heartbeat(self, api: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await self._report_node(api)

    async def _sync(self, api: httpx.AsyncClient) -> None:
        response = await api.get(
            f"/api/v1/namespaces/{self.namespace}/pods",
            params={"fieldSelector": f"spec.nodeName={self.node}"},
        )
        response.raise_for_status()
        listed = {item["metadata"]["name"]: item for item in response.json()["items"]}
        for name, pod in listed.items():
            running = self.pods.get(name)
            if running is None and not pod["metadata"].get("deletionTimestamp"):
                self._spawn(self._start(api, pod))
            elif running is not None and pod["metadata"].get("deletionTimestamp"):
                if not running.terminating:
                    running.terminating = True
                    self._spawn(self._terminate(api, pod, running))
        for name, running in list(self.pods.items()):
            if name not in listed and not running.terminating:  # force-deleted: stop it
                running.terminating = True
                self._spawn(self._stop_process(running, grace=0))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._errors.append(error)

    # ---- a pod's life -------------------------------------------------------------------
    async def _volume_folder(
        self, api: httpx.AsyncClient, volume: dict[str, Any], pod_folder: Path
    ) -> Path:
        if "emptyDir" in volume:
            return pod_folder / volume["name"]
        if "persistentVolumeClaim" in volume:
            claim_name = volume["persistentVolumeClaim"]["claimName"]
            claim = await api.get(
                f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim_name}"
            )
            claim.raise_for_status()
            bound = await api.get(f"/api/v1/persistentvolumes/{claim.json()['spec']['volumeName']}")
            bound.raise_for_status()
            return Path(bound.json()["spec"]["hostPath"]["path"])
        raise ValueError(f"volume {volume['name']}: not a kind this stand-in runs")

    async def _command(
        self, api: httpx.AsyncClient, pod: dict[str, Any], folder: Path, loopback: dict[int, int]
    ) -> tuple[list[str], dict[str, str]]:
        """The container's argv and env, with the stand-in's pod network, volumes and CPUs."""
        (container,) = pod["spec"]["containers"]
        mounts: dict[str, Path] = {}
        volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            host = await self._volume_folder(api, volumes[mount["name"]], folder)
            host.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = host
        env = dict(os.environ)  # the image's environment is this machine's
        for variable in container.get("env", []):
            if "value" not in variable:
                raise ValueError(f"env {variable['name']}: valueFrom is not run by this stand-in")
            value = variable["value"]
            for path, host in sorted(mounts.items(), key=lambda mount: -len(mount[0])):
                if value == path or value.startswith(f"{path}/"):  # the deepest mount holds it
                    value = str(host) + value.removeprefix(path)
                    break
            if value == container.get("terminationMessagePath"):
                value = str(folder / "termination-log")
            env[variable["name"]] = value
        command = container["command"]
        executable = Path(sys.executable).parent / command[0]
        argv = [str(executable), *command[1:], *container.get("args", [])]
        argv += ["--host", "127.0.0.1"]
        for port in container.get("ports", []):
            argv += [PORT_FLAGS[port["name"]], str(loopback[port["containerPort"]])]
        return argv, env

    async def _start(self, api: httpx.AsyncClient, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        folder = self.log_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        (container,) = pod["spec"]["containers"]
        loopback = {port["containerPort"]: free_port() for port in container.get("ports", [])}
        argv, env = await self._command(api, pod, folder, loopback)
        core = self._started % self.cpus
        self._started += 1
        with (folder / "container.log").open("wb") as container_log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                stdout=container_log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=lambda: os.sched_setaffinity(0, {core}),
            )
        running = RunningPod(
            name,
            container["name"],
            container["image"],
            str(next(self._addresses)),
            loopback,
            process,
            time.monotonic(),
        )
        self.pods[name] = running
        self.every_pod.append(running)
        log(f"{name}: started (pid {process.pid}, IP {running.ip}, ports {loopback})")
        await self._report(api, running, ready=False, started=False)
        await self._probe(api, pod, running)

    async def _probe(
        self, api: httpx.AsyncClient, pod: dict[str, Any], running: RunningPod
    ) -> None:
        """The startup probe until it passes, then the readiness probe at its period."""
        (container,) = pod["spec"]["containers"]
        startup, readiness = container["startupProbe"], container["readinessProbe"]
        async with httpx.AsyncClient() as client:

            async def passes(probe: dict[str, Any]) -> bool:
                port = next(
                    p["containerPort"]
                    for p in container["ports"]
                    if p["name"] == probe["httpGet"]["port"]
                )
                with contextlib.suppress(httpx.TransportError):
                    url = running.url(port) + probe["httpGet"]["path"]
                    timeout = probe.get("timeoutSeconds", 1)
                    return (await client.get(url, timeout=timeout)).status_code < 400
                return False

            while not await passes(startup):
                if running.process.returncode is not None or running.terminating:
                    return await self._exited(api, running)
                await asyncio.sleep(startup["periodSeconds"])
            await self._report(api, running, ready=False, started=True)
            ready, failures = False, 0
            while running.process.returncode is None and not running.terminating:
                if await passes(readiness):
                    failures = 0
                    if not ready:
                        ready = True
                        running.ready_at = running.ready_at or time.monotonic()
                        after = running.ready_at - running.created_at
                        log(f"{running.name}: ready {after:.1f} s after start")
                        await self._report(api, running, ready=True, started=True)
                else:
                    failures += 1
                    if ready and failures >= readiness.get("failureThreshold", 3):
                        ready = False
                        await self._report(api, running, ready=False, started=True)
                await asyncio.sleep(readiness["periodSeconds"])
        if running.process.returncode is not None and not running.terminating:
            await self._exited(api, running)

    async def _exited(self, api: httpx.AsyncClient, running: RunningPod) -> None:
        if running.terminating:
            return
        running.exited_unexpectedly = True
        code = running.process.returncode
        log(f"{running.name}: exited with {code}; see {self.log_dir / running.name}")
        await self._report(api, running, ready=False, started=False)

    async def _terminate(
        self, api: httpx.AsyncClient, pod: dict[str, Any], running: RunningPod
    ) -> None:
        """A pod deletion: preStop sleep, SIGTERM, the grace period, then the final delete."""
        (container,) = pod["spec"]["containers"]
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        began = time.monotonic()
        pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep")
        if pre_stop:
            await asyncio.sleep(pre_stop["seconds"])
        await self._stop_process(running, grace - (time.monotonic() - began))
        await api.delete(
            f"/api/v1/namespaces/{self.namespace}/pods/{running.name}",
            params={"gracePeriodSeconds": 0},
            headers={"Content-Type": "application/json"},
        )

    async def _stop_process(self, running: RunningPod, grace: float) -> None:
        if running.process.returncode is None:
            running.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(running.process.wait(), max(grace, 0))
            except TimeoutError:
                running.process.kill()
                await running.process.wait()
        log(f"{running.name}: stopped (exit {running.process.returncode})")
        self.pods.pop(running.name, None)

    async def _report(
        self, api: httpx.AsyncClient, running: RunningPod, *, ready: bool, started: bool
    ) -> None:
        alive = running.process.returncode is None
        state = (
            {"running": {"startedAt": _now()}}
            if alive
            else {"terminated": {"exitCode": running.process.returncode, "reason": "Error"}}
        )
        status = {
            "phase": "Running" if alive else "Failed",
            "hostIP": "127.0.0.1",
            "podIP": running.ip,
            "podIPs": [{"ip": running.ip}],
            "conditions": [
                _condition("PodScheduled", True),
                _condition("Initialized", True),
                _condition("ContainersReady", ready),
                _condition("Ready", ready),
            ],
            "containerStatuses": [
                {
                    "name": running.container,
                    "image": running.image,
                    "imageID": "",
                    "ready": ready,
                    "started": started,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        await self._patch(api, running.name, {"status": status}, sub="/status")

    async def _patch(
        self, api: httpx.AsyncClient, name: str, patch: dict[str, Any], sub: str = ""
    ) -> None:
        response = await api.patch(
            f"/api/v1/namespaces/{self.namespace}/pods/{name}{sub}",
            json=patch,
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        if response.status_code != 404:  # deleted meanwhile: nothing to report
            response.raise_for_status()


class KubeProxyStandIn:
    """A Service's virtual IP: each new connection goes to one of its ready endpoints (from
    its EndpointSlices), chosen at random, for the connection's whole life."""

    def __init__(
        self, cp: ControlPlane, namespace: str, service: str, kubelet: KubeletStandIn
    ) -> None:
        self.cp = cp
        self.namespace = namespace
        self.service = service
        self.kubelet = kubelet
        self.endpoints: dict[str, tuple[str, int]] = {}  # pod name -> (IP, container port)
        self.connections: Counter[str] = Counter()
        self.first_answer: dict[str, float] = {}  # pod name -> when its first bytes came back
        self.port = 0
        self._server: asyncio.Server | None = None

    async def run(self) -> None:
        """Serve on a loopback port (self.port) and follow the EndpointSlices until cancelled."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            async with self.cp.async_client(timeout=30) as api:
                while True:
                    await self._sync(api)
                    await asyncio.sleep(SYNC_SECONDS)
        finally:
            self._server.close()

    async def _sync(self, api: httpx.AsyncClient) -> None:
        endpoints = {}
        for endpoint, port in await service_endpoints(api, self.namespace, self.service, "http"):
            if (endpoint.get("conditions") or {}).get("ready"):
                pod = (endpoint.get("targetRef") or {}).get("name", endpoint["addresses"][0])
                endpoints[pod] = (endpoint["addresses"][0], port)
        if endpoints.keys() != self.endpoints.keys():
            log(f"service {self.service}: endpoints {sorted(endpoints)}")
        self.endpoints = endpoints

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if not self.endpoints:  # no ready endpoint: the connection is refused
            client_w.close()
            return
        pod = random.choice(list(self.endpoints))  # noqa: S311 - load balancing, not security
        port = self.kubelet.loopback(*self.endpoints[pod])
        try:
            if port is None:
                raise ConnectionRefusedError
            backend_r, backend_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_w.close()
            return
        self.connections[pod] += 1

        def answered() -> None:
            self.first_answer.setdefault(pod, time.monotonic())

        await asyncio.gather(_pipe(client_r, backend_w), _pipe(backend_r, client_w, answered))
        for writer in (client_w, backend_w):
            writer.close()


async def service_endpoints(
    api: httpx.AsyncClient, namespace: str, service: str, port_name: str
) -> list[tuple[dict[str, Any], int]]:
    """Every endpoint of the Service's EndpointSlices (ready or not: the caller decides), with
    the number of its port named `port_name`; slices without that port give none."""
    response = await api.get(
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        params={"labelSelector": f"kubernetes.io/service-name={service}"},
    )
    response.raise_for_status()
    found = []
    for item in response.json()["items"]:
        ports = [p["port"] for p in item.get("ports") or [] if p.get("name") == port_name]
        if ports:
            found += [(endpoint, ports[0]) for endpoint in item.get("endpoints") or []]
    return found


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_data: Any = None
) -> None:
    """Copy one direction until EOF, then half-close, so each side sees the other's close."""
    try:
        while data := await reader.read(65536):
            if on_data is not None:
                on_data()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class PrometheusOperatorStandIn:
    """One ServiceMonitor's scrape job and its targets (see the module's docstring)."""

    def __init__(
        self,
        cp: ControlPlane,
        service_monitor: dict[str, Any],
        kubelet: KubeletStandIn,
        folder: Path,
    ) -> None:
        self.cp = cp
        self.monitor = service_monitor
        self.kubelet = kubelet
        meta = service_monitor["metadata"]
        self.targets_file = folder / f"{meta['namespace']}-{meta['name']}.json"
        self.targets_file.write_text("[]")

    def job(self) -> dict[str, Any]:
        """The scrape job (prometheus.yml's scrape_configs entry)."""
        meta = self.monitor["metadata"]
        (endpoint,) = self.monitor["spec"]["endpoints"]
        return {
            "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/0",
            "honor_labels": False,
            "scrape_interval": endpoint["interval"],
            "metrics_path": endpoint["path"],
            "file_sd_configs": [{"files": [str(self.targets_file)]}],
        }

    async def run(self) -> None:
        """Keep the targets file current until cancelled."""
        async with self.cp.async_client(timeout=30) as api:
            while True:
                await self._sync(api)
                await asyncio.sleep(SYNC_SECONDS)

    async def _sync(self, api: httpx.AsyncClient) -> None:
        spec = self.monitor["spec"]
        (endpoint,) = spec["endpoints"]
        selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())
        targets = []
        for namespace in spec["namespaceSelector"]["matchNames"]:
            services = await api.get(
                f"/api/v1/namespaces/{namespace}/services", params={"labelSelector": selector}
            )
            services.raise_for_status()
            for service in services.json()["items"]:
                name = service["metadata"]["name"]
                for address, port in await service_endpoints(
                    api, namespace, name, endpoint["port"]
                ):
                    pod = self.kubelet.pod_at(address["addresses"][0])
                    loopback = None if pod is None else pod.loopback.get(port)
                    if pod is None or loopback is None:
                        continue
                    labels = {
                        "namespace": namespace,
                        "service": name,
                        "pod": pod.name,
                        "container": pod.container,
                        "endpoint": endpoint["port"],
                    }
                    targets.append({"targets": [f"127.0.0.1:{loopback}"], "labels": labels})
        content = json.dumps(targets, sort_keys=True)
        if content != self.targets_file.read_text():
            # Prometheus watches the file: replace it whole, never half-written.
            partial = self.targets_file.with_suffix(".partial")
            partial.write_text(content)
            partial.replace(self.targets_file)
