"""What every child shares: its name, labels, owner reference and the server's ports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kuberank_contract import (
    HTTP_PORT,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    METRICS_PORT,
    SERVER_APP_NAME,
    SERVER_COMPONENT,
)
from kuberank_operator import API_GROUP, API_VERSION, FIELD_MANAGER, KIND

__all__ = ["HTTP_PORT", "METRICS_PORT", "Owner", "labels", "metadata", "selector_labels"]


@dataclass(frozen=True)
class Owner:
    """The RerankerService the children belong to."""

    name: str
    namespace: str
    uid: str

    @property
    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def selector_labels(owner: Owner) -> dict[str, str]:
    """The labels that pick this service's pods (immutable in a Deployment's selector)."""
    return {LABEL_NAME: SERVER_APP_NAME, LABEL_INSTANCE: owner.name}


def labels(owner: Owner) -> dict[str, str]:
    return selector_labels(owner) | {
        LABEL_COMPONENT: SERVER_COMPONENT,
        LABEL_MANAGED_BY: FIELD_MANAGER,
    }


def metadata(owner: Owner, name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name or owner.name,
        "namespace": owner.namespace,
        "labels": labels(owner),
        "ownerReferences": [owner.reference],
        **extra,
    }
