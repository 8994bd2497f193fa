"""Prometheus, prometheus-adapter and KEDA beside the control plane (cluster.py), for the
autoscaling tests and benchmark: Debian's `prometheus`; prometheus-adapter as build.py builds
it, serving custom.metrics.k8s.io through kube-apiserver's aggregator to the real HPA
controller; KEDA's operator (ScaledObjects to HPAs, its triggers' values over mutual-TLS gRPC)
and metrics server (external.metrics.k8s.io), as build.py builds them.

    url = start_prometheus(cp, workdir, config)                  # a prometheus.yml as a dict
    reload_prometheus(cp, workdir, other_config)                 # as prometheus-operator does
    start_prometheus_adapter(cp, workdir, url, rules, relist_interval="5s")
    ...
    start_keda(cp, workdir)                                      # its CRDs, operator, metrics
    stop_prometheus_adapter(cp); cp.stop_process("prometheus")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scripts.control_plane import build, cluster
from scripts.control_plane.cluster import ControlPlane, free_port, wait_ready
from scripts.upstream_crds import KEDA as KEDA_RELEASE

CUSTOM_METRICS = "custom.metrics.k8s.io"
# The HPA controller asks for v1beta2; kubectl and older clients for v1beta1.
CUSTOM_METRICS_VERSIONS = ("v1beta1", "v1beta2")
EXTERNAL_METRICS = "external.metrics.k8s.io"
PROMETHEUS = "prometheus"
ADAPTER = "prometheus-adapter"
KEDA = "keda"
KEDA_NAMESPACE = "keda"
# The name KEDA's metrics server expects the operator's gRPC certificate for.
KEDA_OPERATOR_AUTHORITY = "keda-operator"


def start_prometheus(cp: ControlPlane, workdir: Path, config: dict[str, Any]) -> str:
    """Prometheus with `config` (prometheus.yml's content), stopped with the control plane;
    returns its URL once ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus: `make tools` installs Debian's prometheus package")
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    process = cp.add_process(
        PROMETHEUS,
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/-/ready", process, cp.logs / f"{PROMETHEUS}.log")
    return url


def reload_prometheus(cp: ControlPlane, workdir: Path, config: dict[str, Any]) -> None:
    """Replace the running Prometheus' configuration (prometheus-operator's config reloader
    does the same: the new file, then SIGHUP); its data stays."""
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    cp.processes[PROMETHEUS].send_signal(signal.SIGHUP)


def ensure_built(autoscaler: str) -> None:
    """Build the autoscaler if it is not built as pinned; under CI that is an error (`make`
    builds it before pytest starts)."""
    problem = build.autoscaler_missing(autoscaler)
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{problem}: run `make autoscalers`")
    subprocess.run(
        [sys.executable, "-m", "scripts.control_plane.build", "--autoscalers", autoscaler],
        check=True,
        cwd=build.ROOT,
    )


def start_prometheus_adapter(
    cp: ControlPlane,
    workdir: Path,
    prometheus_url: str,
    rules: list[dict[str, Any]],
    relist_interval: str,
) -> None:
    """prometheus-adapter with these rules over that Prometheus, registered as
    custom.metrics.k8s.io and Available. `relist_interval`: how often it discovers series (a
    new pod's metric exists for the HPA from the next relist)."""
    ensure_built(ADAPTER)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({"rules": rules}))
    port = free_port()
    kubeconfig = str(cp.kubeconfig)
    process = cp.add_process(
        ADAPTER,
        [
            str(build.AUTOSCALERS_BIN / ADAPTER),
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={workdir / 'certs'}",
            f"--lister-kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--prometheus-url={prometheus_url}/",
            f"--config={config}",
            f"--metrics-relist-interval={relist_interval}",
            "--v=2",
        ],
    )
    wait_ready(f"https://127.0.0.1:{port}/healthz", process, cp.logs / f"{ADAPTER}.log")
    cp.register_aggregated_api(CUSTOM_METRICS, CUSTOM_METRICS_VERSIONS, port)


def stop_prometheus_adapter(cp: ControlPlane) -> None:
    cp.remove_aggregated_api(CUSTOM_METRICS, CUSTOM_METRICS_VERSIONS)
    cp.stop_process(ADAPTER)


def _keda_certificates(folder: Path) -> None:
    """ca.crt, tls.crt and tls.key: what KEDA's operator serves its gRPC with and its metrics
    server both presents and verifies the operator by (its chart's cert Secret)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = cluster.x509_name("kuberank-local-keda-ca")
    ca = cluster.certificate(ca_name, ca_key.public_key(), None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names = ("127.0.0.1", "localhost", KEDA_OPERATOR_AUTHORITY)
    leaf = cluster.certificate(
        cluster.x509_name(KEDA_OPERATOR_AUTHORITY),
        key.public_key(),
        (ca_name, ca_key),
        None,
        server_names=names,
        client=True,
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(cluster.pem_key(key))


def start_keda(cp: ControlPlane, workdir: Path) -> None:
    """KEDA's CRDs, then its operator and metrics server, the latter registered as
    external.metrics.k8s.io and Available; they run in the namespace `keda`."""
    ensure_built(KEDA)
    # All of KEDA's CRDs (its manager waits for each kind), from the module it was built from.
    go_env = build.go_env(build.go_root())
    crds = build.module_dir(go_env, KEDA_RELEASE.module, KEDA_RELEASE.version) / "config/crd/bases"
    cp.kubectl("apply", "--server-side", "-f", str(crds))
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    certs = workdir / "certs"
    _keda_certificates(certs)
    with cp.client() as http:
        http.post("/api/v1/namespaces", json={"metadata": {"name": KEDA_NAMESPACE}})
    env = dict(
        os.environ,
        KUBECONFIG=str(cp.kubeconfig),
        WATCH_NAMESPACE="",  # every namespace
        POD_NAMESPACE=KEDA_NAMESPACE,
        KEDA_CLUSTER_OBJECT_NAMESPACE=KEDA_NAMESPACE,
        OPERATOR_NAME="keda-operator",
    )
    grpc, health = free_port(), free_port()
    operator = cp.add_process(
        "keda-operator",
        [
            str(build.AUTOSCALERS_BIN / "keda"),
            f"--cert-dir={certs}",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{health}",
            f"--metrics-service-bind-address=127.0.0.1:{grpc}",
            # No webhooks run and the APIService is ours: nothing of theirs to patch.
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
        ],
        env=env,
    )
    wait_ready(f"http://127.0.0.1:{health}/readyz", operator, cp.logs / "keda-operator.log")
    port = free_port()
    kubeconfig = str(cp.kubeconfig)
    metrics_server = cp.add_process(
        "keda-metrics-server",
        [
            str(build.AUTOSCALERS_BIN / "keda-adapter"),
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            f"--port={free_port()}",  # its own Prometheus metrics (default :8080)
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}",
            f"--metrics-service-address=127.0.0.1:{grpc}",
            f"--metrics-service-grpc-authority={KEDA_OPERATOR_AUTHORITY}",
            f"--lister-kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
        ],
        env=env,
    )
    wait_ready(
        f"https://127.0.0.1:{port}/healthz", metrics_server, cp.logs / "keda-metrics-server.log"
    )
    cp.register_aggregated_api(EXTERNAL_METRICS, ["v1beta1"], port)
