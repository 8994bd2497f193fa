"""Suite-wide fixtures: hardware/cluster gating and one real server process per session.

`live_server` is a real `kuberank-server serve` subprocess on the embedded default model,
shared by every part that needs a running server over the network (the UI's browser test,
Prometheus scraping, the README's curl). Start-up costs ~40 s, so it is started once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import LiveServer, engine_test_env, free_port, wait_ready

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = REPO_ROOT / "artifacts"
LIVE_SERVER_SECRET = "live-server-test-secret-0123456789abcdef"

pytest_plugins = ["tests.control_plane"]


def _has_gpu() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0
    )


def _has_cluster() -> bool:
    docker = shutil.which("docker")
    return (
        docker is not None
        and shutil.which("kind") is not None
        and subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gates = {
        "gpu": (_has_gpu, "needs an NVIDIA GPU (none here)"),
        "cluster": (_has_cluster, "needs kind and a running Docker engine (none here)"),
    }
    for marker, (available, reason) in gates.items():
        marked = [item for item in items if item.get_closest_marker(marker)]
        if marked and not available():
            for item in marked:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files worth keeping (screenshots, logs, rendered charts)."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def live_server(artifacts_dir: Path) -> Iterator[LiveServer]:
    port, metrics_port = free_port(), free_port()
    log_path = artifacts_dir / "live-server.log"
    env = engine_test_env() | {"KUBERANK_JWT_SECRET": LIVE_SERVER_SECRET}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kuberank_server.commands.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(
        url=f"http://127.0.0.1:{port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        secret=LIVE_SERVER_SECRET,
        log_path=log_path,
        process=process,
    )
    try:
        wait_ready(server, timeout_seconds=300)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
