"""Both autoscaling drivers read the same numbers: promtool evaluates, on recorded series, the
prometheus-adapter rules our values install (driver hpa) and the queries of the operator's KEDA
triggers (driver keda), both made from kuberank_operator.autoscaling_metrics.

The recorded series: one RerankerService (`ranker` in `ml`) with a pod on two GPUs and a pod
on one, the first scraped twice (the operator's ServiceMonitor and the chart's PodMonitor); a
neighbour service on the same node; a service of the same name in another namespace; an idle
GPU with no pod. For each pod the adapter's value and the KEDA query's per-pod value must be
the one written below, and the KEDA trigger's query must be their sum over the service's pods
(which KEDA's HPA divides by the per-pod target, as the HPA does with the adapter's average).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.charts.adapter_stand_in import render_adapter_query, shipped_adapter_rules

from kuberank_operator.autoscaling_metrics import (
    GPU_UTILIZATION,
    POD_METRICS,
    REQUESTS_IN_PROGRESS,
    PodMetric,
)

pytestmark = pytest.mark.prometheus

NAMESPACE, SERVICE = "ml", "ranker"
POD_A, POD_B = "ranker-7d9f8c6b5-abcde", "ranker-7d9f8c6b5-fghij"
NEIGHBOUR = "search-5c6d4b3a2-xyz12"  # another service, same namespace and node
DCGM = 'namespace="gpu-monitoring",pod="dcgm-exporter-node1",Hostname="node1"'


def _server(namespace: str, service: str, pod: str, job: str = "servicemonitor") -> str:
    return (
        f'kuberank_requests_in_progress{{namespace="{namespace}",service="{service}",'
        f'pod="{pod}",job="{job}"}}'
    )


def _gpu(gpu: int, namespace: str | None = None, pod: str | None = None) -> str:
    workload = f',exported_namespace="{namespace}",exported_pod="{pod}"' if pod else ""
    return f'DCGM_FI_DEV_GPU_UTIL{{{DCGM},gpu="{gpu}"{workload}}}'


# series -> its value, constant over the test's ten minutes
RECORDED = {
    _gpu(0, NAMESPACE, POD_A): 80,
    _gpu(1, NAMESPACE, POD_A): 100,  # POD_A: two GPUs, 90 on average
    _gpu(2, NAMESPACE, POD_B): 30,
    _gpu(3, NAMESPACE, NEIGHBOUR): 55,
    _gpu(4, "other", "ranker-5f6b7c8d9-zzzzz"): 10,
    _gpu(5): 0,  # no pod on it
    _server(NAMESPACE, SERVICE, POD_A): 5,
    _server(NAMESPACE, SERVICE, POD_A, job="podmonitor"): 5,  # the same pod scraped twice
    _server(NAMESPACE, SERVICE, POD_B): 3,
    _server(NAMESPACE, "search", NEIGHBOUR): 7,
    _server("other", SERVICE, "ranker-5f6b7c8d9-zzzzz"): 9,
}
# What each driver must read for the service's pods.
PER_POD = {
    GPU_UTILIZATION: {POD_A: 90, POD_B: 30},
    REQUESTS_IN_PROGRESS: {POD_A: 5, POD_B: 3},
}


def _adapter_rule(metric: PodMetric) -> dict[str, Any]:
    (rule,) = [r for r in shipped_adapter_rules() if r["name"]["as"] == metric.name]
    return rule


def _samples(values: dict[str, float]) -> list[dict[str, Any]]:
    return [{"labels": labels, "value": value} for labels, value in values.items()]


def expression_tests(per_pod: dict[PodMetric, dict[str, float]]) -> list[dict[str, Any]]:
    """promtool's promql_expr_test entries: the adapter's and KEDA's queries, per pod and summed."""
    tests = []
    for metric, values in per_pod.items():
        rule = _adapter_rule(metric)
        pod_label = next(
            label for label, o in rule["resources"]["overrides"].items() if o["resource"] == "pod"
        )
        adapter = render_adapter_query(rule, NAMESPACE, sorted(values))
        keda_per_pod = metric.pod_values(NAMESPACE, SERVICE)
        tests += [
            {
                "expr": adapter,
                "eval_time": "5m",
                "exp_samples": _samples(
                    {f'{{{pod_label}="{pod}"}}': value for pod, value in values.items()}
                ),
            },
            {
                "expr": keda_per_pod,
                "eval_time": "5m",
                "exp_samples": _samples(
                    {
                        f'{{namespace="{NAMESPACE}",pod="{pod}"}}': value
                        for pod, value in values.items()
                    }
                ),
            },
            {
                "expr": metric.keda_query(NAMESPACE, SERVICE),
                "eval_time": "5m",
                "exp_samples": _samples({"{}": sum(values.values())}),
            },
        ]
    return tests


def promtool_test_rules(tmp_path: Path, per_pod: dict[PodMetric, dict[str, float]]) -> str:
    """Run `promtool test rules` on the recorded series; its output, raising when it fails."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make tools` installs Debian's prometheus package"
    (tmp_path / "no-rules.yaml").write_text("groups: []\n")
    unit_tests = {
        "rule_files": ["no-rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "the adapter's and KEDA's queries read the same per-pod values",
                "interval": "1m",
                "input_series": [
                    {"series": series, "values": f"{value}x10"}
                    for series, value in RECORDED.items()
                ],
                "promql_expr_test": expression_tests(per_pod),
            }
        ],
    }
    test_file = tmp_path / "autoscaling.test.yaml"
    test_file.write_text(yaml.safe_dump(unit_tests, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(result.stdout + result.stderr)
    return result.stdout


def test_every_metric_has_its_expected_values() -> None:
    assert set(PER_POD) == set(POD_METRICS)


def test_adapter_and_keda_read_the_same_values_for_the_services_pods(tmp_path: Path) -> None:
    assert "SUCCESS" in promtool_test_rules(tmp_path, PER_POD)


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The comparison can fail: POD_B at 31 % where the series say 30 %."""
    wrong = {**PER_POD, GPU_UTILIZATION: {POD_A: 90, POD_B: 31}}
    with pytest.raises(AssertionError, match="FAILED"):
        promtool_test_rules(tmp_path, wrong)
