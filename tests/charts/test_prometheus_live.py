"""A real Prometheus on loopback runs the monitoring chart's queries on real scrapes.

Prometheus (Debian's binary) scrapes, every second:
- a running kuberank server (`live_server`), labelled as the operator's ServiceMonitor labels
  a reranker pod (namespace, service, pod);
- a stand-in for NVIDIA's DCGM exporter (no GPU here): a prometheus-client server publishing
  DCGM_FI_DEV_GPU_UTIL with the exporter's labels, scraped with honor_labels false under the
  exporter pod's own target labels, exactly as the chart's ServiceMonitor does;
- a stand-in for kube-state-metrics (no cluster here) with the replica series and the HPA's
  concurrency target that the dashboard and rules read.
It also evaluates the chart's recording rules. After a little traffic, every dashboard query
and both prometheus-adapter queries (rendered with the adapter's template semantics) must
return series for the right pod, and the adapter's GPU value for a pod at 90 % on two GPUs
must be 90, what the HPA compares with targetGPUUtilization. While callers hold requests
open on the server, the adapter's kuberank_requests_in_progress for the pod is the server's
own gauge, about the number of callers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tests.charts.adapter_stand_in import render_adapter_query, shipped_adapter_rules
from tests.charts.rendering import MONITORING_CHART
from tests.support import LiveServer, free_port

pytestmark = [pytest.mark.prometheus, pytest.mark.engine]

NAMESPACE = "ml"
SERVICE = "ranker"
RERANKER_POD = "ranker-7d9f8c6b5-abcde"
# A pod of another service in the same namespace, on the same GPU node: its GPU must never
# be reported as the reranker's.
NEIGHBOUR_POD = "search-5c6d4b3a2-xyz12"
DCGM_EXPORTER_POD = "dcgm-exporter-node1"
RATE_INTERVAL = "30s"  # Grafana's $__rate_interval: at least 4 scrapes (1 s here)

RULES_FILE = MONITORING_CHART / "files/rules/kuberank.rules.yaml"
DASHBOARD_FILE = MONITORING_CHART / "files/dashboards/kuberank.json"


@dataclass
class Exporter:
    url: str
    registry: CollectorRegistry


@pytest.fixture(scope="module")
def fake_dcgm_exporter() -> Iterator[Exporter]:
    """DCGM_FI_DEV_GPU_UTIL with the labels dcgm-exporter 4.x puts on it, including the
    pod/namespace/container a GPU is allocated to. The reranker pod has two GPUs at 90 %."""
    registry = CollectorRegistry()
    utilization = Gauge(
        "DCGM_FI_DEV_GPU_UTIL",
        "GPU utilization (in %).",
        ["gpu", "UUID", "device", "modelName", "Hostname", "container", "namespace", "pod"],
        registry=registry,
    )
    for gpu, pod, namespace, value in (
        ("0", RERANKER_POD, NAMESPACE, 90),
        ("1", RERANKER_POD, NAMESPACE, 90),
        ("2", NEIGHBOUR_POD, NAMESPACE, 30),
        ("3", "", "", 0),  # 3: allocated to no pod
    ):
        container = "server" if pod else ""
        utilization.labels(
            gpu,
            f"GPU-0000-{gpu}",
            f"nvidia{gpu}",
            "NVIDIA H100 80GB HBM3",
            "node1",
            container,
            namespace,
            pod,
        ).set(value)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield Exporter(f"127.0.0.1:{port}", registry)
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def fake_kube_state_metrics() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    Gauge(
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "desired replicas",
        ["namespace", "horizontalpodautoscaler"],
        registry=registry,
    ).labels(NAMESPACE, SERVICE).set(2)
    Gauge(
        "kube_deployment_status_replicas_ready",
        "ready replicas",
        ["namespace", "deployment"],
        registry=registry,
    ).labels(NAMESPACE, SERVICE).set(1)
    Gauge(
        "kube_horizontalpodautoscaler_spec_target_metric",
        "HPA metric targets",
        ["namespace", "horizontalpodautoscaler", "metric_name", "metric_target_type"],
        registry=registry,
    ).labels(NAMESPACE, SERVICE, "kuberank_requests_in_progress", "average").set(16)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield Exporter(f"127.0.0.1:{port}", registry)
    server.shutdown()
    thread.join(timeout=5)


def _scrape_config(live_server: LiveServer, dcgm: Exporter, ksm: Exporter) -> dict[str, Any]:
    reranker_target = live_server.metrics_url.removeprefix("http://").removesuffix("/metrics")
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {  # what the operator's ServiceMonitor makes of a reranker pod
                "job_name": SERVICE,
                "static_configs": [
                    {
                        "targets": [reranker_target],
                        "labels": {
                            "namespace": NAMESPACE,
                            "service": SERVICE,
                            "pod": RERANKER_POD,
                        },
                    }
                ],
            },
            {  # the chart's DCGM ServiceMonitor: honorLabels false, the exporter pod's labels
                "job_name": "dcgm-exporter",
                "honor_labels": False,
                "static_configs": [
                    {
                        "targets": [dcgm.url],
                        "labels": {
                            "namespace": "gpu-monitoring",
                            "pod": DCGM_EXPORTER_POD,
                            "container": "exporter",
                            "service": "dcgm-exporter",
                        },
                    }
                ],
            },
            {  # kube-prometheus-stack scrapes kube-state-metrics with honorLabels true
                "job_name": "kube-state-metrics",
                "honor_labels": True,
                "static_configs": [{"targets": [ksm.url]}],
            },
        ],
    }


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url
        # Queries are evaluated at this moment (Unix time) once set: what a dashboard showed
        # right after the traffic, however long the tests take afterwards.
        self.moment: float | None = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.query_at(promql, self.moment)

    def query_at(self, promql: str, moment: float | None) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": promql}
        if moment is not None:
            params["time"] = moment
        response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (promql, body)
        return list(body["data"]["result"])

    def series(self, selector: str) -> list[dict[str, str]]:
        response = httpx.get(f"{self.url}/api/v1/series", params={"match[]": selector}, timeout=10)
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    def wait_for(self, promql: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(1)
        raise AssertionError(f"no result for {promql} after {timeout} s")


@pytest.fixture(scope="module")
def prometheus(
    live_server: LiveServer,
    fake_dcgm_exporter: Exporter,
    fake_kube_state_metrics: Exporter,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts_dir: Path,
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make tools` installs Debian's prometheus package"
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(_scrape_config(live_server, fake_dcgm_exporter, fake_kube_state_metrics))
    )
    port = free_port()
    log_path = artifacts_dir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"prometheus exited; see {log_path}"
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready; see {log_path}"
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def _send_traffic(live_server: LiveServer) -> None:
    """An unauthenticated request (401), a malformed one (422), good ones of several sizes."""
    documents = [
        "Paris is the capital of France.",
        "Berlin is in Germany.",
        "The Eiffel Tower is in Paris.",
        "Bananas are yellow.",
    ]
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        assert client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}).status_code == 401
        bad = client.post("/v1/rerank", headers=live_server.headers(), json={"documents": "d"})
        assert bad.status_code == 422, bad.text
        for count in (1, 2, 4, 4):
            response = client.post(
                "/v1/rerank",
                headers=live_server.headers(),
                json={
                    "query": "What is the capital of France?",
                    "documents": documents[:count],
                },
            )
            assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, live_server: LiveServer) -> Prometheus:
    """Prometheus once it has scraped the traffic, queried as of a few scrapes after it."""
    prometheus.wait_for(f'kuberank_requests_total{{pod="{RERANKER_POD}"}}')
    prometheus.wait_for("kuberank:gpu_utilization:avg")
    # A first round creates the request series; rate() sees increases only once a series
    # has a sample from before them, as on a server that has been up for a while.
    _send_traffic(live_server)
    prometheus.wait_for('sum(kuberank_requests_total{code="200"}) >= 4')
    _send_traffic(live_server)
    prometheus.moment = time.time() + 3
    time.sleep(5)  # the scrapes up to that moment are in
    assert prometheus.query('sum(kuberank_requests_total{code="200"}) >= 8'), "not scraped"
    return prometheus


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def _as_grafana_sends_it(expr: str) -> str:
    """The dashboard variables as Grafana substitutes them for one RerankerService."""
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", NAMESPACE)
        .replace("$service", SERVICE)
    )


@pytest.mark.parametrize(
    ("title", "expr"),
    _dashboard_queries(),
    ids=[f"{title}:{i}" for i, (title, _) in enumerate(_dashboard_queries())],
)
def test_dashboard_query_returns_series_for_the_reranker_pod(
    scraped: Prometheus,
    title: str,
    expr: str,
) -> None:
    result = scraped.query(_as_grafana_sends_it(expr))
    assert result, f"{title}: no series for {_as_grafana_sends_it(expr)}"
    for series in result:
        if "pod" in series["metric"]:
            assert series["metric"]["pod"] == RERANKER_POD, (title, series)
        value = float(series["value"][1])
        assert value == value, f"{title}: NaN"  # NaN: a ratio or quantile over no data


def test_dashboard_variables_list_the_namespace_and_service(scraped: Prometheus) -> None:
    assert scraped.series("kuberank_requests_total")
    labels = {
        (s.get("namespace"), s.get("service")) for s in scraped.series("kuberank_requests_total")
    }
    assert labels == {(NAMESPACE, SERVICE)}


def test_error_panel_counts_the_callers_mistakes(scraped: Prometheus) -> None:
    errors = next(expr for title, expr in _dashboard_queries() if title.startswith("Errors"))
    codes = {series["metric"]["code"] for series in scraped.query(_as_grafana_sends_it(errors))}
    assert {"401", "422"} <= codes


# ------------------------------------------------------------------ prometheus-adapter ------


def _adapter_rule(metric: str) -> dict[str, Any]:
    matching = [
        rule
        for rule in shipped_adapter_rules()
        if re.sub(rule["name"]["matches"], rule["name"]["as"], rule["seriesQuery"].split("{", 1)[0])
        == metric
    ]
    assert len(matching) == 1, f"{metric}: {len(matching)} rules publish it"
    return matching[0]


def test_adapter_renderer_matches_the_adapters_own_shape() -> None:
    rule = {
        "seriesQuery": 'm{ns!="",p!=""}',
        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        "resources": {"overrides": {"ns": {"resource": "namespace"}, "p": {"resource": "pod"}}},
    }
    assert render_adapter_query(rule, "a", ["x"]) == 'sum(m{ns="a",p="x"}) by (p)'
    assert render_adapter_query(rule, "a", ["x", "y"]) == 'sum(m{ns="a",p=~"x|y"}) by (p)'


@pytest.mark.parametrize("metric", ["kuberank_gpu_utilization", "kuberank_requests_in_progress"])
def test_adapter_discovers_the_series_and_maps_them_to_the_reranker_pod(
    scraped: Prometheus,
    metric: str,
) -> None:
    """Discovery: the rule's seriesQuery finds series whose resource labels name the pod."""
    rule = _adapter_rule(metric)
    labels = {
        override["resource"]: label for label, override in rule["resources"]["overrides"].items()
    }
    found = {
        (s[labels["namespace"]], s[labels["pod"]]) for s in scraped.series(rule["seriesQuery"])
    }
    assert (NAMESPACE, RERANKER_POD) in found


@pytest.mark.parametrize("metric", ["kuberank_gpu_utilization", "kuberank_requests_in_progress"])
def test_adapter_query_returns_one_value_per_requested_pod(
    scraped: Prometheus, metric: str
) -> None:
    rule = _adapter_rule(metric)
    pod_label = next(
        label for label, o in rule["resources"]["overrides"].items() if o["resource"] == "pod"
    )
    result = scraped.query(render_adapter_query(rule, NAMESPACE, [RERANKER_POD]))
    assert [series["metric"] for series in result] == [{pod_label: RERANKER_POD}]


def test_adapter_gives_the_hpa_90_for_a_pod_at_90_percent_on_two_gpus(scraped: Prometheus) -> None:
    rule = _adapter_rule("kuberank_gpu_utilization")
    (series,) = scraped.query(render_adapter_query(rule, NAMESPACE, [RERANKER_POD]))
    assert float(series["value"][1]) == 90.0
    # Several pods in one request (the HPA asks for all of its pods): each keeps its own value.
    both = scraped.query(render_adapter_query(rule, NAMESPACE, [RERANKER_POD, NEIGHBOUR_POD]))
    assert {s["metric"]["exported_pod"]: float(s["value"][1]) for s in both} == {
        RERANKER_POD: 90.0,
        NEIGHBOUR_POD: 30.0,
    }
    # The recording rule the dashboard and alerts can use agrees with the adapter.
    (recorded,) = scraped.query(f'kuberank:gpu_utilization:avg{{pod="{RERANKER_POD}"}}')
    assert recorded["metric"]["namespace"] == NAMESPACE and float(recorded["value"][1]) == 90.0


CALLERS = 6  # concurrent callers holding requests open during the load below
HELD_DOCUMENTS = 48  # documents per request: each takes a while on the CPU engine


@dataclass
class UnderLoad:
    """Prometheus queried at a moment when CALLERS callers kept requests open on the server."""

    prometheus: Prometheus
    moment: float

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.prometheus.query_at(promql, self.moment)


@pytest.fixture(scope="module")
def under_load(scraped: Prometheus, live_server: LiveServer) -> Iterator[UnderLoad]:
    """CALLERS closed-loop callers (each sends its next request when the last is answered)
    until Prometheus has scraped the gauge at CALLERS - 1 or more, i.e. during the load."""
    stop = threading.Event()
    failures: list[str] = []

    def caller(number: int) -> None:
        documents = [
            f"document {number}-{i} about the capital of France" for i in range(HELD_DOCUMENTS)
        ]
        with httpx.Client(base_url=live_server.url, timeout=120) as client:
            while not stop.is_set():
                response = client.post(
                    "/v1/rerank",
                    headers=live_server.headers(),
                    json={"query": "What is the capital of France?", "documents": documents},
                )
                if response.status_code != 200:
                    failures.append(response.text)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    try:
        # A moment when the scraped gauge and the recording rule evaluated on it both show
        # the callers' requests (the rule runs on its own schedule, after the scrape).
        scraped_high = f'kuberank_requests_in_progress{{pod="{RERANKER_POD}"}} >= {CALLERS - 1}'
        recorded_high = f'kuberank:requests_in_progress:avg{{service="{SERVICE}"}} >= {CALLERS - 1}'
        deadline = time.monotonic() + 60
        while True:
            moment = time.time()
            if scraped.query_at(scraped_high, moment) and scraped.query_at(recorded_high, moment):
                break
            assert time.monotonic() < deadline, "the gauge never rose with the callers"
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert failures == []
    yield UnderLoad(scraped, moment)


def test_adapter_in_progress_is_the_servers_gauge_and_rises_with_callers(
    under_load: UnderLoad,
) -> None:
    rule = _adapter_rule("kuberank_requests_in_progress")
    (series,) = under_load.query(render_adapter_query(rule, NAMESPACE, [RERANKER_POD]))
    (raw,) = under_load.query(f'kuberank_requests_in_progress{{pod="{RERANKER_POD}"}}')
    assert series["metric"] == {"pod": RERANKER_POD}
    assert series["value"][1] == raw["value"][1]
    # Every caller's request is accepted and unanswered (queued or scored) most of the time;
    # none of them waits beyond maxConcurrentRequests, so the old queue metric reads 0.
    assert CALLERS - 1 <= float(series["value"][1]) <= CALLERS
    (waiting,) = under_load.query(f'kuberank_requests_waiting{{pod="{RERANKER_POD}"}}')
    assert float(waiting["value"][1]) == 0


def test_the_alerts_average_and_target_follow_the_callers(under_load: UnderLoad) -> None:
    """KuberankConcurrencyAboveTarget compares these two recorded series: the pods' average
    requests in progress (5 or 6 callers' requests on the one pod) and the HPA's target
    (from kube-state-metrics). The HPA controller itself reads the adapter's value in
    tests/operator/test_hpa_on_control_plane.py and benchmarks/autoscale_bench.py."""
    (average,) = under_load.query(f'kuberank:requests_in_progress:avg{{service="{SERVICE}"}}')
    (target,) = under_load.query(f'kuberank:requests_in_progress:hpa_target{{service="{SERVICE}"}}')
    assert CALLERS - 1 <= float(average["value"][1]) <= CALLERS
    assert float(target["value"][1]) == 16.0


def _recording_rules() -> list[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]


# The 5xx ratio has no series without a 5xx; promtool's unit tests cover it.
@pytest.mark.parametrize(
    "record", [r for r in _recording_rules() if r != "kuberank:request_errors:ratio_rate5m"]
)
def test_recording_rules_evaluate_on_real_scrapes(scraped: Prometheus, record: str) -> None:
    """The chart's recording rules, loaded by this Prometheus, yield series for the service
    (or, for GPU utilization, the pod) under the labels the alerts group by."""
    result = scraped.query(record)
    assert result, f"{record}: no series"
    for series in result:
        assert series["metric"]["namespace"] == NAMESPACE
        assert series["metric"].get("service", SERVICE) == SERVICE
        assert series["metric"].get("pod", RERANKER_POD) in (RERANKER_POD, NEIGHBOUR_POD)
