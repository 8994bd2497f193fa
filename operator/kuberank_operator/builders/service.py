"""The Service in front of the server pods (API and metrics ports)."""

from __future__ import annotations

from typing import Any

from kuberank_operator.builders.common import METRICS_PORT, Owner, metadata, selector_labels
from kuberank_operator.spec import RerankerSpec


def endpoint_url(owner: Owner, spec: RerankerSpec) -> str:
    scheme = "http" if spec.tls is None else "https"
    return f"{scheme}://{owner.name}.{owner.namespace}.svc:{spec.service.port}"


def build_service(owner: Owner, spec: RerankerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, annotations=spec.service.annotations),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(owner),
            "ports": [
                {
                    "name": "http",
                    "port": spec.service.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }
