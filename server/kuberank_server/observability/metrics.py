"""Prometheus metrics with the names fixed in DESIGN.md ("Metrics").

They live in a registry of their own so tests can start several apps in one process
without duplicate-registration errors; `serve` exposes it (plus vLLM's `vllm:*` metrics,
which vLLM keeps in the default registry) on the metrics port.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DOCUMENT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 5000)


@dataclass
class ServerMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests_total = Counter(
            "kuberank_requests_total",
            "API requests by route and status code",
            ["route", "code"],
            registry=r,
        )
        self.request_duration_seconds = Histogram(
            "kuberank_request_duration_seconds",
            "API request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.documents_per_request = Histogram(
            "kuberank_documents_per_request",
            "documents in each scored request",
            buckets=DOCUMENT_BUCKETS,
            registry=r,
        )
        self.pairs_scored_total = Counter(
            "kuberank_pairs_scored_total", "query-document pairs scored", registry=r
        )
        self.prompt_tokens_total = Counter(
            "kuberank_prompt_tokens_total", "prompt tokens sent to the engine", registry=r
        )
        self.requests_in_flight = Gauge(
            "kuberank_requests_in_flight", "requests being scored now", registry=r
        )
        self.requests_waiting = Gauge(
            "kuberank_requests_waiting", "requests queued for a scoring slot", registry=r
        )
        self.requests_in_progress = Gauge(
            "kuberank_requests_in_progress",
            "requests accepted and not yet answered (queued for a slot or being scored):"
            " the HPA's per-pod concurrency metric",
            registry=r,
        )
        self.connections_recycled_total = Counter(
            "kuberank_connections_recycled_total",
            "keep-alive connections closed by a `Connection: close` response (request count,"
            " age, or drain)",
            registry=r,
        )
        self.startup_seconds = Gauge(
            "kuberank_startup_seconds",
            "duration of each start-up phase of this process",
            ["phase"],
            registry=r,
        )
        self.auth_failures_total = Counter(
            "kuberank_auth_failures_total", "rejected tokens by reason", ["reason"], registry=r
        )
        self.http_refusals_total = Counter(
            "kuberank_http_refusals_total",
            "requests and connections refused below the application (431, 408, parser 400,"
            " 503 over the connection caps) by port and reason",
            ["port", "reason"],
            registry=r,
        )
        self.truncated_documents_total = Counter(
            "kuberank_truncated_documents_total", "documents cut to the token limit", registry=r
        )


class _CombinedCollector(Collector):
    """Our registry and prometheus_client's default one (where vLLM puts `vllm:*`)."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()


def combined_registry(metrics: ServerMetrics) -> CollectorRegistry:
    """What the metrics port serves: our metrics and vLLM's, from one registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_CombinedCollector(metrics.registry, REGISTRY))
    return registry
