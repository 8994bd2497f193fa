"""The NetworkPolicy for `spec.network`: the API port from the peers listed, the metrics port
from the monitoring peers, nothing else in."""

from __future__ import annotations

from typing import Any

from kuberank_operator.builders.common import (
    HTTP_PORT,
    METRICS_PORT,
    Owner,
    metadata,
    selector_labels,
)
from kuberank_operator.spec import NetworkPolicyPeer, NetworkSpec


def _peer(peer: NetworkPolicyPeer) -> dict[str, Any]:
    dumped = peer.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    for selector in ("podSelector", "namespaceSelector"):
        if dumped.get(selector) == {}:
            # `{}` (select all) says the same, but drift detection reads an empty object as
            # "nothing wanted here", which any live peer satisfies: a `podSelector: {}` edited
            # into `namespaceSelector: {}` (every namespace) would go unnoticed.
            dumped[selector] = {"matchLabels": {}}
    return dumped


def _ingress(port: int, peers: list[NetworkPolicyPeer]) -> list[dict[str, Any]]:
    # A rule with no `from` admits everyone: no peers must mean no rule at all.
    if not peers:
        return []
    return [{"ports": [{"port": port, "protocol": "TCP"}], "from": [_peer(p) for p in peers]}]


def build_network_policy(owner: Owner, network: NetworkSpec) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner)},
            "policyTypes": ["Ingress"],
            "ingress": _ingress(HTTP_PORT, network.allow_from)
            + _ingress(METRICS_PORT, network.metrics_from),
        },
    }
