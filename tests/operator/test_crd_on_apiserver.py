"""The generated CRD on the real kube-apiserver: accepted, explained, defaulted, CEL-validated."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from tests.operator.harness import RERANKERS
from tests.operator.real_cluster import Cluster
from tests.operator.spec_cases import CASES, HS_KEY

from kuberank_operator.spec import InvalidSpecError, ModelSpec, RerankerSpec, parse_spec

pytestmark = pytest.mark.control_plane

CRD_NAME = "rerankerservices.kuberank.io"


def rrs(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kuberank.io/v1alpha1",
        "kind": "RerankerService",
        "metadata": {"name": name},
        "spec": {"model": {"name": "m"}, **spec},
    }


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_generated_crd_is_accepted_structural_and_established(kube: Cluster) -> None:
    crd = kube.cp.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    assert crd is not None
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    # A non-structural schema or a CEL rule over the cost budget would have been refused or
    # flagged here (NonStructuralSchema).
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    printed = kube.kubectl("get", "rrs").stdout + kube.kubectl("get", "rrs").stderr
    assert "No resources found" in printed  # the short name resolves through discovery


@pytest.mark.parametrize(
    ("path", "model"), [("rerankerservices.spec", RerankerSpec), ("rrs.spec.model", ModelSpec)]
)
def test_kubectl_explain_shows_the_models_field_descriptions(
    kube: Cluster, path: str, model: type[BaseModel]
) -> None:
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    explain = kube.wait_until(
        lambda: (result := kube.kubectl("explain", path, check=False)).returncode == 0 and result,
        f"kubectl explain {path}",
    )
    explained = words(explain.stdout)
    for name, info in model.model_fields.items():
        assert info.description, name
        alias = info.alias or name
        assert alias in explained
        assert words(info.description) in explained, f"{path}.{alias}"


def test_a_minimal_resource_reads_back_with_every_default_of_the_spec_models(
    kube: Cluster,
) -> None:
    minimal = {"model": {"name": "m"}, "auth": HS_KEY}
    kube.create(RERANKERS, rrs("minimal", {"auth": HS_KEY}))
    stored = kube.get(RERANKERS, "minimal")
    assert stored is not None
    expected = RerankerSpec.model_validate(minimal).model_dump(by_alias=True, exclude_none=True)
    assert stored["spec"] == expected


@pytest.mark.parametrize(("spec", "expected"), CASES)
def test_the_api_server_and_the_python_validator_agree(
    kube: Cluster, spec: dict[str, Any], expected: str | None
) -> None:
    response = kube.http.post(
        kube.path(RERANKERS), params={"dryRun": "All"}, json=rrs("case", spec)
    )
    if expected is None:
        assert response.status_code == 201, response.text
        parse_spec(response.json()["spec"])  # the API server's defaulted spec
    else:
        assert response.status_code == 422, response.text
        status = response.json()
        assert expected in status["message"]
        causes = status["details"]["causes"]
        assert len(causes) == 1 and expected in causes[0]["message"]
        with pytest.raises(InvalidSpecError, match=expected):
            parse_spec({"model": {"name": "m"}, **spec})
