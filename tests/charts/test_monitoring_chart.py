"""charts/kuberank-monitoring, rendered by the real helm.

ConfigMaps pass kubernetes-validate's strict schemas. ServiceMonitor, PodMonitor and
PrometheusRule belong to monitoring.coreos.com, whose CRD schemas are not available offline
(kubernetes-validate has only the core API), so their shape is checked field by field here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from scripts import generate
from tests.charts.adapter_stand_in import shipped_adapter_rules
from tests.charts.rendering import (
    MONITORING_CHART,
    by_kind,
    helm,
    only,
    render,
    scenarios,
)
from tests.kubernetes_versions import validate_for_supported_kubernetes

pytestmark = pytest.mark.helm

SCENARIOS = scenarios(MONITORING_CHART)
RULES_FILE = MONITORING_CHART / "files/rules/kuberank.rules.yaml"
DASHBOARD_FILE = MONITORING_CHART / "files/dashboards/kuberank.json"
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
DURATION = r"^([0-9]+(ms|s|m|h))+$"
LATENCY_BUCKETS = "kuberank_request_duration_seconds_bucket"


def _render_monitoring(*args: str) -> list[dict[str, Any]]:
    return render(MONITORING_CHART, *args, release="kuberank-monitoring", namespace="monitoring")


def _check_endpoint(endpoint: dict[str, Any]) -> None:
    assert set(endpoint) <= {"port", "path", "interval", "honorLabels", "relabelings"}, endpoint
    assert isinstance(endpoint["port"], str) and endpoint["path"] == "/metrics"
    assert re.match(DURATION, endpoint["interval"]), endpoint["interval"]
    for relabeling in endpoint.get("relabelings", []):
        assert set(relabeling) <= {"sourceLabels", "targetLabel", "regex", "replacement", "action"}
        assert all(isinstance(label, str) for label in relabeling.get("sourceLabels", []))


def _check_prometheus_operator_object(obj: dict[str, Any]) -> None:
    """The fields of monitoring.coreos.com/v1 objects this chart sets, with their types."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert obj["metadata"]["namespace"] == "monitoring" and obj["metadata"]["name"]
    spec = obj["spec"]
    if obj["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules"} and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}
                assert ("record" in rule) != ("alert" in rule) and isinstance(rule["expr"], str)
        return
    assert set(spec["selector"]) == {"matchLabels"}
    assert set(spec["namespaceSelector"]) in ({"any"}, {"matchNames"})
    endpoints_key = "endpoints" if obj["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    assert set(spec) == {"selector", "namespaceSelector", endpoints_key}
    for endpoint in spec[endpoints_key]:
        _check_endpoint(endpoint)


def test_every_scenario_is_covered() -> None:
    assert {path.name for path in SCENARIOS} == {"default-values.yaml", "podmonitor-values.yaml"}


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda path: path.stem)
def test_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(MONITORING_CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda path: path.stem)
def test_every_rendered_object_is_valid(values: Path) -> None:
    objects = _render_monitoring("-f", str(values))
    for obj in objects:
        if obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
            _check_prometheus_operator_object(obj)
        else:
            validate_for_supported_kubernetes(obj)


def test_defaults_scrape_the_dcgm_exporter_without_honoring_its_labels() -> None:
    objects = _render_monitoring()
    assert sorted(obj["kind"] for obj in objects) == [
        "ConfigMap",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    monitor = only(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "dcgm-exporter"}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["gpu-monitoring"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    # false: the exporter's pod/namespace labels become exported_pod/exported_namespace,
    # which the adapter rule and the recording rule read.
    assert endpoint["honorLabels"] is False and endpoint["port"] == "metrics"


def test_reranker_podmonitor_selects_server_pods_and_labels_them_like_a_servicemonitor() -> None:
    objects = _render_monitoring("-f", str(MONITORING_CHART / "ci/podmonitor-values.yaml"))
    monitor = only(objects, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "kuberank-server"
    }
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml", "search"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["relabelings"] == [
        {
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
            "targetLabel": "service",
        }
    ]
    assert all(obj["metadata"]["labels"]["release"] == "kube-prometheus-stack" for obj in objects)
    assert not by_kind(_render_monitoring(), "PodMonitor"), "off by default"


def test_prometheusrule_is_the_promtool_tested_rule_file_unchanged() -> None:
    rule = only(_render_monitoring(), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts >= {
        "KuberankHighErrorRate",
        "KuberankHighLatencyP99",
        "KuberankQueueSaturated",
        "KuberankAutoscalerAtMaxReplicas",
        "KuberankNoReadyReplicas",
    }


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar_and_holds_the_file() -> None:
    configmap = only(_render_monitoring(), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "kuberank"}
    dashboard = json.loads(configmap["data"]["kuberank.json"])
    assert dashboard == json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_has_every_panel_the_design_asks_for() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    queries = {
        panel["title"]: " ".join(t["expr"] for t in panel["targets"])
        for panel in dashboard["panels"]
    }
    wanted = {
        "requests/s": "rate(kuberank_requests_total",
        **{
            f"p{q}": f"histogram_quantile(0.{q}, sum by (le) (rate({LATENCY_BUCKETS}"
            for q in ("50", "95", "99")
        },
        "errors": 'code=~"4..|5.."',
        "documents per request": "kuberank_documents_per_request_bucket",
        "GPU utilization": "DCGM_FI_DEV_GPU_UTIL",
        "queue depth": "kuberank_requests_waiting",
        "requests in progress (the HPA's metric)": "kuberank_requests_in_progress",
        "the HPA's concurrency target": "kuberank:requests_in_progress:hpa_target",
        "replicas desired": "kube_horizontalpodautoscaler_status_desired_replicas",
        "replicas ready": "kube_deployment_status_replicas_ready",
    }
    every_query = " ".join(queries.values())
    missing = [what for what, fragment in wanted.items() if fragment not in every_query]
    assert missing == [], f"panels missing: {missing}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["datasource", "namespace", "service"]


def test_the_replicas_panel_finds_the_hpa_of_either_driver() -> None:
    """The desired replicas come from the HPA named after the service: ours (driver hpa) or the
    one KEDA makes for our ScaledObject (driver keda), which names it so."""
    from tests.operator.test_builders import OWNER, SETTINGS, SPECS

    from kuberank_operator.builders.scaled_object import build_scaled_object
    from kuberank_operator.spec import parse_spec

    scaled = build_scaled_object(OWNER, parse_spec(SPECS["cache-on"]), SETTINGS)
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] == OWNER.name
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Replicas: desired vs ready"]
    desired = next(
        t["expr"]
        for t in panel["targets"]
        if "kube_horizontalpodautoscaler_status_desired_replicas" in t["expr"]
    )
    assert 'horizontalpodautoscaler="$service"' in desired, desired


def test_adapter_values_are_generated_from_the_one_definition_of_the_metrics() -> None:
    """One source: the adapter's values hold exactly the rules autoscaling_metrics makes."""
    from kuberank_operator.autoscaling_metrics import DEFAULT_PROMETHEUS_URL, adapter_rules

    values = yaml.safe_load(generate.ADAPTER_VALUES.read_text())
    assert values["rules"]["custom"] == adapter_rules()
    assert values["rules"]["default"] is False
    assert generate.ADAPTER_VALUES.read_text() == generate.adapter_values()
    names = [rule["name"]["as"] for rule in values["rules"]["custom"]]
    assert names == ["kuberank_gpu_utilization", "kuberank_requests_in_progress"]
    prometheus = values["prometheus"]
    assert f"{prometheus['url']}:{prometheus['port']}" == DEFAULT_PROMETHEUS_URL


def test_upstream_values_wire_the_pieces_together() -> None:
    """Prometheus selects every release's monitors and rules, kube-state-metrics exports the
    label the alerts join on, Grafana's sidecar loads labelled dashboards, and the DCGM
    exporter's own ServiceMonitor is off in favour of ours."""
    upstream = MONITORING_CHART / "upstream"
    stack = yaml.safe_load((upstream / "kube-prometheus-stack.values.yaml").read_text())
    spec = stack["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    allowlist = " ".join(stack["kube-state-metrics"]["metricLabelsAllowlist"])
    assert "deployments=[app.kubernetes.io/name" in allowlist
    assert "horizontalpodautoscalers=[app.kubernetes.io/name" in allowlist
    sidecar = stack["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"]) == ("grafana_dashboard", "1")
    dcgm = yaml.safe_load((upstream / "dcgm-exporter.values.yaml").read_text())
    assert dcgm["serviceMonitor"]["enabled"] is False


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        (["--set", "grafana.enabled=true"], "additional properties 'grafana' not allowed"),
        (["--set", "rerankers.podMonitor.interval=often"], "/rerankers/podMonitor/interval"),
        (["--set", "dashboard.enabled=maybe"], "/dashboard/enabled"),
    ],
    ids=["unknown-key", "bad-interval", "not-a-boolean"],
)
def test_schema_rejects_bad_values(override: list[str], complaint: str) -> None:
    result = helm("template", "m", str(MONITORING_CHART), *override)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_adapter_publishes_every_pods_metric_the_operators_autoscaler_reads() -> None:
    """The other end of the wire: the HPA the operator builds for the GPU sample asks the
    custom metrics API for Pods metrics by name; the adapter rules must publish each one."""
    from kuberank_operator.builders.autoscaler import build_autoscaler
    from kuberank_operator.builders.common import Owner
    from kuberank_operator.spec import parse_spec

    sample = yaml.safe_load((generate.SAMPLE_SOURCES["gpu"]).read_text())
    autoscaler = build_autoscaler(Owner("ranker", "ml", "uid-1"), parse_spec(sample["spec"]))
    read = {metric["pods"]["metric"]["name"] for metric in autoscaler["spec"]["metrics"]}
    assert {metric["type"] for metric in autoscaler["spec"]["metrics"]} == {"Pods"}
    published = {rule["name"]["as"] for rule in shipped_adapter_rules()}
    assert read == {"kuberank_gpu_utilization", "kuberank_requests_in_progress"}
    assert read <= published
