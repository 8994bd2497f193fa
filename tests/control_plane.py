"""The session's real Kubernetes control plane (a pytest plugin, loaded by tests/conftest.py).

`control_plane` starts scripts/control_plane's etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok once per session, with two fake 1-GPU nodes (`gpu-node-1`,
`gpu-node-2`), and stops them at the end; logs and the audit log go to
artifacts/control-plane/. The binaries are built on first use (`make test` builds them before
pytest starts); under CI (CI=true) a missing or stale build fails the run instead.
Tests using it carry the `control_plane` marker.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripts.control_plane import build
from scripts.control_plane.cluster import ControlPlane, User

# The operator's own user (a master here; the RBAC test logs in with the chart's account):
# its name tells its requests apart in the audit log.
OPERATOR_USER = "kuberank-operator"
GPU_NODES = ("gpu-node-1", "gpu-node-2")


def ensure_built() -> None:
    problem = build.missing()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the control plane is not built ({problem}): run `make control-plane`")
    subprocess.run(
        [sys.executable, "-m", "scripts.control_plane.build"], check=True, cwd=build.ROOT
    )


@pytest.fixture(scope="session")
def control_plane(
    artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    ensure_built()
    logs = artifacts_dir / "control-plane"
    operator = User(OPERATOR_USER, secrets.token_hex(16), ("system:masters",))
    workdir = tmp_path_factory.mktemp("control-plane")
    with ControlPlane.start(workdir, logs, extra_users=[operator]) as cp:
        for node in GPU_NODES:
            cp.add_node(node, gpus=1)
        (logs / "start.json").write_text(json.dumps({"ready_seconds": cp.started_seconds}) + "\n")
        yield cp
