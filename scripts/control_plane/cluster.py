"""A real Kubernetes control plane on loopback, from the binaries build.py made.

etcd, kube-apiserver (RBAC, default admission plugins incl. PodSecurity and ServiceAccount, an
audit log, front-proxy flags for aggregated APIs), kube-controller-manager (service accounts
and their tokens, namespaces, garbage collection, ReplicaSets, Deployments, HPAs, PDBs),
kube-scheduler and kwok, which plays the kubelet of fake nodes: it makes nodes Ready and their
pods Running and Ready. No container runs; everything else is the real thing.

    with ControlPlane.start(workdir, logs) as cp:       # ~10-20 s on two cores
        cp.add_node("gpu-1", gpus=1)
        cp.kubectl("apply", "-f", "manifests/")
        cp.kubeconfig                                   # admin (system:masters)
        cp.user_kubeconfig("kuberank-operator")          # its own user name, also a master
        cp.add_process("adapter", [...])                 # more processes, same logs and stop
        cp.stop_process("adapter")                       # or one of them, earlier
        cp.register_aggregated_api("custom.metrics.k8s.io", ["v1beta2"], port)  # served by it

`python -m scripts.control_plane.cluster` runs one in the foreground for a person (`make cluster`).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import secrets
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from scripts.control_plane.build import BIN, ROOT, STAGES

# The annotation kwok selects its nodes by, and the GPU taint a GPU node pool usually carries.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
START_TIMEOUT_SECONDS = 60.0
# kube-controller-manager's controllers that a cluster of fake nodes needs (volumes, jobs,
# the legacy Endpoints... stay off: nothing here uses them). The node lifecycle controller lifts
# the not-ready taint the API server puts on every new node once kwok reports it Ready; the
# EndpointSlices are what the autoscaling benchmark's kube-proxy stand-in and Prometheus read,
# and its model cache is a claim bound to a volume (the binder; protection lets both go).
CONTROLLERS = (
    "node-lifecycle-controller",
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "replicaset-controller",
    "deployment-controller",
    "endpointslice-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "horizontal-pod-autoscaler-controller",
    "disruption-controller",
)
# One line per request of the tests and the operator (what tests count); the control plane's
# own components and kwok's heartbeats are left out (they would be most of it).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "None",
            "users": [
                "system:kube-controller-manager",
                "system:kube-scheduler",
                "kwok",
                "system:apiserver",
            ],
        },
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata"},
    ],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60, every: float = 0.5
) -> None:
    """Until `url` answers 200 (a process beside the control plane starting: a metrics adapter
    with its self-signed certificate, the operator); fails at once if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{log.stem} exited with {process.returncode}; see {log}")
        try:
            # The adapter's self-signed serving certificate: nothing to verify it with.
            if httpx.get(url, timeout=2, verify=False).status_code == 200:  # noqa: S501
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{log.stem} not ready after {timeout} s; see {log}")
        time.sleep(every)


# ---- certificates ---------------------------------------------------------------------------
def x509_name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def certificate(
    subject: x509.Name,
    public_key: Any,
    issuer: tuple[x509.Name, Any] | None,
    own_key: Any,
    *,
    ca: bool = False,
    server_names: Sequence[str] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, own_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        usages = [x509.ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        usages += [x509.ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        alternatives: list[x509.GeneralName] = []
        for entry in server_names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alternatives.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    """The control plane's key material (files under one folder)."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path  # private (signs tokens); the public key is derived from it
    service_account_public_key: Path
    front_proxy_ca_cert: Path
    front_proxy_ca_key: Path
    front_proxy_client_cert: Path
    front_proxy_client_key: Path
    ca_key: Path

    @classmethod
    def create(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, bytes] = {}

        def authority(common_name: str, prefix: str) -> tuple[x509.Name, Any]:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509_name(common_name)
            files[f"{prefix}_cert"] = certificate(
                name, key.public_key(), None, key, ca=True
            ).public_bytes(serialization.Encoding.PEM)
            files[f"{prefix}_key"] = pem_key(key)
            return name, key

        ca = authority("kuberank-local-ca", "ca")
        front_proxy_ca = authority("kuberank-local-front-proxy-ca", "front_proxy_ca")
        serving_key = ec.generate_private_key(ec.SECP256R1())
        names = (
            "127.0.0.1",
            "localhost",
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
        files["serving_cert"] = certificate(
            x509_name("kube-apiserver"), serving_key.public_key(), ca, None, server_names=names
        ).public_bytes(serialization.Encoding.PEM)
        files["serving_key"] = pem_key(serving_key)
        proxy_key = ec.generate_private_key(ec.SECP256R1())
        files["front_proxy_client_cert"] = certificate(
            x509_name("front-proxy-client"),
            proxy_key.public_key(),
            front_proxy_ca,
            None,
            client=True,
        ).public_bytes(serialization.Encoding.PEM)
        files["front_proxy_client_key"] = pem_key(proxy_key)
        account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        files["service_account_key"] = pem_key(account_key)
        files["service_account_public_key"] = account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        paths = {}
        for key, content in files.items():
            path = folder / f"{key.replace('_', '-')}.pem"
            path.write_bytes(content)
            path.chmod(0o600)
            paths[key] = path
        return cls(**paths)


# ---- the control plane ---------------------------------------------------------------------
@dataclass
class User:
    name: str
    token: str
    groups: tuple[str, ...] = ()


@dataclass
class ControlPlane:
    workdir: Path
    logs: Path
    pki: Pki
    server: str
    users: dict[str, User]
    audit_log: Path
    kwok_cidr: str = "10.244.0.1/16"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started_seconds: float = 0.0

    # ---- start and stop ----------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def start(
        cls, workdir: Path, logs: Path, extra_users: Sequence[User] = ()
    ) -> Iterator[ControlPlane]:
        """Start it all; stop it all on leaving, whatever happened."""
        for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            if not (BIN / binary).exists():
                raise FileNotFoundError(
                    f"{BIN / binary} is missing: build the control plane first "
                    "(python -m scripts.control_plane.build)"
                )
        began = time.monotonic()
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "kube-apiserver-audit.log").unlink(missing_ok=True)  # it would be appended to
        users = {
            user.name: user
            for user in (
                User("admin", secrets.token_hex(16), ("system:masters",)),
                User("system:kube-controller-manager", secrets.token_hex(16)),
                User("system:kube-scheduler", secrets.token_hex(16)),
                User("kwok", secrets.token_hex(16), ("system:masters",)),
                *extra_users,
            )
        }
        port = free_port()
        cp = cls(
            workdir=workdir,
            logs=logs,
            pki=Pki.create(workdir / "pki"),
            server=f"https://127.0.0.1:{port}",
            users=users,
            audit_log=logs / "kube-apiserver-audit.log",
        )
        try:
            etcd_url = cp._start_etcd()
            cp._start_apiserver(port, etcd_url)
            cp._wait_healthy("kube-apiserver", f"{cp.server}/readyz")
            cp._start_controllers()
            cp._wait_for(
                "the default ServiceAccount",
                lambda: cp.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            )
            cp.started_seconds = time.monotonic() - began
            yield cp
        finally:
            cp.stop()

    def stop(self) -> None:
        """SIGTERM in the reverse order of start, then SIGKILL whatever is left after 10 s."""
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()

    def add_process(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run a process beside the control plane: logs in `logs/<name>.log`, stopped with it."""
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a person's Ctrl-C reaches us, and we stop them in order
            )
        self.processes[name] = process
        return process

    def register_aggregated_api(
        self, group: str, versions: Sequence[str], port: int, namespace: str = "kube-system"
    ) -> None:
        """APIServices for `group`'s versions, proxied by kube-apiserver's aggregator to a
        process beside the control plane on 127.0.0.1:`port` (one started with add_process,
        with the front-proxy CA as its requestheader CA: it reads it from kube-system's
        extension-apiserver-authentication ConfigMap). The Service is ExternalName
        `localhost`: the aggregator dials that name and port itself, with no kube-proxy or
        endpoints; the process's self-signed serving certificate is not verified (as
        prometheus-adapter's and KEDA's own manifests do)."""
        service = group.split(".")[0] + "-api"
        with self.client() as http:
            http.post(
                f"/api/v1/namespaces/{namespace}/services",
                json={
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": service},
                    "spec": {"type": "ExternalName", "externalName": "localhost"},
                },
                timeout=10,
            ).raise_for_status()
            for version in versions:
                http.post(
                    "/apis/apiregistration.k8s.io/v1/apiservices",
                    json={
                        "apiVersion": "apiregistration.k8s.io/v1",
                        "kind": "APIService",
                        "metadata": {"name": f"{version}.{group}"},
                        "spec": {
                            "group": group,
                            "version": version,
                            "service": {"name": service, "namespace": namespace, "port": port},
                            "insecureSkipTLSVerify": True,
                            "groupPriorityMinimum": 100,
                            "versionPriority": 100,
                        },
                    },
                    timeout=10,
                ).raise_for_status()

        def available() -> bool:
            for version in versions:
                api = self.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{group}")
                conditions = ((api or {}).get("status") or {}).get("conditions") or []
                if not any(c["type"] == "Available" and c["status"] == "True" for c in conditions):
                    return False
            return True

        self._wait_for(f"{group} Available", available)

    def remove_aggregated_api(
        self, group: str, versions: Sequence[str], namespace: str = "kube-system"
    ) -> None:
        """Undo register_aggregated_api (an APIService left unavailable would make discovery
        of every later client incomplete)."""
        with self.client() as http:
            for version in versions:
                http.delete(f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{group}")
            http.delete(f"/api/v1/namespaces/{namespace}/services/{group.split('.')[0]}-api")

    def stop_process(self, name: str) -> None:
        """Stop one process add_process started, before the control plane (a fixture's)."""
        process = self.processes.pop(name)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self.add_process(
            "etcd",
            [
                str(BIN / "etcd"),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"default={peer_url}",
                "--listen-metrics-urls",
                f"http://127.0.0.1:{free_port()}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self._wait_healthy("etcd", f"{client_url}/health")
        return client_url

    def _start_apiserver(self, port: int, etcd_url: str) -> None:
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            "".join(
                f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in self.users.values()
            )
        )
        tokens.chmod(0o600)
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        pki = self.pki
        self.add_process(
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                # As kubeadm's: privileged pods exist; Pod Security admission decides where.
                "--allow-privileged=true",
                # The default plugins (PodSecurity, ServiceAccount, LimitRanger, ...) stay on.
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Aggregated APIs (metrics adapters) authenticate the API server by this.
                f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
                f"--proxy-client-key-file={pki.front_proxy_client_key}",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxbackup=1",
                "--profiling=false",
                # No cloud, no kubelets to reach: keep the server lean.
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )

    def _start_controllers(self) -> None:
        pki = self.pki
        manager = self.user_kubeconfig("system:kube-controller-manager")
        self.add_process(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={manager}",
                f"--authentication-kubeconfig={manager}",
                f"--authorization-kubeconfig={manager}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--v=1",
            ],
        )
        scheduler = self.user_kubeconfig("system:kube-scheduler")
        self.add_process(
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={scheduler}",
                f"--authentication-kubeconfig={scheduler}",
                f"--authorization-kubeconfig={scheduler}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        stage_args = [f"--config={stage}" for stage in sorted(STAGES.glob("*.yaml"))]
        self.add_process(
            "kwok",
            [
                str(BIN / "kwok"),
                f"--kubeconfig={self.user_kubeconfig('kwok')}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={self.kwok_cidr}",
                "--node-ip=10.244.0.1",
                "--node-lease-duration-seconds=0",
                f"--server-address=127.0.0.1:{free_port()}",
                *stage_args,
            ],
        )

    # ---- waiting ---------------------------------------------------------------------------
    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def _wait_for(self, what: str, ready: Any, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if ready():
                    return
            except (httpx.TransportError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout} s (logs in {self.logs})")
            time.sleep(0.1)

    def _wait_healthy(self, name: str, url: str) -> None:
        secure = url.startswith("https")
        headers = {"Authorization": f"Bearer {self.users['admin'].token}"} if secure else {}
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.pki.ca_cert)) if secure else True
        )

        def healthy() -> bool:
            return httpx.get(url, headers=headers, verify=verify, timeout=2).status_code == 200

        self._wait_for(name, healthy)

    # ---- access --------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (system:masters)."""
        return self.user_kubeconfig("admin")

    def user_kubeconfig(self, user: str) -> Path:
        """A kubeconfig logging in as `user` (a bearer token from the API server's token file)."""
        path = self.workdir / "kubeconfigs" / f"{user.replace(':', '-')}.kubeconfig"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(kubeconfig_yaml(self.server, self.pki.ca_cert, self.users[user].token))
            path.chmod(0o600)
        return path

    def client(self, user: str = "admin", **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {self.users[user].token}"},
            verify=ssl.create_default_context(cafile=str(self.pki.ca_cert)),
            **kwargs,
        )

    def async_client(self, user: str = "admin", **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.server,
            headers={"Authorization": f"Bearer {self.users[user].token}"},
            verify=ssl.create_default_context(cafile=str(self.pki.ca_cert)),
            **kwargs,
        )

    def get(self, path: str) -> dict[str, Any] | None:
        with self.client() as http:
            response = http.get(path, timeout=5)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def kubectl(self, *args: str, user: str = "admin", check: bool = True, **kwargs: Any) -> Any:
        return subprocess.run(
            [str(BIN / "kubectl"), f"--kubeconfig={self.user_kubeconfig(user)}", *args],
            check=check,
            capture_output=True,
            text=True,
            **kwargs,
        )

    # ---- nodes ---------------------------------------------------------------------------------
    def add_node(
        self,
        name: str,
        *,
        gpus: int = 1,
        cpu: str = "32",
        memory: str = "256Gi",
        labels: dict[str, str] | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """A fake node kwok runs: `gpus` of nvidia.com/gpu (and its taint) when gpus > 0."""
        capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
        if gpus:
            capacity[GPU_RESOURCE] = str(gpus)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **(labels or {}),
                },
            },
            "spec": {"taints": [GPU_TAINT] if gpus else []},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        with self.client() as http:
            http.post("/api/v1/nodes", json=node, timeout=10).raise_for_status()
        if wait:
            self._wait_for(f"node {name}", lambda: node_ready(self.get(f"/api/v1/nodes/{name}")))
        return node

    def remove_node(self, name: str) -> None:
        with self.client() as http:
            http.delete(f"/api/v1/nodes/{name}", timeout=10)


def node_ready(node: dict[str, Any] | None) -> bool:
    """Ready, and schedulable: the not-ready taint lifted."""
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    taints = ((node or {}).get("spec") or {}).get("taints") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and not any(
        t["key"].startswith("node.kubernetes.io/") for t in taints
    )


def kubeconfig_yaml(server: str, ca_cert: Path, token: str, name: str = "kuberank-local") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": name, "cluster": {"server": server, "certificate-authority": str(ca_cert)}}
            ],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        }
    )


def main() -> None:
    """`make cluster`: a control plane with two 1-GPU nodes and a CPU node until Ctrl-C."""
    logs = ROOT / "artifacts" / "cluster"  # not the tests' folder: both may run at once
    with tempfile.TemporaryDirectory(prefix="kuberank-cluster-") as workdir:
        with ControlPlane.start(Path(workdir), logs) as cp:
            cp.add_node("gpu-node-1", gpus=1)
            cp.add_node("gpu-node-2", gpus=1)
            cp.add_node("cpu-node-1", gpus=0)  # untainted: the operator's own pod goes there
            kubeconfig = logs / "kubeconfig"
            kubeconfig.write_text(cp.kubeconfig.read_text())
            kubeconfig.chmod(0o600)
            version = json.loads(cp.kubectl("version", "-o", "json").stdout)["serverVersion"]
            print(
                f"Kubernetes {version['gitVersion']} control plane ready in"
                f" {cp.started_seconds:.1f} s (logs in {logs});"
                " kwok runs two 1-GPU nodes and a CPU node. Try:\n\n"
                f"  export KUBECONFIG={kubeconfig}\n"
                f"  export PATH={BIN}:$PATH\n"
                "  kubectl apply -f manifests/\n\n"
                "Ctrl-C stops it (its state goes with it).",
                flush=True,
            )
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            signal.sigwait(stop_signals)
            print("stopping", flush=True)


if __name__ == "__main__":
    main()
