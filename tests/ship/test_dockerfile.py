"""The Dockerfile: hadolint-clean under our config, and consistent with what runs its images."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    # From the repository root and without -c, as `make lint` runs it: .hadolint.yaml is
    # picked up from the working directory.
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _stages() -> dict[str, str]:
    """Stage name -> its text, from `FROM <image> AS <name>` to the next FROM."""
    parts = re.split(r"^(?=FROM )", DOCKERFILE, flags=re.MULTILINE)
    stages: dict[str, str] = {}
    for part in parts:
        match = re.match(r"FROM \S+ AS (\S+)", part)
        if match:
            stages[match.group(1)] = part
    return stages


def _image_uid(stage: str) -> int:
    user = re.findall(r"^USER (\S+)", _stages()[stage], flags=re.MULTILINE)
    assert user, f"target {stage} sets no USER: it would run as root"
    uid_text = user[-1].split(":")[0]
    if uid_text == "${APP_UID}":
        default = re.search(r"^ARG APP_UID=(\d+)$", DOCKERFILE, flags=re.MULTILINE)
        assert default, "APP_UID has no default"
        uid_text = default.group(1)
    assert uid_text.isdigit(), (
        f"USER {uid_text} of {stage} is not numeric: runAsNonRoot can't check"
    )
    return int(uid_text)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = _hadolint(REPO_ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("dockerfile", "finding"),
    [
        ("FROM quay.io/someone/python:3.11\n", "DL3026"),  # registry not in trustedRegistries
        # An info-level finding alone still fails: failure-threshold is `style`.
        (
            "FROM python:3.11-slim\nRUN apt-get update && apt-get install -y libnuma1=2.0.16-1 "
            "&& rm -rf /var/lib/apt/lists/*\n",
            "DL3015",
        ),
    ],
)
def test_hadolint_config_is_in_force(tmp_path: Path, dockerfile: str, finding: str) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    result = _hadolint(path)
    assert result.returncode != 0
    assert finding in result.stdout


def test_the_three_targets_exist_and_run_as_a_numeric_non_root_user() -> None:
    for target in ("server", "server-cpu", "operator"):
        assert _image_uid(target) > 0


def test_gpu_target_starts_from_the_vllm_release_pyproject_pins() -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (vllm_pin,) = [pin for pin in extras["gpu"] if pin.startswith("vllm==")]
    vllm_image = re.search(r"^ARG VLLM_IMAGE=(\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert vllm_image
    assert vllm_image.group(1) == f"vllm/vllm-openai:v{vllm_pin.removeprefix('vllm==')}"
    assert re.search(r"^FROM \$\{VLLM_IMAGE\} AS server$", DOCKERFILE, flags=re.MULTILINE)


def test_images_run_as_the_user_their_pods_ask_for() -> None:
    """The pod's runAsUser must own the image's home, or vLLM's and HF's caches fail."""
    from kuberank_operator.builders import deployment

    assert deployment.SERVER_UID == _image_uid("server") == _image_uid("server-cpu")
    helpers = (REPO_ROOT / "charts" / "kuberank" / "templates" / "_helpers.tpl").read_text()
    chart_uids = {int(uid) for uid in re.findall(r"runAsUser: (\d+)", helpers)}
    # The chart runs the operator image, and the playground from the server-cpu image.
    assert chart_uids == {_image_uid("operator")} == {_image_uid("server-cpu")}


def test_build_context_holds_what_the_source_stage_copies() -> None:
    dockerignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line.removeprefix("!").rstrip("/") for line in dockerignore if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for line in _stages()["source"].splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert copied == allowed


def test_workflows_run_the_readme_commands() -> None:
    workflows = REPO_ROOT / ".github" / "workflows"
    ci = yaml.safe_load((workflows / "ci.yaml").read_text())
    e2e = yaml.safe_load((workflows / "e2e.yaml").read_text())

    def runs(workflow: dict[object, Any]) -> list[str]:
        jobs = workflow["jobs"].values()
        return [step["run"] for job in jobs for step in job["steps"] if "run" in step]

    def triggers(workflow: dict[object, Any]) -> set[str]:
        return set(workflow[True])  # YAML 1.1 (PyYAML) reads the key `on` as true

    assert triggers(ci) == {"push", "pull_request"}
    assert runs(ci) == [".ci/run", "make lint"]
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    assert triggers(e2e) == {"push"}
    assert runs(e2e) == ["make e2e"]
