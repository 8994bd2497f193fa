"""charts/kuberank, rendered by the real helm: lint, schema, and what each scenario installs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from tests.charts.rendering import (
    OPERATOR_CHART,
    by_kind,
    helm,
    only,
    render,
    render_text,
    scenarios,
)
from tests.kubernetes_versions import validate_for_supported_kubernetes
from tests.operator.test_spec import to_openapi_jsonschema

pytestmark = pytest.mark.helm

CRD_SOURCE = OPERATOR_CHART.parents[1] / "operator/kuberank_operator/crd/rerankerservices.yaml"
SCENARIOS = scenarios(OPERATOR_CHART)


def _crd_schema() -> dict[str, Any]:
    """The CRD's structural schema as JSON Schema (the operator tests' conversion)."""
    crd = yaml.safe_load(CRD_SOURCE.read_text())
    return dict(to_openapi_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))


def _operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(
        d
        for d in by_kind(objects, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    )
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_every_scenario_is_covered() -> None:
    names = {path.name for path in SCENARIOS}
    assert names == {
        "default-values.yaml",
        "namespaced-values.yaml",
        "sample-secret-values.yaml",
        "playground-values.yaml",
        "crds-off-values.yaml",
    }


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda path: path.stem)
def test_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(OPERATOR_CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda path: path.stem)
def test_every_rendered_object_is_valid_kubernetes(values: Path) -> None:
    """Core objects against the API's own schemas (strict: no unknown fields), for the oldest
    and newest Kubernetes supported; RerankerServices against the CRD's schema."""
    objects = render(OPERATOR_CHART, "-f", str(values))
    assert objects
    for obj in objects:
        if obj["kind"] == "RerankerService":
            jsonschema.validate(obj, _crd_schema())
            continue
        validate_for_supported_kubernetes(obj)


def test_defaults_install_the_crd_kept_on_uninstall_cluster_rbac_and_the_operator() -> None:
    objects = render(OPERATOR_CHART)
    assert sorted(obj["kind"] for obj in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "NetworkPolicy",
        "ServiceAccount",
    ]
    crd = only(objects, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    source = yaml.safe_load(CRD_SOURCE.read_text())
    assert crd["spec"] == source["spec"], "the chart's CRD differs from the operator's"
    assert crd["metadata"]["labels"].items() >= source["metadata"]["labels"].items()


def test_crds_keep_off_lets_helm_delete_the_crd_and_crds_off_installs_none() -> None:
    crd = only(render(OPERATOR_CHART, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"]
    off = render(OPERATOR_CHART, "-f", str(OPERATOR_CHART / "ci/crds-off-values.yaml"))
    assert not by_kind(off, "CustomResourceDefinition")
    assert by_kind(off, "Deployment"), "the operator itself is still installed"


def test_values_warn_that_removing_the_crd_deletes_every_rerankerservice() -> None:
    values_text = (OPERATOR_CHART / "values.yaml").read_text()
    assert "removing the CRD deletes every RerankerService" in values_text


def test_operator_deployment_is_one_recreated_restricted_replica_probed_on_kopf_liveness() -> None:
    objects = render(OPERATOR_CHART, "--set", "operator.livenessPort=8181")
    deployment = only(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["command"] == ["kuberank-operator"]
    assert container["image"] == "ghcr.io/kuberank/kuberank-operator:0.1.0"
    assert container["ports"] == [{"name": "healthz", "containerPort": 8181, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["resources"]["limits"] and container["resources"]["requests"]
    env = _env(container)
    assert env["KUBERANK_OPERATOR_LIVENESS_PORT"] == "8181"
    assert env["KUBERANK_OPERATOR_GPU_IMAGE"] == "ghcr.io/kuberank/kuberank-server:0.1.0"
    assert env["KUBERANK_OPERATOR_CPU_IMAGE"] == "ghcr.io/kuberank/kuberank-server:0.1.0-cpu"
    assert env["KUBERANK_OPERATOR_NAMESPACES"] == ""
    # The selector never carries the version (immutable on a Deployment).
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "kuberank-operator",
        "app.kubernetes.io/instance": "kuberank",
    }


def test_every_operator_env_var_is_a_setting_the_operator_reads() -> None:
    from kuberank_operator.settings import OperatorSettings

    env = _env(_operator_container(render(OPERATOR_CHART)))
    fields = {f"KUBERANK_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(env) <= fields, f"unknown settings: {set(env) - fields}"
    settings = OperatorSettings(
        **{  # what the pod's operator will run with
            name.removeprefix("KUBERANK_OPERATOR_").lower(): value
            for name, value in env.items()
            if value != ""
        }
    )
    assert settings.liveness_port == 8080 and settings.namespaces == []


def _settings_of(objects: list[dict[str, Any]]) -> Any:
    from kuberank_operator.settings import OperatorSettings

    env = _env(_operator_container(objects))
    return OperatorSettings(
        **{name.removeprefix("KUBERANK_OPERATOR_").lower(): value for name, value in env.items()}
    )


def test_the_autoscaling_defaults_reach_the_operator_as_its_own_defaults() -> None:
    """The chart's driver choices are the operator's (auto, then the contract's drivers), and
    its defaults are the operator's: auto, and the Prometheus the adapter values also use."""
    from typing import get_args

    from kuberank_contract import AUTOSCALING_DRIVERS
    from kuberank_operator.settings import DefaultAutoscalingDriver, OperatorSettings

    schema = yaml.safe_load((OPERATOR_CHART / "values.schema.json").read_text())
    choices = schema["properties"]["operator"]["properties"]["autoscalingDriver"]["enum"]
    assert tuple(choices) == ("auto", *AUTOSCALING_DRIVERS)
    assert set(choices) == {
        arg for part in get_args(DefaultAutoscalingDriver) for arg in get_args(part)
    }
    settings = _settings_of(render(OPERATOR_CHART))
    defaults = OperatorSettings()
    assert settings.autoscaling_driver == defaults.autoscaling_driver == "auto"
    assert settings.keda_prometheus_url == defaults.keda_prometheus_url
    assert settings.keda_authentication_name is None
    chosen = _settings_of(
        render(
            OPERATOR_CHART,
            "--set",
            "operator.autoscalingDriver=hpa",
            "--set",
            "operator.keda.authentication.name=prometheus-auth",
            "--set",
            "operator.keda.authentication.kind=ClusterTriggerAuthentication",
        )
    )
    assert chosen.autoscaling_driver == "hpa"
    assert (chosen.keda_authentication_name, chosen.keda_authentication_kind) == (
        "prometheus-auth",
        "ClusterTriggerAuthentication",
    )


def test_watch_namespaces_gives_a_role_per_namespace_and_tells_the_operator() -> None:
    objects = render(OPERATOR_CHART, "-f", str(OPERATOR_CHART / "ci/namespaced-values.yaml"))
    roles = by_kind(objects, "Role")
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "kuberank-operator", "namespace": "kuberank"}
        ]
    assert _env(_operator_container(objects))["KUBERANK_OPERATOR_NAMESPACES"] == "team-a,team-b"
    cluster_role = only(objects, "ClusterRole")
    assert {group for rule in cluster_role["rules"] for group in rule["apiGroups"]} == {
        "apiextensions.k8s.io",
        "",
    }, "namespaced mode grants nothing cluster-wide but the CRD scan and namespaces"


def test_jwt_secret_is_off_by_default_and_random_when_on() -> None:
    assert not by_kind(render(OPERATOR_CHART), "Secret")
    keys = []
    for _ in range(2):
        secret = only(render(OPERATOR_CHART, "--set", "jwtSecret.create=true"), "Secret")
        assert secret["metadata"]["name"] == "rerank-jwt"
        assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        keys.append(base64.b64decode(secret["data"]["secret"]).decode())
    assert all(len(key) == 64 and key.isalnum() for key in keys)
    assert keys[0] != keys[1], "the key must be random, not a constant of the chart"


def test_jwt_secret_template_reuses_an_existing_key_on_upgrade() -> None:
    """`helm template` cannot look up, so this reads the template: a key found in the live
    Secret is kept; only a missing one is generated."""
    template = (OPERATOR_CHART / "templates/jwt-secret.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace .Values.jwtSecret.name' in template
    assert "randAlphaNum 64" in template
    assert "changeme" not in template.lower()


# ids avoid the bare word "gpu", which tests/conftest.py reads as the GPU marker.
@pytest.mark.parametrize("kind", ["gpu", "cpu"], ids=["gpu-sample", "cpu-sample"])
def test_sample_is_the_operators_sample_pointed_at_the_charts_secret(kind: str) -> None:
    objects = render(
        OPERATOR_CHART,
        "--set",
        "sample.enabled=true",
        "--set",
        f"sample.kind={kind}",
        "--set",
        "sample.name=my-ranker",
        "--set",
        "jwtSecret.name=my-key",
        "--set",
        "jwtSecret.key=hs256",
    )
    sample = only(objects, "RerankerService")
    source = yaml.safe_load(
        (OPERATOR_CHART.parents[1] / f"operator/kuberank_operator/samples/{kind}.yaml").read_text()
    )
    assert sample["metadata"] == {"name": "my-ranker"}
    assert sample["spec"]["auth"]["secretRef"] == {"name": "my-key", "key": "hs256"}
    source["spec"]["auth"]["secretRef"] = sample["spec"]["auth"]["secretRef"]
    assert sample["spec"] == source["spec"]
    jsonschema.validate(sample, _crd_schema())
    assert (sample["spec"]["resources"]["gpu"] > 0) == (kind == "gpu")


def test_playground_runs_the_ui_from_the_cpu_image_against_the_service() -> None:
    objects = render(OPERATOR_CHART, "-f", str(OPERATOR_CHART / "ci/playground-values.yaml"))
    playground = next(
        d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-playground")
    )
    pod = playground["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/kuberank/kuberank-server:0.1.0-cpu"
    assert [*container["command"], *container["args"]] == [
        "kuberank-server",
        "ui",
        "--url",
        "http://reranker:8000",
        "--host",
        "0.0.0.0",
        "--port",
        "7860",
    ]
    assert _env(container)["KUBERANK_UI_TOKEN"] == {
        "secretKeyRef": {"name": "kuberank-playground-token", "key": "token"}
    }
    service = next(
        s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-playground")
    )
    assert service["spec"]["selector"] == playground["spec"]["selector"]["matchLabels"]
    policy = next(
        p
        for p in by_kind(objects, "NetworkPolicy")
        if p["metadata"]["name"].endswith("-playground")
    )
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert not any(
        d["metadata"]["name"].endswith("-playground")
        for d in by_kind(render(OPERATOR_CHART), "Deployment")
    ), "off by default"


def test_notes_tell_how_to_create_a_rerankerservice_mint_a_token_and_call_it() -> None:
    result = helm("install", "--dry-run=client", "kuberank", str(OPERATOR_CHART), "-n", "kuberank")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kind: RerankerService" in notes
    assert "kuberank-server token --subject my-svc" in notes
    assert "curl" in notes and "/v1/rerank" in notes and "Authorization: Bearer $TOKEN" in notes


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        (["--set", "replicaCount=2"], "additional properties 'replicaCount' not allowed"),
        (["--set", "crds.keep=yes"], "/crds/keep"),
        (["--set", "sample.kind=tpu"], "/sample/kind"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "watchNamespaces[0]=Not_A_Namespace"], "/watchNamespaces/0"),
        (["--set", "operator.livenessPort=0"], "/operator/livenessPort"),
    ],
    ids=[
        "unknown-key",
        "not-a-boolean",
        "unknown-sample",
        "bad-pull-policy",
        "bad-namespace",
        "port-zero",
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(
    override: list[str], complaint: str
) -> None:
    result = helm("template", "kuberank", str(OPERATOR_CHART), *override)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


def test_playground_needs_the_name_of_a_rerankerservice_to_call() -> None:
    result = helm(
        "template",
        "kuberank",
        str(OPERATOR_CHART),
        "--set",
        "playground.enabled=true",
        "--set",
        "playground.rerankerService=",
    )
    assert result.returncode != 0
    assert "/playground/rerankerService" in result.stderr


def test_rendering_is_deterministic_without_the_random_key() -> None:
    """Apart from the generated JWT key, two renders are identical (no timestamps, no
    randomness that would churn a GitOps diff)."""
    values = str(OPERATOR_CHART / "ci/playground-values.yaml")
    assert render_text(OPERATOR_CHART, "-f", values) == render_text(OPERATOR_CHART, "-f", values)
