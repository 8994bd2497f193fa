"""Driver hpa end to end on the real control plane: the operator's HPA, the real HPA controller
(kube-controller-manager), prometheus-adapter built from its Go module with the rules the
monitoring chart ships, registered as an aggregated API (custom.metrics.k8s.io), and a real
Prometheus. The Deployment scales up under load on its pods and back down.

kwok's pods run no container, so their metrics come from a STAND-IN exporter: it publishes each
pod's kuberank_requests_in_progress as the operator's ServiceMonitor labels a server pod's
series, and DCGM_FI_DEV_GPU_UTIL as NVIDIA's exporter reports a pod's GPU (scraped with
honor_labels false, as the chart's ServiceMonitor does). tests/charts/test_prometheus_live.py
shows a real kuberank-server's own gauge reaching the same adapter query.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from scripts.control_plane import autoscaling_stack
from scripts.control_plane.cluster import ControlPlane, free_port
from tests.charts.adapter_stand_in import shipped_adapter_rules
from tests.charts.test_prometheus_live import RULES_FILE, Prometheus
from tests.operator.harness import AUTOSCALERS, DEPLOYMENTS, RERANKERS, reranker
from tests.operator.real_cluster import Cluster
from tests.operator.test_operator_on_control_plane import is_ready, pods

pytestmark = [pytest.mark.control_plane, pytest.mark.prometheus]
DCGM_EXPORTER_POD = "dcgm-exporter-node1"


@dataclass
class PodMetrics:
    """STAND-IN for the server pods' and DCGM's series (see the module's docstring)."""

    url: str
    in_progress: Gauge
    gpu: Gauge

    def set(self, namespace: str, pod: str, in_progress: float, gpu: float = 10) -> None:
        self.in_progress.labels(namespace, "ranker", pod).set(in_progress)
        self.gpu.labels("0", namespace, pod).set(gpu)


def _scrape_config(metrics: PodMetrics) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": "reranker-pods",
                "honor_labels": True,  # the stand-in speaks for each pod: its labels are kept
                "static_configs": [{"targets": [metrics.url]}],
                "metric_relabel_configs": [
                    {"source_labels": ["__name__"], "regex": "kuberank_.*", "action": "keep"}
                ],
            },
            {
                "job_name": "dcgm-exporter",
                "honor_labels": False,
                "static_configs": [
                    {
                        "targets": [metrics.url],
                        "labels": {"namespace": "gpu-monitoring", "pod": DCGM_EXPORTER_POD},
                    }
                ],
                "metric_relabel_configs": [
                    {"source_labels": ["__name__"], "regex": "DCGM_.*", "action": "keep"}
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def pod_metrics() -> Iterator[PodMetrics]:
    registry = CollectorRegistry()
    in_progress = Gauge(
        "kuberank_requests_in_progress",
        "Requests accepted and not yet answered.",
        ["namespace", "service", "pod"],
        registry=registry,
    )
    gpu = Gauge(
        "DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", ["gpu", "namespace", "pod"],
        registry=registry,
    )  # fmt: skip
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield PodMetrics(f"127.0.0.1:{port}", in_progress, gpu)
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(
    pod_metrics: PodMetrics, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus-hpa")
    url = autoscaling_stack.start_prometheus(control_plane, workdir, _scrape_config(pod_metrics))
    try:
        yield Prometheus(url)
    finally:
        control_plane.stop_process(autoscaling_stack.PROMETHEUS)


@pytest.fixture(scope="module")
def prometheus_adapter(
    prometheus: Prometheus, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """prometheus-adapter (built by `build --autoscalers prometheus-adapter`) with the rules
    the monitoring chart ships, serving custom.metrics.k8s.io through the aggregator."""
    autoscaling_stack.start_prometheus_adapter(
        control_plane,
        tmp_path_factory.mktemp("prometheus-adapter"),
        prometheus.url,
        shipped_adapter_rules(),
        relist_interval="5s",  # series discovered this often (the binary's default: 10 min)
    )
    try:
        yield control_plane
    finally:
        autoscaling_stack.stop_prometheus_adapter(control_plane)


def custom_metric(kube: Cluster, metric: str) -> dict[str, float]:
    """What custom.metrics.k8s.io (the adapter, through the aggregator) says per pod."""
    api = f"/apis/{autoscaling_stack.CUSTOM_METRICS}/v1beta2"
    path = f"{api}/namespaces/{kube.namespace}/pods/*/{metric}"
    response = kube.http.get(path)
    if response.status_code != 200:
        return {}
    return {
        item["describedObject"]["name"]: float(item["value"].rstrip("m"))
        / (1000 if item["value"].endswith("m") else 1)
        for item in response.json()["items"]
    }


def replicas(kube: Cluster) -> int:
    deployment = kube.get(DEPLOYMENTS, "ranker")
    assert deployment is not None
    return int(deployment["spec"]["replicas"])


def test_the_hpa_controller_scales_the_deployment_on_the_adapters_metrics_up_and_down(
    prometheus_adapter: ControlPlane, pod_metrics: PodMetrics, kube: Cluster
) -> None:
    kube.operator.env = {"KUBERANK_OPERATOR_AUTOSCALING_DRIVER": "hpa"}
    kube.operator.start()
    autoscaling = {
        "targetConcurrency": 4,
        "minReplicas": 1,
        "maxReplicas": 2,
        "scaleDownStabilizationSeconds": 0,
    }
    kube.create(RERANKERS, reranker(autoscaling=autoscaling))
    kube.wait_until(lambda: is_ready(kube), "Ready", within=60)
    (first,) = [p["metadata"]["name"] for p in pods(kube)]
    pod_metrics.set(kube.namespace, first, in_progress=1)
    kube.wait_until(
        lambda: custom_metric(kube, "kuberank_requests_in_progress").get(first) == 1,
        "the adapter's value for the pod",
        within=60,
    )
    kube.wait_until(  # its own scrape job (DCGM's), so it may reach the adapter a relist later
        lambda: custom_metric(kube, "kuberank_gpu_utilization") == {first: 10},
        "the adapter's GPU utilization for the pod",
        within=60,
    )
    # Load: 10 requests in progress on the one pod, target 4 per pod: ceil(10 / 4) = 3 > max 2.
    began = time.monotonic()
    pod_metrics.set(kube.namespace, first, in_progress=10)
    kube.wait_until(lambda: replicas(kube) == 2, "two replicas", within=90)
    up = time.monotonic() - began
    # The HPA controller's own account of it: it rescaled, on the adapter's values (its status
    # is written after the scale, so it may lag the Deployment by a moment).
    kube.wait_until(
        lambda: (
            ((kube.get(AUTOSCALERS, "ranker") or {}).get("status") or {}).get("desiredReplicas")
            == 2
        ),
        "the HPA's status to show two replicas",
        within=30,
    )
    hpa = kube.get(AUTOSCALERS, "ranker")
    assert hpa is not None
    conditions = {c["type"]: c for c in hpa["status"]["conditions"]}
    assert conditions["AbleToScale"]["reason"] == "SucceededRescale"
    assert conditions["ScalingActive"]["reason"] == "ValidMetricFound"
    current = {
        m["pods"]["metric"]["name"]: m["pods"]["current"]["averageValue"]
        for m in hpa["status"]["currentMetrics"]
    }
    assert current == {"kuberank_gpu_utilization": "10", "kuberank_requests_in_progress": "10"}
    kube.wait_until(lambda: len(pods(kube)) == 2 and is_ready(kube), "two pods", within=60)
    # The load gone: back to one.
    began = time.monotonic()
    for pod in pods(kube):
        pod_metrics.set(kube.namespace, pod["metadata"]["name"], in_progress=0)
    kube.wait_until(lambda: replicas(kube) == 1, "one replica", within=120)
    down = time.monotonic() - began
    print(f"HPA controller via prometheus-adapter: 1 -> 2 in {up:.1f} s, 2 -> 1 in {down:.1f} s")
