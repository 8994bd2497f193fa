"""The PersistentVolumeClaim holding downloaded weights, when `model.cache` is set."""

from __future__ import annotations

from typing import Any

from kuberank_operator.builders.common import Owner, metadata
from kuberank_operator.spec import ModelCache


def build_cache_claim(owner: Owner, cache: ModelCache) -> dict[str, Any]:
    claim_spec: dict[str, Any] = {
        "accessModes": [cache.access_mode],
        "resources": {"requests": {"storage": str(cache.size)}},
    }
    if cache.storage_class_name:
        claim_spec["storageClassName"] = cache.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(owner),
        "spec": claim_spec,
    }
