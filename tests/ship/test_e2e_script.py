"""`make e2e` and `make images`: never silently green where there is no Docker engine.

The real end-to-end run needs kind and a Docker engine; it is the `cluster` test at the end
(skipped here, run by .github/workflows/e2e.yaml on every push).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# `-o` keeps make from refreshing the set-up these targets depend on (it is done already):
# the test is about the script, not about reinstalling .venv.
MAKE = ["make", "--no-print-directory", "-o", ".venv/.installed", "-o", ".tools/bin/helm"]


def _make(target: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAKE, target],
        cwd=REPO_ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _fake_docker(directory: Path, info_exit_code: int) -> Path:
    """Stand-in docker client: `info` answers like a client whose engine is down (or up)."""
    fake_docker = directory / "fake_docker"
    fake_docker.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "docker $*" >> "{directory}/fake_docker.calls"\n'
        f"if [ {info_exit_code} -ne 0 ]; then\n"
        '  echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2\n'
        "fi\n"
        f"exit {info_exit_code}\n"
    )
    fake_docker.chmod(0o755)
    return fake_docker


@pytest.mark.parametrize("target", ["e2e", "images"])
def test_without_a_docker_client_it_says_so_and_fails(target: str) -> None:
    result = _make(target, DOCKER="/nonexistent/docker")

    assert result.returncode != 0
    assert (
        f"make {target}: needs a Docker engine, but the Docker client '/nonexistent/docker' "
        "is not installed"
    ) in result.stderr
    assert "==> " not in result.stdout  # stopped before its first step


@pytest.mark.parametrize("target", ["e2e", "images"])
def test_with_the_engine_down_it_says_so_and_fails(target: str, tmp_path: Path) -> None:
    result = _make(target, DOCKER=str(_fake_docker(tmp_path, info_exit_code=1)))

    assert result.returncode != 0
    assert f"make {target}: needs a Docker engine, but '" in result.stderr
    assert "Cannot connect to the Docker daemon" in result.stderr  # the engine's own words
    assert "Start the Docker engine" in result.stderr
    # It asked the engine once and did nothing else: no build, no cluster.
    assert (tmp_path / "fake_docker.calls").read_text().splitlines() == ["docker info"]


def test_images_rejects_an_unknown_target_before_touching_docker(tmp_path: Path) -> None:
    fake_docker = _fake_docker(tmp_path, info_exit_code=0)
    result = subprocess.run(
        ["scripts/images.sh", "server-gpu"],
        cwd=REPO_ROOT,
        env=os.environ | {"DOCKER": str(fake_docker)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "images.sh: unknown target 'server-gpu'" in result.stderr
    assert not (tmp_path / "fake_docker.calls").exists()


@pytest.mark.cluster
def test_make_e2e_passes_on_a_kind_cluster() -> None:
    result = subprocess.run([*MAKE, "e2e"], cwd=REPO_ROOT, timeout=3600, check=False)
    assert result.returncode == 0, "make e2e failed; see its output and artifacts/e2e/"
