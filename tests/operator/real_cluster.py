"""The operator against the real control plane (tests/control_plane.py): helpers and fixtures.

The operator runs as its own process (`python -m kuberank_operator.cli`, what
`kuberank-operator` runs), logged in from a kubeconfig as the `kuberank-operator` user, so
the API server's audit log tells its requests from the tests' (the admin's).

    def test_x(kube: Cluster) -> None:       # a fresh namespace (Pod Security `restricted`)
        kube.operator.start()                # with a JWT Secret in it; the CRD installed
        kube.create(RERANKERS, reranker())
        kube.wait_until(lambda: kube.get(DEPLOYMENTS, "ranker"), "the Deployment")
        mark = kube.audit.mark(); ...; kube.audit.operator_writes(mark)

(`kube`, not `cluster`: that is the kmock stand-in's fixture in these tests.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from scripts.control_plane.cluster import ControlPlane, free_port, wait_ready
from tests.control_plane import OPERATOR_USER
from tests.operator.harness import CRD_PATH, JWT_SECRET_NAME, SECRETS, jwt_secret

from kuberank_operator.kube import Resource

REPO_ROOT = Path(__file__).resolve().parents[2]
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
REPLICA_SETS = Resource("apps", "v1", "replicasets")


@dataclass(frozen=True)
class AuditEntry:
    # One event per request, two for a watch (when it starts and when it ends): same id.
    id: str
    user: str
    verb: str
    group: str  # "" for the core API
    resource: str
    subresource: str
    namespace: str  # "" for a cluster-wide request
    name: str
    code: int
    dry_run: bool
    user_agent: str  # tells Kopf's own requests from our client's, under the same user

    @classmethod
    def parse(cls, line: str) -> AuditEntry:
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        return cls(
            id=event["auditID"],
            user=event["user"]["username"],
            verb=event["verb"],
            group=ref.get("apiGroup", ""),
            resource=ref.get("resource", ""),
            subresource=ref.get("subresource", ""),
            namespace=ref.get("namespace", ""),
            name=ref.get("name", ""),
            code=int((event.get("responseStatus") or {}).get("code", 0)),
            dry_run="dryRun=" in event.get("requestURI", ""),
            user_agent=event.get("userAgent", ""),
        )


@dataclass
class AuditLog:
    """kube-apiserver's audit log (one JSON event per request): who asked what."""

    path: Path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def entries(self, since: int = 0) -> list[AuditEntry]:
        # The API server writes an event once it has answered: let the last ones land.
        time.sleep(0.5)
        with self.path.open() as log:
            log.seek(since)
            return [AuditEntry.parse(line) for line in log if line.strip()]

    def operator_requests(self, since: int = 0, user: str = OPERATOR_USER) -> list[AuditEntry]:
        return [e for e in self.entries(since) if e.user == user]

    def operator_writes(self, since: int = 0, user: str = OPERATOR_USER) -> list[AuditEntry]:
        """The operator's writes that reached storage (not dry runs, not refused)."""
        return [
            e
            for e in self.operator_requests(since, user)
            if e.verb in WRITE_VERBS and not e.dry_run and e.code < 400
        ]


@dataclass
class OperatorProcess:
    """`python -m kuberank_operator.cli` watching one namespace ("": all), as the user
    `kuberank-operator` (or whoever `kubeconfig` logs in as)."""

    cp: ControlPlane
    namespace: str
    log_path: Path
    kubeconfig: Path | None = None
    verbose: bool = True  # debug logs (the benchmark turns them off: they cost CPU)
    # More KUBERANK_OPERATOR_* settings (the autoscaling driver, KEDA's authentication...).
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    liveness_port: int = 0

    def start(self) -> None:
        assert self.process is None, "the operator is already running"
        self.liveness_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig or self.cp.user_kubeconfig(OPERATOR_USER)),
            "KUBERANK_OPERATOR_NAMESPACES": self.namespace,
            "KUBERANK_OPERATOR_LIVENESS_PORT": str(self.liveness_port),
            "KUBERANK_OPERATOR_JSON_LOGS": "false",
            "PYTHONPATH": os.pathsep.join(
                str(REPO_ROOT / part) for part in ("contract", "server", "operator")
            ),
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kuberank_operator.cli", *["--verbose"] * self.verbose],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        wait_ready(url, self.process, self.log_path, timeout=30, every=0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM lets Kopf finish; SIGKILL is a crash (a node lost, an OOM kill)."""
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@dataclass
class Cluster:
    """One test's namespace on the session's control plane, and the admin's API access."""

    cp: ControlPlane
    namespace: str
    operator: OperatorProcess
    audit: AuditLog
    http: httpx.Client = field(repr=False)

    def path(self, resource: Resource, name: str | None = None, sub: str | None = None) -> str:
        return resource.path(self.namespace, name, sub)

    def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(self.path(resource), json=body)
        response.raise_for_status()
        return dict(response.json())

    def try_create(self, resource: Resource, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(self.path(resource), json=body)

    def get(self, resource: Resource, name: str) -> dict[str, Any] | None:
        response = self.http.get(self.path(resource, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def list(self, resource: Resource, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else {}
        response = self.http.get(self.path(resource), params=params)
        response.raise_for_status()
        return list(response.json()["items"])

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: dict[str, Any],
        *,
        manager: str = "kuberank-tests",
        sub: str | None = None,
    ) -> dict[str, Any]:
        response = self.http.patch(
            self.path(resource, name, sub),
            json=patch,
            params={"fieldManager": manager},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()
        return dict(response.json())

    def delete(self, resource: Resource, name: str) -> None:
        self.http.delete(self.path(resource, name)).raise_for_status()

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.cp.kubectl(
            "--namespace", self.namespace, *args, **kwargs
        )
        return result

    def wait_until(self, condition: Callable[[], Any], what: str, within: float = 30) -> Any:
        deadline = time.monotonic() + within
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}")
            time.sleep(0.1)


def install_crd(cp: ControlPlane) -> None:
    cp.kubectl("apply", "--server-side", "-f", str(CRD_PATH))
    cp.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/rerankerservices.kuberank.io",
    )  # fmt: skip


@pytest.fixture(scope="session")
def reranker_crd(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with the generated CRD installed (and Established)."""
    install_crd(control_plane)
    return control_plane


_namespaces = iter(range(1, 10_000))


@pytest.fixture
def kube(
    reranker_crd: ControlPlane, artifacts_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    cp = reranker_crd
    namespace = f"t{next(_namespaces)}-{os.getpid()}"
    log_path = cp.logs / f"operator-{request.node.name}.log"
    log_path.unlink(missing_ok=True)
    with cp.client(timeout=30) as http:
        ns = {"apiVersion": "v1", "kind": "Namespace"}
        http.post(
            "/api/v1/namespaces", json=ns | {"metadata": {"name": namespace, "labels": RESTRICTED}}
        ).raise_for_status()
        cluster = Cluster(
            cp=cp,
            namespace=namespace,
            operator=OperatorProcess(cp, namespace, log_path),
            audit=AuditLog(cp.audit_log),
            http=http,
        )
        # Pods are refused until their namespace's default ServiceAccount exists.
        cluster.wait_until(
            lambda: cp.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
            "the default ServiceAccount",
        )
        cluster.create(SECRETS, jwt_secret(JWT_SECRET_NAME))
        try:
            yield cluster
        finally:
            cluster.operator.stop()
            http.delete(f"/api/v1/namespaces/{namespace}")
