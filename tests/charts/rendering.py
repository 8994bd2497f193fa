"""Rendering the charts with the real helm binary (import as `tests.charts.rendering`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
OPERATOR_CHART = REPO_ROOT / "charts" / "kuberank"
MONITORING_CHART = REPO_ROOT / "charts" / "kuberank-monitoring"
MANIFESTS = REPO_ROOT / "manifests"


def scenarios(chart: Path) -> list[Path]:
    return sorted((chart / "ci").glob("*-values.yaml"))


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=False)


def render_text(
    chart: Path, *args: str, release: str = "kuberank", namespace: str = "kuberank"
) -> str:
    result = helm("template", release, str(chart), "--namespace", namespace, *args)
    assert result.returncode == 0, f"helm template {chart.name} {args} failed:\n{result.stderr}"
    return result.stdout


def render(
    chart: Path, *args: str, release: str = "kuberank", namespace: str = "kuberank"
) -> list[dict[str, Any]]:
    """`helm template` output as objects; args are extra helm flags (-f, --set)."""
    text = render_text(chart, *args, release=release, namespace=namespace)
    return [obj for obj in yaml.safe_load_all(text) if obj]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]
