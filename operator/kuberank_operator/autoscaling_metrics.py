"""The two per-pod metrics the autoscalers read, defined once for both drivers.

- hpa: each metric is a prometheus-adapter rule (`adapter_rule`), which publishes the pod's value
  on custom.metrics.k8s.io; the HPA averages it over the pods and compares it with the target.
- keda: each metric is the query of a KEDA Prometheus trigger (`keda_query`): the same per-pod
  values summed over one RerankerService's pods, compared with the same per-pod target as an
  AverageValue, which the HPA KEDA makes divides by the target as the other HPA does.

Both are built from the fields below, so the two drivers cannot read different numbers;
tests/charts/test_autoscaling_queries.py evaluates both with promtool on recorded series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# Where kube-prometheus-stack (charts/kuberank-monitoring/README.md) serves Prometheus: the
# adapter's values and the operator's KEDA triggers default to it.
DEFAULT_PROMETHEUS_URL: Final = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"

# Every query of the KEDA driver normalises a pod's value to these labels.
NAMESPACE_LABEL: Final = "namespace"
POD_LABEL: Final = "pod"
# The label the operator's ServiceMonitor (and the monitoring chart's PodMonitor) puts on a
# reranker pod's own series: the RerankerService's name.
SERVICE_LABEL: Final = "service"


@dataclass(frozen=True)
class PodMetric:
    """One Pods metric: where its per-pod value comes from in Prometheus."""

    name: str  # the name the HPA asks custom.metrics.k8s.io for
    series: str  # the Prometheus series it is read from
    namespace_label: str  # the series' label naming the pod's namespace
    pod_label: str  # the series' label naming the pod
    # How a pod's several series become its one value (PromQL aggregation operator).
    per_pod: str
    # Whether the series carries SERVICE_LABEL; if not, the service's pods are those whose
    # own requests-in-progress series says they belong to it.
    has_service_label: bool

    def adapter_rule(self) -> dict[str, Any]:
        """The prometheus-adapter rule publishing this metric per pod."""
        return {
            "seriesQuery": f'{self.series}{{{self.namespace_label}!="",{self.pod_label}!=""}}',
            "resources": {
                "overrides": {
                    self.namespace_label: {"resource": "namespace"},
                    self.pod_label: {"resource": "pod"},
                }
            },
            "name": {"matches": f"^{self.series}$", "as": self.name},
            "metricsQuery": f"{self.per_pod} by (<<.GroupBy>>) (<<.Series>>{{<<.LabelMatchers>>}})",
        }

    def pod_values(self, namespace: str, service: str) -> str:
        """PromQL: one series per pod of the service, labelled `namespace` and `pod` only, with
        the value the adapter rule gives that pod."""
        selector = f'{self.namespace_label}="{namespace}",{self.pod_label}!=""'
        if self.has_service_label:
            selector += f',{SERVICE_LABEL}="{service}"'
        series = f"{self.series}{{{selector}}}"
        for label, wanted in (
            (self.namespace_label, NAMESPACE_LABEL),
            (self.pod_label, POD_LABEL),
        ):
            if label != wanted:
                series = f'label_replace({series}, "{wanted}", "$1", "{label}", "(.+)")'
        values = f"{self.per_pod} by ({NAMESPACE_LABEL}, {POD_LABEL}) ({series})"
        if not self.has_service_label:
            members = REQUESTS_IN_PROGRESS.pod_values(namespace, service)
            values = f"{values} and on ({NAMESPACE_LABEL}, {POD_LABEL}) {members}"
        return values

    def keda_query(self, namespace: str, service: str) -> str:
        """The KEDA trigger's query: the sum over the service's pods (one value, or none)."""
        return f"sum({self.pod_values(namespace, service)})"


# DCGM_FI_DEV_GPU_UTIL (percent, 0-100) from NVIDIA's DCGM exporter, attributed to the pod the GPU
# is allocated to. The exporter reports that pod in its own `pod` and `namespace` labels; scraped
# with honorLabels: false, Prometheus keeps the exporter's own target labels there and renames
# the reported ones `exported_pod` / `exported_namespace`. A pod with several GPUs has one series
# per GPU: its value is their average, so two GPUs at 90 % read 90 (the target is a percentage of
# one GPU, not a sum). Read for GPU pods only.
GPU_UTILIZATION: Final = PodMetric(
    name="kuberank_gpu_utilization",
    series="DCGM_FI_DEV_GPU_UTIL",
    namespace_label="exported_namespace",
    pod_label="exported_pod",
    per_pod="avg",
    has_service_label=False,
)

# The server's own gauge of API requests accepted and not yet answered (queued for a scoring
# slot or being scored). It rises with load long before the queue beyond maxConcurrentRequests
# forms. One series per pod; `max` rather than `sum`, so a pod scraped by two jobs (the
# operator's ServiceMonitor and the monitoring chart's PodMonitor) is not counted twice.
REQUESTS_IN_PROGRESS: Final = PodMetric(
    name="kuberank_requests_in_progress",
    series="kuberank_requests_in_progress",
    namespace_label="namespace",
    pod_label="pod",
    per_pod="max",
    has_service_label=True,
)

POD_METRICS: Final = (GPU_UTILIZATION, REQUESTS_IN_PROGRESS)

# KEDA names the HPA metric of its i-th trigger `s<i>-prometheus` (its prometheus scaler;
# GenerateMetricNameWithIndex), not after what the query reads. This label, on the ScaledObject
# and so on the HPA KEDA makes from it, names the concurrency trigger's metric: the rules'
# kuberank:requests_in_progress:hpa_target finds that target by it (kube-state-metrics exports
# the label, allowlisted in upstream/kube-prometheus-stack.values.yaml).
CONCURRENCY_METRIC_LABEL: Final = "kuberank.io/concurrency-metric"


def keda_metric_name(trigger_index: int) -> str:
    """The name of the External metric KEDA gives the HPA for the trigger at this index."""
    return f"s{trigger_index}-prometheus"


def adapter_rules() -> list[dict[str, Any]]:
    """prometheus-adapter's `rules:` list (the prometheus-adapter chart's `rules.custom`)."""
    return [metric.adapter_rule() for metric in POD_METRICS]
