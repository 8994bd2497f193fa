"""Generated copies (`make manifests`) match their sources, and manifests/ is a complete install."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from scripts import generate
from tests.charts.rendering import MANIFESTS, REPO_ROOT
from tests.kubernetes_versions import validate_for_supported_kubernetes

pytestmark = pytest.mark.helm


def _objects(path: Path) -> list[dict[str, Any]]:
    return [obj for obj in yaml.safe_load_all(path.read_text()) if obj]


def test_no_generated_file_has_drifted_from_its_source() -> None:
    """The chart's CRD and samples, the adapter values, and manifests/ are what
    `make manifests` makes of the operator's files and the charts now."""
    stale = generate.stale_files(generate.generate())
    assert stale == [], "run `make manifests`; stale: " + ", ".join(
        str(path.relative_to(REPO_ROOT)) for path in stale
    )


def test_drift_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand edit of a generated file, or a file nobody generates, is reported."""
    files = generate.generate()
    edited = generate.CHART_CRD
    monkeypatch.setattr(generate, "MANIFESTS", tmp_path)
    (tmp_path / "stray.yaml").write_text("kind: ConfigMap\n")
    files[edited] = files[edited] + "# a hand edit\n"
    assert generate.stale_files(files) == sorted([edited, tmp_path / "stray.yaml"])


def test_check_mode_writes_nothing_and_passes_when_fresh() -> None:
    before = {path: path.read_text() for path in MANIFESTS.rglob("*.yaml")}
    assert generate.main(["--check"]) == 0
    assert {path: path.read_text() for path in MANIFESTS.rglob("*.yaml")} == before


def test_kubectl_apply_of_the_folder_installs_namespace_crd_rbac_and_operator_in_order() -> None:
    """`kubectl apply -f manifests/` takes the folder's files sorted by name, not recursively:
    the namespace comes first, and the samples (custom resources, which need the CRD
    established) stay out of it, in manifests/samples/."""
    files = sorted(MANIFESTS.glob("*.yaml"))
    kinds = [obj["kind"] for path in files for obj in _objects(path)]
    assert kinds[0] == "Namespace"
    assert kinds.index("CustomResourceDefinition") < kinds.index("Deployment")
    assert set(kinds) >= {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    }
    assert "RerankerService" not in kinds and "Secret" not in kinds
    namespace = _objects(files[0])[0]["metadata"]["name"]
    for path in files:
        for obj in _objects(path):
            validate_for_supported_kubernetes(obj)
            if obj["kind"] in {"ServiceAccount", "Deployment", "NetworkPolicy"}:
                assert obj["metadata"]["namespace"] == namespace
    binding = next(
        obj for path in files for obj in _objects(path) if obj["kind"] == "ClusterRoleBinding"
    )
    assert binding["subjects"][0]["namespace"] == namespace


def test_manifests_carry_no_helm_only_annotation() -> None:
    """helm.sh/resource-policy means nothing to kubectl; the CRD is rendered without it."""
    for path in MANIFESTS.rglob("*.yaml"):
        assert "helm.sh/resource-policy" not in path.read_text(), path


@pytest.mark.parametrize("kind", ["gpu", "cpu"], ids=["gpu-sample", "cpu-sample"])
def test_manifests_hold_a_gpu_and_a_cpu_sample(kind: str) -> None:
    (sample,) = _objects(MANIFESTS / "samples" / f"rerankerservice-{kind}.yaml")
    assert sample["kind"] == "RerankerService"
    assert "namespace" not in sample["metadata"], "goes where `kubectl apply -n` says"
    assert (sample["spec"]["resources"]["gpu"] > 0) == (kind == "gpu")
