"""spec.tls and spec.network through the real operator against the emulated API server:
the cert-manager Certificate only where cert-manager's API is served (Degraded otherwise),
and the NetworkPolicy created, put back when edited or deleted, removed with spec.network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.operator.conftest import NAMESPACE
from tests.operator.harness import (
    CERTIFICATES,
    DEPLOYMENTS,
    NETWORK_POLICIES,
    RERANKERS,
    SECRETS,
    EmulatedCluster,
    emulated_cluster,
    jwt_secret,
)
from tests.operator.test_operator import condition, created, events, settle, status

ISSUER = {"issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"}}


def container(cluster: EmulatedCluster, name: str = "ranker") -> dict[str, Any]:
    deployment = cluster.objects(DEPLOYMENTS, NAMESPACE)[name]
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def ingress(cluster: EmulatedCluster) -> list[dict[str, Any]]:
    return list(cluster.objects(NETWORK_POLICIES, NAMESPACE)["ranker"]["spec"].get("ingress", []))


async def test_issuer_tls_makes_a_certificate_and_serves_https(cluster: EmulatedCluster) -> None:
    await created(cluster, tls=ISSUER)
    certificate = cluster.objects(CERTIFICATES, NAMESPACE)["ranker"]
    assert certificate["spec"]["issuerRef"] == {**ISSUER["issuerRef"], "group": "cert-manager.io"}
    assert certificate["spec"]["dnsNames"] == [
        "ranker",
        f"ranker.{NAMESPACE}",
        f"ranker.{NAMESPACE}.svc",
        f"ranker.{NAMESPACE}.svc.cluster.local",
    ]
    assert certificate["metadata"]["ownerReferences"][0]["kind"] == "RerankerService"
    server = container(cluster)
    assert server["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["KUBERANK_TLS_CERT_FILE"] == "/etc/kuberank/tls/tls.crt"
    assert status(cluster)["endpoint"] == f"https://ranker.{NAMESPACE}.svc:8000"
    assert condition(cluster, "Degraded")["status"] == "False"

    # Drift: an edited Certificate is put back, a deleted one made again.
    await cluster.patch(CERTIFICATES, NAMESPACE, "ranker", {"spec": {"dnsNames": ["evil.example"]}})
    await cluster.wait_until(
        lambda: (
            cluster.objects(CERTIFICATES, NAMESPACE)["ranker"]["spec"]["dnsNames"][0] == "ranker"
        ),
        "the Certificate's names put back",
    )
    await cluster.delete(CERTIFICATES, NAMESPACE, "ranker")
    await cluster.wait_for_object(CERTIFICATES, NAMESPACE, "ranker")

    # TLS off: the Certificate goes, the probes and endpoint are plain HTTP again.
    await cluster.patch(RERANKERS, NAMESPACE, "ranker", {"spec": {"tls": None}})
    await cluster.wait_until(
        lambda: "ranker" not in cluster.objects(CERTIFICATES, NAMESPACE), "Certificate deleted"
    )
    await cluster.wait_until(
        lambda: status(cluster)["endpoint"].startswith("http://"), "endpoint back to http"
    )
    assert container(cluster)["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert ("Normal", "Deleted", "Deleted Certificate ranker") in events(cluster)


async def test_issuer_tls_without_cert_manager_is_degraded_saying_so(tmp_path: Path) -> None:
    async with emulated_cluster(tmp_path, cert_manager=False) as cluster:
        await cluster.create(SECRETS, NAMESPACE, jwt_secret())
        await cluster.start_operator()
        await created(cluster, tls=ISSUER)
        degraded = condition(cluster, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "CertManagerMissing")
        assert "spec.tls.issuerRef needs cert-manager" in degraded["message"]
        assert "spec.tls.secretName" in degraded["message"]  # what to do instead
        assert ("Warning", "CertManagerMissing", degraded["message"]) in events(cluster)
        # Nothing applied: pods would wait forever for a Secret no one makes.
        assert not cluster.objects(DEPLOYMENTS, NAMESPACE)
        assert not [c for c in cluster.calls() if c.resource == "certificates"]

        # A Secret of one's own needs no cert-manager.
        await cluster.create(
            SECRETS,
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {"name": "ranker-cert"},
                "data": {"tls.crt": "eA==", "tls.key": "eA=="},
            },
        )
        await cluster.patch(
            RERANKERS,
            NAMESPACE,
            "ranker",
            {"spec": {"tls": {"secretName": "ranker-cert", "issuerRef": None}}},
        )
        await cluster.wait_until(
            lambda: condition(cluster, "Degraded").get("status") == "False", "recovered"
        )
        volumes = cluster.objects(DEPLOYMENTS, NAMESPACE)["ranker"]["spec"]["template"]["spec"][
            "volumes"
        ]
        assert {"name": "tls", "secret": {"secretName": "ranker-cert", "items": [
            {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"},
        ]}} in volumes  # fmt: skip


async def test_a_missing_tls_secret_is_degraded(cluster: EmulatedCluster) -> None:
    await created(cluster, tls={"secretName": "not-there"})
    degraded = condition(cluster, "Degraded")
    assert degraded["reason"] == "MissingSecret"
    assert "Secret 'not-there' named in spec.tls.secretName does not exist" in degraded["message"]
    assert not cluster.objects(DEPLOYMENTS, NAMESPACE)


async def test_network_policy_is_made_put_back_and_removed(cluster: EmulatedCluster) -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"team": "search"}}}]
    await created(cluster, network={"allowFrom": peers})
    policy = cluster.objects(NETWORK_POLICIES, NAMESPACE)["ranker"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "ranker"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    wanted = ingress(cluster)
    assert [rule["from"] for rule in wanted] == [
        peers,
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    ]

    # Someone opens the API port to everyone, or to every namespace: closed again.
    for opened in ({"ports": [{"port": 8000}]}, {"from": [{"namespaceSelector": {}}]}):
        await cluster.patch(NETWORK_POLICIES, NAMESPACE, "ranker", {"spec": {"ingress": [opened]}})
        await cluster.wait_until(lambda: ingress(cluster) == wanted, "the policy put back")
    await cluster.delete(NETWORK_POLICIES, NAMESPACE, "ranker")
    await cluster.wait_for_object(NETWORK_POLICIES, NAMESPACE, "ranker")
    assert ingress(cluster) == wanted

    # Other peers (this namespace only): patched in place, and that one guarded too.
    await cluster.patch(
        RERANKERS, NAMESPACE, "ranker", {"spec": {"network": {"allowFrom": [{"podSelector": {}}]}}}
    )
    this_namespace = [{"podSelector": {"matchLabels": {}}}]
    await cluster.wait_until(
        lambda: ingress(cluster)[0]["from"] == this_namespace, "new peers applied"
    )
    await cluster.patch(
        NETWORK_POLICIES,
        NAMESPACE,
        "ranker",
        {"spec": {"ingress": [{"from": [{"namespaceSelector": {}}]}, ingress(cluster)[1]]}},
    )
    await cluster.wait_until(
        lambda: ingress(cluster)[0]["from"] == this_namespace, "every namespace closed again"
    )

    # spec.network removed: the policy goes, and stays gone.
    await cluster.patch(RERANKERS, NAMESPACE, "ranker", {"spec": {"network": None}})
    await cluster.wait_until(
        lambda: "ranker" not in cluster.objects(NETWORK_POLICIES, NAMESPACE), "policy deleted"
    )
    await settle(cluster)
    assert "ranker" not in cluster.objects(NETWORK_POLICIES, NAMESPACE)
    assert ("Normal", "Deleted", "Deleted NetworkPolicy ranker") in events(cluster)
