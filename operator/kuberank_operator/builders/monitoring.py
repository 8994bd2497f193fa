"""The ServiceMonitor (prometheus-operator) scraping the servers' metrics port."""

from __future__ import annotations

from typing import Any

from kuberank_operator.builders.common import Owner, metadata, selector_labels
from kuberank_operator.spec import RerankerSpec


def build_service_monitor(owner: Owner, spec: RerankerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(owner),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner)},
            "namespaceSelector": {"matchNames": [owner.namespace]},
            "endpoints": [
                {"port": "metrics", "path": "/metrics", "interval": spec.monitoring.interval}
            ],
        },
    }
