"""The cert-manager Certificate for `spec.tls.issuerRef`: the Service's DNS names, in a Secret
the Deployment mounts (cert-manager renews it; the server reloads it without a restart)."""

from __future__ import annotations

from typing import Any

from kuberank_operator.builders.common import Owner, metadata
from kuberank_operator.spec import IssuerRef


def certificate_secret_name(owner: Owner) -> str:
    return f"{owner.name}-tls"


def service_dns_names(owner: Owner, cluster_domain: str) -> list[str]:
    """Every name an in-cluster client may use for the Service, shortest first."""
    service = f"{owner.name}.{owner.namespace}.svc"
    return [owner.name, f"{owner.name}.{owner.namespace}", service, f"{service}.{cluster_domain}"]


def build_certificate(owner: Owner, issuer: IssuerRef, cluster_domain: str) -> dict[str, Any]:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata(owner),
        "spec": {
            "secretName": certificate_secret_name(owner),
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": "cert-manager.io"},
            "dnsNames": service_dns_names(owner, cluster_domain),
            "usages": ["server auth", "digital signature", "key encipherment"],
            # A new key with every renewal: a leaked key dies with its certificate.
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        },
    }
