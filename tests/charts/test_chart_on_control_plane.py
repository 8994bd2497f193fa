"""`helm install` of charts/kuberank on a real control plane of its own, and the operator running
with the chart's ServiceAccount token: the real RBAC authorizer answers each of its calls."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripts.control_plane.cluster import ControlPlane, kubeconfig_yaml
from tests.charts.rendering import HELM, OPERATOR_CHART
from tests.operator.harness import (
    AUTOSCALERS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    RERANKERS,
    SECRETS,
    SERVICES,
    jwt_secret,
    reranker,
)
from tests.operator.real_cluster import RESTRICTED, AuditLog, Cluster, OperatorProcess

pytestmark = [pytest.mark.control_plane, pytest.mark.helm]

RELEASE_NAMESPACE = "kuberank"
WORK_NAMESPACE = "search"
ACCOUNT = "kuberank-operator"  # the chart's ServiceAccount for release `kuberank`
ACCOUNT_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{ACCOUNT}"
CHILDREN = (DEPLOYMENTS, SERVICES, AUTOSCALERS, DISRUPTION_BUDGETS)


@pytest.fixture(scope="module")
def installed(artifacts_dir: Path) -> Iterator[ControlPlane]:
    """A control plane of its own (the session's has the CRD without helm's ownership), the
    chart installed by `helm install` into a namespace enforcing Pod Security `restricted`."""
    logs = artifacts_dir / "control-plane-helm"
    with (
        tempfile.TemporaryDirectory(prefix="kuberank-helm-") as workdir,
        ControlPlane.start(Path(workdir), logs) as cp,
    ):
        cp.add_node("gpu-node-1", gpus=1)
        cp.add_node("cpu-node-1", gpus=0)  # for the operator's own pod
        with cp.client() as admin:
            for name in (RELEASE_NAMESPACE, WORK_NAMESPACE):
                admin.post(
                    "/api/v1/namespaces",
                    json={"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": name, "labels": RESTRICTED}},
                ).raise_for_status()  # fmt: skip
        subprocess.run(
            [str(HELM), "install", "kuberank", str(OPERATOR_CHART), "--namespace",
             RELEASE_NAMESPACE, "--kubeconfig", str(cp.kubeconfig), "--wait", "--timeout", "2m"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        yield cp


def account_kubeconfig(cp: ControlPlane) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount (TokenRequest, as a pod gets)."""
    with cp.client() as admin:
        response = admin.post(
            f"/api/v1/namespaces/{RELEASE_NAMESPACE}/serviceaccounts/{ACCOUNT}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": 3600}},
        )  # fmt: skip
    response.raise_for_status()
    path = cp.workdir / "kubeconfigs" / "chart-account.kubeconfig"
    path.write_text(kubeconfig_yaml(cp.server, cp.pki.ca_cert, response.json()["status"]["token"]))
    return path


def test_the_chart_installs_under_restricted_and_its_rbac_allows_a_whole_scenario(
    installed: ControlPlane,
) -> None:
    cp = installed
    with cp.client(timeout=30) as http:
        # The chart's own operator pod was admitted under `restricted` and runs (on kwok).
        pods = http.get(f"/api/v1/namespaces/{RELEASE_NAMESPACE}/pods").json()["items"]
        assert [p["status"]["phase"] for p in pods] == ["Running"]
        # Watching every namespace, as the chart's default install runs it ("": no list).
        operator = OperatorProcess(
            cp, "", cp.logs / "operator-chart-account.log", account_kubeconfig(cp)
        )
        audit = AuditLog(cp.audit_log)
        kube = Cluster(cp, WORK_NAMESPACE, operator, audit, http)
        kube.wait_until(
            lambda: cp.get(f"/api/v1/namespaces/{WORK_NAMESPACE}/serviceaccounts/default"),
            "the default ServiceAccount",
        )
        kube.create(SECRETS, jwt_secret())
        mark = audit.mark()
        operator.start()
        try:
            kube.create(RERANKERS, reranker())

            def ready() -> bool:
                conditions = (kube.get(RERANKERS, "ranker") or {}).get("status", {})
                return any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in conditions.get("conditions", [])
                )

            kube.wait_until(ready, "Ready", within=60)
            kube.patch(RERANKERS, "ranker", {"spec": {"autoscaling": {"enabled": False}}})
            kube.wait_until(lambda: kube.get(AUTOSCALERS, "ranker") is None, "the HPA deleted")
            kube.delete(SERVICES, "ranker")
            kube.wait_until(lambda: kube.get(SERVICES, "ranker"), "the Service put back")
            kube.delete(RERANKERS, "ranker")
            kube.wait_until(
                lambda: not any(kube.get(r, "ranker") for r in CHILDREN), "children gone", 60
            )
        finally:
            operator.stop()
    requests = audit.operator_requests(mark, user=ACCOUNT_USER)
    assert len(requests) > 20  # it did run as the chart's ServiceAccount
    forbidden = sorted({(r.verb, r.resource, r.subresource) for r in requests if r.code == 403})
    assert forbidden == []
