"""Prometheus and prometheus-adapter beside the control plane (cluster.py), for the autoscaling
tests and benchmark: Debian's `prometheus`, and prometheus-adapter as build.py builds it,
serving custom.metrics.k8s.io through kube-apiserver's aggregator to the real HPA controller.

    url = start_prometheus(cp, workdir, config)                  # a prometheus.yml as a dict
    reload_prometheus(cp, workdir, other_config)                 # as prometheus-operator does
    start_prometheus_adapter(cp, workdir, url, rules, relist_interval="5s")
    ...
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

from scripts.control_plane import build
from scripts.control_plane.cluster import ControlPlane, free_port, wait_ready

CUSTOM_METRICS = "custom.metrics.k8s.io"
# The HPA controller asks for v1beta2; kubectl and older clients for v1beta1.
CUSTOM_METRICS_VERSIONS = ("v1beta1", "v1beta2")
PROMETHEUS = "prometheus"
ADAPTER = "prometheus-adapter"


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


def ensure_adapter_built() -> None:
    """Build prometheus-adapter if it is not built as pinned; under CI that is an error
    (`make test` builds it before pytest starts)."""
    problem = build.autoscaler_missing(ADAPTER)
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{problem}: run `make autoscalers`")
    subprocess.run(
        [sys.executable, "-m", "scripts.control_plane.build", "--autoscalers", ADAPTER],
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
    ensure_adapter_built()
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
