"""The PodDisruptionBudget keeping servers up through node drains."""

from __future__ import annotations

from typing import Any

from kuberank_operator.builders.common import Owner, metadata, selector_labels
from kuberank_operator.spec import RerankerSpec


def build_disruption_budget(owner: Owner, spec: RerankerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner),
        "spec": {
            "minAvailable": spec.disruption.min_available,
            "selector": {"matchLabels": selector_labels(owner)},
        },
    }
