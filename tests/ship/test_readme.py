"""README.md says what is true: its field reference is the CRD's, its commands exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from scripts import field_reference
from scripts.control_plane.build import versions

from kuberank_operator import MINIMUM_KUBERNETES_VERSION

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text()


def _section(title: str) -> str:
    pattern = rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)"
    match = re.search(pattern, README, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def _code_blocks(text: str, language: str = r"\w*") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_field_reference_matches_the_crd() -> None:
    assert field_reference.main(["--check"]) == 0, (
        "README.md's field reference has drifted from the CRD: "
        "run `python -m scripts.field_reference`"
    )


def test_field_reference_check_catches_a_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    drifted = tmp_path / "README.md"
    drifted.write_text(README.replace("| `spec.model.name` |", "| `spec.model.id` |"))
    monkeypatch.setattr(field_reference, "README_PATH", drifted)

    assert field_reference.main(["--check"]) == 1
    assert "differs from the CRD" in capsys.readouterr().err
    assert field_reference.main([]) == 0  # regenerating repairs it
    assert drifted.read_text() == README


def test_field_reference_lists_every_field_the_crd_declares() -> None:
    schema = field_reference.load_schema()
    spec = schema["properties"]["spec"]["properties"]
    reference = _section("RerankerService field reference")
    for group, group_schema in spec.items():
        for field in group_schema.get("properties", {}) or [None]:
            path = f"spec.{group}" + (f".{field}" if field else "")
            assert f"| `{path}` |" in reference, f"{path} missing from the README reference"


def test_the_stated_minimum_kubernetes_is_the_operators() -> None:
    deploy = _section("Deploy to a cluster")
    assert f"You need Kubernetes {MINIMUM_KUBERNETES_VERSION} or later" in deploy
    stated = set(re.findall(r"Kubernetes (1\.\d+)(?:\+| or later)", README))
    assert stated == {MINIMUM_KUBERNETES_VERSION}, f"README states other minimums: {stated}"


def test_the_tested_kubernetes_is_the_control_plane_built_here() -> None:
    built = versions()["kubernetes"]
    assert f"tested on {built.removeprefix('v')}" in _section("Deploy to a cluster")
    assert f"Kubernetes {built}" in _section("Two commands")
    assert set(re.findall(r"Kubernetes (v1\.\d+\.\d+)", README)) == {built}


def test_the_newcomer_commands_are_exactly_make_run_and_make_test() -> None:
    commands = [
        line.split("#")[0].strip()
        for block in _code_blocks(_section("Two commands"), "sh")
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands == ["make run", "make test"]


def test_every_make_target_the_readme_names_exists() -> None:
    help_text = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    targets = set(re.findall(r"^\s+make (\S+)", help_text, re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", README)) | set(
        re.findall(r"^make ([a-z][a-z0-9-]*)", README, re.MULTILINE)
    )
    assert named, "README.md names no make target"
    assert named <= targets, f"README.md names targets `make help` lacks: {named - targets}"


def test_every_relative_link_in_the_readme_exists() -> None:
    links = re.findall(r"\]\((?!https?://|#|mailto:)([^)#\s]+)", README)
    missing = [link for link in links if not (REPO_ROOT / link).exists()]
    assert not missing, f"README.md links to missing paths: {missing}"


def test_every_file_the_readme_applies_or_installs_exists() -> None:
    commands = "\n".join(_code_blocks(README))
    paths = re.findall(r"(?:-f|helm install \S+) ((?:manifests|charts)/\S*)", commands)
    assert paths, "README.md applies or installs nothing from the repository"
    missing = [path for path in paths if not (REPO_ROOT / path).exists()]
    assert not missing, f"README.md's commands use missing paths: {missing}"
