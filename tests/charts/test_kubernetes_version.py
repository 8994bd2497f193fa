"""The charts state the minimum Kubernetes the operator defines, and helm enforces it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.charts.rendering import MONITORING_CHART, OPERATOR_CHART, helm

from kuberank_operator import MINIMUM_KUBERNETES_VERSION

pytestmark = pytest.mark.helm

CHARTS = (OPERATOR_CHART, MONITORING_CHART)
MAJOR, MINOR = (int(part) for part in MINIMUM_KUBERNETES_VERSION.split("."))


@pytest.mark.parametrize("chart", CHARTS, ids=lambda path: path.name)
def test_chart_kube_version_is_the_minimum(chart: Path) -> None:
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    # `-0` lets pre-release and provider builds (v1.30.2-gke.1) of the minimum match.
    assert metadata["kubeVersion"] == f">={MINIMUM_KUBERNETES_VERSION}.0-0"


@pytest.mark.parametrize("chart", CHARTS, ids=lambda path: path.name)
def test_helm_refuses_a_cluster_older_than_the_minimum(chart: Path) -> None:
    older = helm("template", "kuberank", str(chart), "--kube-version", f"{MAJOR}.{MINOR - 1}.9")
    assert older.returncode != 0 and "kubeVersion" in older.stderr, older.stderr
    oldest = helm("template", "kuberank", str(chart), "--kube-version", f"{MAJOR}.{MINOR}.0")
    assert oldest.returncode == 0, oldest.stderr
