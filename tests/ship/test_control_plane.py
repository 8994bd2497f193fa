"""The local control plane (scripts/control_plane) is what it claims: the pinned versions, RBAC
and Pod Security admission on, kwok's GPU nodes Ready with their capacity and taint."""

from __future__ import annotations

import json
import subprocess

import pytest
from scripts.control_plane.build import BIN, versions
from scripts.control_plane.cluster import GPU_RESOURCE, GPU_TAINT, ControlPlane
from tests.control_plane import GPU_NODES

pytestmark = pytest.mark.control_plane


def test_every_binary_is_the_pinned_version(control_plane: ControlPlane) -> None:
    pinned = versions()
    reported = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert reported["serverVersion"]["gitVersion"] == pinned["kubernetes"]
    assert reported["clientVersion"]["gitVersion"] == pinned["kubernetes"]
    for binary in ("kube-controller-manager", "kube-scheduler"):
        out = subprocess.run([BIN / binary, "--version"], capture_output=True, text=True).stdout
        assert out.strip() == f"Kubernetes {pinned['kubernetes']}"
    etcd = subprocess.run([BIN / "etcd", "--version"], capture_output=True, text=True).stdout
    assert f"etcd Version: {pinned['etcd'].removeprefix('v')}" in etcd
    kwok = subprocess.run([BIN / "kwok", "--version"], capture_output=True, text=True).stdout
    assert kwok.startswith(f"kwok version {pinned['kwok']}")


def test_the_gpu_nodes_are_ready_with_their_gpus_and_taint(control_plane: ControlPlane) -> None:
    nodes = control_plane.get("/api/v1/nodes")
    assert nodes is not None
    by_name = {n["metadata"]["name"]: n for n in nodes["items"]}
    for name in GPU_NODES:
        node = by_name[name]
        assert node["status"]["allocatable"][GPU_RESOURCE] == "1"
        assert {"key": GPU_TAINT["key"], "value": GPU_TAINT["value"], "effect": "NoSchedule"} in (
            node["spec"]["taints"]
        )
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"


def test_rbac_and_pod_security_admission_decide(control_plane: ControlPlane) -> None:
    with control_plane.client("system:kube-scheduler") as scheduler:
        assert scheduler.get("/api/v1/secrets").status_code == 403  # not in its ClusterRole
    restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
    namespace = {"apiVersion": "v1", "kind": "Namespace"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "securityContext": {"privileged": True}}
            ]
        },
    }
    with control_plane.client() as admin:
        admin.post(
            "/api/v1/namespaces",
            json=namespace | {"metadata": {"name": "psa-check", "labels": restricted}},
        ).raise_for_status()
        try:
            refused = admin.post("/api/v1/namespaces/psa-check/pods", json=pod)
        finally:
            admin.delete("/api/v1/namespaces/psa-check")
    assert refused.status_code == 403
    assert 'violates PodSecurity "restricted:latest": privileged' in refused.json()["message"]
