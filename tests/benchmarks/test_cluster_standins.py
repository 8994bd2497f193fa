"""The autoscaling benchmark's stand-ins (benchmarks/cluster_standins.py) on the real control
plane. The operator's Deployment for a CPU RerankerService, scheduled by the real scheduler onto
the kubelet stand-in's node, runs as a real kuberank-server that the pod reports Ready only once
the server is. The real EndpointSlice controller's slice routes a rerank through the kube-proxy
stand-in; the prometheus-operator stand-in lists the pod with the ServiceMonitor's target
labels. Deleting the service runs the preStop sleep, then SIGTERM and the drain, then the
kubelet's final delete."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from benchmarks.autoscale_bench import cpu_sample_model
from benchmarks.cluster_standins import (
    POD_NETWORK,
    KubeletStandIn,
    KubeProxyStandIn,
    PrometheusOperatorStandIn,
)
from tests.operator.harness import PODS, RERANKERS
from tests.operator.real_cluster import Cluster

from kuberank_contract import METRICS_PORT
from kuberank_operator.builders.common import Owner
from kuberank_operator.builders.deployment import PRE_STOP_SLEEP_SECONDS
from kuberank_operator.builders.monitoring import build_service_monitor
from kuberank_operator.spec import parse_spec

pytestmark = [pytest.mark.control_plane, pytest.mark.engine]

NODE = "stand-in-node"
SERVICE = "minilm"
SPEC: dict[str, Any] = {
    "model": cpu_sample_model(),
    "resources": {"gpu": 0, "cpu": "1", "memory": "4Gi"},
    "auth": {"mode": "disabled"},
    "autoscaling": {"enabled": False},
    "replicas": 1,
}
START_TIMEOUT_SECONDS = 600  # a cold compile on two busy cores


async def until(
    condition: Any,
    what: str,
    within: float,
    kubelet: KubeletStandIn,
    tasks: list[asyncio.Task[None]],
) -> Any:
    """Until `condition()`; fails at once if a stand-in failed or a server exited by itself."""
    deadline = time.monotonic() + within
    while not (result := condition()):
        for task in tasks:
            if task.done():
                task.result()
        exited = [pod.name for pod in kubelet.every_pod if pod.exited_unexpectedly]
        assert not exited, f"{exited} exited; see {kubelet.log_dir}"
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(0.5)
    return result


async def test_a_server_pod_runs_serves_and_stops_through_the_stand_ins(
    kube: Cluster, tmp_path: Path
) -> None:
    kube.operator.start()
    created = kube.create(
        RERANKERS,
        {
            "apiVersion": "kuberank.io/v1alpha1",
            "kind": "RerankerService",
            "metadata": {"name": SERVICE},
            "spec": SPEC,
        },
    )
    kubelet = KubeletStandIn(kube.cp, NODE, kube.namespace, tmp_path / "pods")
    proxy = KubeProxyStandIn(kube.cp, kube.namespace, SERVICE, kubelet)
    owner = Owner(SERVICE, kube.namespace, created["metadata"]["uid"])
    monitor = build_service_monitor(owner, parse_spec(SPEC))
    (tmp_path / "targets").mkdir()
    discovery = PrometheusOperatorStandIn(kube.cp, monitor, kubelet, tmp_path / "targets")
    tasks = [asyncio.create_task(part.run()) for part in (kubelet, proxy, discovery)]
    try:
        running = await until(
            lambda: [p for p in kubelet.pods.values() if p.ready_at], "a Ready pod",
            START_TIMEOUT_SECONDS, kubelet, tasks,
        )  # fmt: skip
        (pod,) = running
        reported = kube.get(PODS, pod.name)
        assert reported is not None
        conditions = {c["type"]: c["status"] for c in reported["status"]["conditions"]}
        assert conditions["Ready"] == "True"
        assert reported["spec"]["nodeName"] == NODE
        assert reported["status"]["podIP"] == pod.ip
        assert ipaddress.ip_address(pod.ip) in POD_NETWORK
        await until(
            lambda: proxy.endpoints, "the EndpointSlice's ready endpoint", 30, kubelet, tasks
        )
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://127.0.0.1:{proxy.port}/v1/rerank",
                json={"query": "fast queries", "documents": ["a cat", "fast database queries"]},
            )
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["index"] == 1
        assert proxy.connections == {pod.name: 1}
        await until(
            lambda: discovery.targets_file.read_text() != "[]", "the target", 30, kubelet, tasks
        )
        (target,) = json.loads(discovery.targets_file.read_text())
        assert target["labels"] == {
            "namespace": kube.namespace,
            "service": SERVICE,
            "pod": pod.name,
            "container": "server",
            "endpoint": "metrics",
        }
        assert target["targets"] == [f"127.0.0.1:{pod.loopback[METRICS_PORT]}"]
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://{target['targets'][0]}/metrics")).text
        assert 'kuberank_requests_total{code="200",route="/v1/rerank"} 1.0' in metrics
        # Reported Ready on the server's own word: the probes asked it.
        assert 'kuberank_requests_total{code="200",route="/health"}' in metrics
        assert 'kuberank_requests_total{code="200",route="/ready"}' in metrics
        # Deleting the service: the garbage collector deletes its pod, the kubelet runs the
        # preStop sleep, then SIGTERM (the server drains and exits 0), then deletes the pod.
        deleted_at = time.monotonic()
        kube.delete(RERANKERS, SERVICE)
        await until(
            lambda: pod.process.returncode is not None, "the server's exit", 120, kubelet, tasks
        )
        assert time.monotonic() - deleted_at >= PRE_STOP_SLEEP_SECONDS
        assert pod.process.returncode == 0
        await until(lambda: kube.get(PODS, pod.name) is None, "the pod deleted", 30, kubelet, tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with kube.cp.client() as http:
            http.delete(f"/api/v1/nodes/{NODE}")
