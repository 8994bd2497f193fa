"""Every child the builders make, for several specs, is valid Kubernetes and says what it should."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cloudcoil.models.cert_manager.v1 import Certificate
from tests.kubernetes_versions import (
    KUBERNETES_VERSIONS,
    assert_works_on_the_minimum,
    needed_kubernetes,
    validate_for_supported_kubernetes,
)

from kuberank_contract import API_KEYS_FILE_NAME
from kuberank_operator import MINIMUM_KUBERNETES_VERSION
from kuberank_operator.builders import (
    AUTOSCALER,
    CACHE_CLAIM,
    CERTIFICATE,
    DEPLOYMENT,
    NETWORK_POLICY,
    SERVICE,
    SERVICE_MONITOR,
    ChildKind,
    desired_children,
)
from kuberank_operator.builders.common import Owner
from kuberank_operator.builders.deployment import COMPILE_CACHE_DIR, server_env
from kuberank_operator.builders.service import endpoint_url
from kuberank_operator.quantity import quantity_bytes
from kuberank_operator.settings import OperatorSettings
from kuberank_operator.spec import InvalidSpecError, parse_spec
from kuberank_server.engine.scorer import EMBEDDED_MODEL_NAME, build_engine_args, choose_model
from kuberank_server.runtime.settings import ServerSettings

OWNER = Owner(name="ranker", namespace="team-search", uid="6f1c2b7e-0000-4000-8000-000000000001")
SETTINGS = OperatorSettings()
AUTH = {"secretRef": {"name": "rerank-jwt"}}
API_KEYS = {"secretRef": {"name": "rerank-api-keys"}}

SPECS: dict[str, dict[str, Any]] = {
    "gpu-custom-tolerations": {
        "model": {"name": "Qwen/Qwen3-Reranker-0.6B", "hfTokenSecretRef": {"name": "hf"}},
        "auth": AUTH,
        "resources": {"gpu": 2},
        "scheduling": {
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "rerank", "effect": "NoSchedule"}
            ],
            "nodeSelector": {"gpu": "h100"},
            "runtimeClassName": "nvidia",
            "priorityClassName": "inference",
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "ranker"}},
                }
            ],
        },
    },
    "cpu": {
        "model": {"name": "m"},
        "auth": AUTH,
        "resources": {"gpu": 0, "cpu": "1", "memory": "2Gi"},
    },
    "autoscaling-off": {
        "model": {"name": "m"},
        "auth": AUTH,
        "autoscaling": {"enabled": False},
        "replicas": 3,
    },
    "cache-on": {
        "model": {"name": "m", "cache": {"size": "50Gi", "storageClassName": "fast"}},
        "auth": AUTH,
    },
    "monitoring-off-public-key": {
        "model": {"name": "m"},
        "auth": {
            "publicKeySecretRef": {"name": "pem"},
            "algorithms": ["RS256"],
            "issuer": "https://idp",
        },
        "monitoring": {"serviceMonitor": False},
    },
    "auth-disabled-jwks-free": {"model": {"name": "m"}, "auth": {"mode": "disabled"}},
    "gpu-4-data-parallel": {
        "model": {"name": "m"},
        "auth": AUTH,
        "resources": {"gpu": 4, "memory": "64Gi"},
        "engine": {"parallelism": "data"},
    },
    "tls-secret-network-default": {
        "model": {"name": "m"},
        "auth": AUTH,
        "tls": {"secretName": "ranker-cert"},
        "network": {},
    },
    "tls-issuer-network-peers": {
        "model": {"name": "m"},
        "auth": AUTH,
        "tls": {"issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"}},
        "network": {
            "allowFrom": [
                {
                    "namespaceSelector": {"matchLabels": {"team": "search"}},
                    "podSelector": {
                        "matchExpressions": [
                            {"key": "app", "operator": "In", "values": ["retriever", "rag"]}
                        ]
                    },
                },
                {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}},
            ],
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}}}
            ],
        },
    },
    "api-keys-only": {
        "model": {"name": "m"},
        "auth": {"mode": "apiKey", "apiKeys": API_KEYS, "requiredScopes": ["rerank", "batch"]},
    },
    "jwt-or-api-key": {
        "model": {"name": "m"},
        "auth": {
            "mode": "jwtOrApiKey",
            "apiKeys": API_KEYS,
            "publicKeySecretRef": {"name": "pem"},
            "algorithms": ["RS256"],
        },
    },
}


def children(spec: dict[str, Any]) -> dict[ChildKind, dict[str, Any] | None]:
    """The children in a cluster without KEDA (the hpa driver; tests/operator/
    test_scaled_object.py has KEDA's)."""
    return desired_children(
        OWNER, parse_spec(spec), SETTINGS, service_monitors=True, certificates=True, keda=False
    )


def validate_certificate(manifest: dict[str, Any]) -> None:
    """cert-manager's Certificate schema, strictly: cloudcoil's models are generated from
    cert-manager's CRDs (types, enums, required fields); a field they do not know would be
    pruned by the API server, so a round trip that loses one fails here."""
    model = Certificate.model_validate(manifest)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == manifest


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("case", SPECS)
def test_every_child_is_valid_kubernetes(case: str) -> None:
    """For the oldest and newest Kubernetes supported, schemas and feature gates both."""
    made = {kind: manifest for kind, manifest in children(SPECS[case]).items() if manifest}
    for kind, manifest in made.items():
        assert manifest["metadata"]["ownerReferences"] == [OWNER.reference]
        assert manifest["metadata"]["labels"] == {
            "app.kubernetes.io/name": "kuberank-server",
            "app.kubernetes.io/instance": "ranker",
            "app.kubernetes.io/component": "reranker",
            "app.kubernetes.io/managed-by": "kuberank-operator",
        }
        if kind is CERTIFICATE:
            validate_certificate(manifest)
        if kind in (SERVICE_MONITOR, CERTIFICATE):  # CRDs: kubernetes-validate has no schema
            assert_works_on_the_minimum(manifest)
        else:
            validate_for_supported_kubernetes(manifest)


def test_the_server_pods_set_the_minimum_kubernetes() -> None:
    """The stated minimum is exactly what the pods need: their preStop sleep (if that went, the
    minimum could come down; a newer field would raise it)."""
    deployment = children(SPECS["cpu"])[DEPLOYMENT]
    assert deployment is not None
    assert needed_kubernetes(deployment) == MINIMUM_KUBERNETES_VERSION
    container(deployment)["lifecycle"]["preStop"] = {"exec": {"command": ["sleep", "5"]}}
    assert needed_kubernetes(deployment) != MINIMUM_KUBERNETES_VERSION


def test_a_field_the_minimum_leaves_off_is_refused() -> None:
    service = children(SPECS["cpu"])[SERVICE]
    assert service is not None
    service["spec"]["trafficDistribution"] = "PreferClose"
    kubernetes_validate.validate(service, KUBERNETES_VERSIONS[0], strict=True)  # in the schema
    refused = r"ServiceTrafficDistribution, on by default from 1\.31"
    with pytest.raises(AssertionError, match=refused):
        assert_works_on_the_minimum(service)


def test_kubernetes_validate_rejects_what_is_wrong() -> None:
    deployment = children(SPECS["cpu"])[DEPLOYMENT]
    assert deployment is not None
    container(deployment)["imagePullPolicy"] = "Sometimes"
    container(deployment)["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_server_env_names_are_server_settings_fields() -> None:
    for case in SPECS.values():
        for variable in server_env(parse_spec(case), SETTINGS):
            name = variable["name"]
            if name.startswith("KUBERANK_"):
                assert name.removeprefix("KUBERANK_").lower() in ServerSettings.model_fields, name


def test_server_reads_the_env_the_operator_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(
        {**SPECS["gpu-custom-tolerations"], "engine": {"extraArgs": ["--enforce-eager"]}}
    )
    for variable in server_env(spec, SETTINGS):
        monkeypatch.setenv(variable["name"], variable.get("value", "from-a-secret"))
    settings = ServerSettings()
    assert (settings.model, settings.max_model_len, settings.engine_extra_args) == (
        "Qwen/Qwen3-Reranker-0.6B",
        32768,
        ["--enforce-eager"],
    )
    assert settings.jwt_required_scopes == ["rerank"] and settings.enable_prefix_caching is True
    assert settings.drain_timeout_seconds == SETTINGS.drain_timeout_seconds


def test_extra_args_with_commas_and_quotes_reach_vllms_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CR -> Deployment env -> ServerSettings -> vLLM's own argument parser, items intact."""
    from kuberank_server.engine.scorer import build_engine_args, choose_model

    pooler = {"pooling_type": "LAST", "use_activation": False}
    overrides = {"max_position_embeddings": 512, "note": "a, b"}
    extra_args = [
        "--enforce-eager",
        f"--pooler-config '{json.dumps(pooler)}'",
        "--hf-overrides",
        json.dumps(overrides),
    ]
    spec = parse_spec({**SPECS["cpu"], "engine": {"extraArgs": extra_args, "maxNumSeqs": 8}})
    for variable in server_env(spec, SETTINGS):
        monkeypatch.setenv(variable["name"], variable.get("value", "from-a-secret"))
    monkeypatch.delenv("KUBERANK_MODEL")  # the embedded model: parsing needs no download
    settings = ServerSettings()
    assert settings.engine_extra_args == extra_args
    args = build_engine_args(settings, choose_model(settings))
    assert (args.enforce_eager, args.max_num_seqs, args.hf_overrides) == (True, 8, overrides)
    assert pooler.items() <= vars(args.pooler_config).items()


def engine_args_from_the_deployment(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The pod's env -> the server's settings -> vLLM's engine arguments, parsed by vLLM."""
    for variable in container(deployment)["env"]:
        monkeypatch.setenv(variable["name"], variable.get("value", "from-a-secret"))
    settings = ServerSettings()
    return build_engine_args(settings, choose_model(settings))


@pytest.mark.parametrize(
    ("parallelism", "tensor", "data"), [(None, 2, 1), ("tensor", 2, 1), ("data", 1, 2)]
)
def test_a_two_gpu_pod_asks_vllm_for_both_gpus(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    parallelism: str | None,
    tensor: int,
    data: int,
) -> None:
    # A path as the model (the CR allows one in the cache volume) and a forced kind: vLLM
    # parses its arguments offline, with no config to fetch.
    engine = {"parallelism": parallelism} if parallelism else {}
    spec = {
        "model": {"name": str(tmp_path), "kind": "qwen3-reranker"},
        "auth": AUTH,
        "resources": {"gpu": 2},
        "engine": engine,
    }
    deployment = children(spec)[DEPLOYMENT]
    assert deployment is not None
    assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    args = engine_args_from_the_deployment(deployment, monkeypatch)
    assert (args.tensor_parallel_size, args.data_parallel_size) == (tensor, data)
    assert args.pipeline_parallel_size == 1


@pytest.mark.parametrize("gpu", [0, 1])
def test_one_device_pods_ignore_parallelism(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu: int
) -> None:
    spec = {
        "model": {"name": str(tmp_path), "kind": "qwen3-reranker"},
        "auth": AUTH,
        "resources": {"gpu": gpu},
        "autoscaling": {"enabled": False},
        "engine": {"parallelism": "data"},
    }
    deployment = children(spec)[DEPLOYMENT]
    assert deployment is not None
    names = {variable["name"] for variable in container(deployment)["env"]}
    assert not names & {"KUBERANK_GPUS", "KUBERANK_PARALLELISM"}
    args = engine_args_from_the_deployment(deployment, monkeypatch)
    assert (args.tensor_parallel_size, args.data_parallel_size) == (1, 1)


@pytest.mark.parametrize(("gpu", "size"), [(0, "2Gi"), (1, "2Gi"), (2, "3Gi"), (8, "9Gi")])
def test_shared_memory_grows_with_the_engine_processes(gpu: int, size: str) -> None:
    spec = {**SPECS["cpu"], "resources": {"gpu": gpu}, "autoscaling": {"enabled": False}}
    deployment = children(spec)[DEPLOYMENT]
    assert deployment is not None
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": size}


def test_a_failed_start_reaches_the_pod_status() -> None:
    """The server writes why it failed where the kubelet reads the termination message; with
    nothing written (a crash before that), the log's tail stands in."""
    deployment = children(SPECS["cpu"])[DEPLOYMENT]
    assert deployment is not None
    server = container(deployment)
    assert server["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["KUBERANK_TERMINATION_MESSAGE_FILE"] == server["terminationMessagePath"]


def test_gpu_pod_scheduling_and_lifecycle() -> None:
    deployment = children(SPECS["gpu-custom-tolerations"])[DEPLOYMENT]
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    server = container(deployment)
    assert server["image"] == SETTINGS.gpu_image and server["command"] == [
        "kuberank-server",
        "serve",
    ]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "rerank", "effect": "NoSchedule"},
    ]
    assert (pod["nodeSelector"], pod["runtimeClassName"], pod["priorityClassName"]) == (
        {"gpu": "h100"},
        "nvidia",
        "inference",
    )
    assert pod["affinity"]["nodeAffinity"] and pod["topologySpreadConstraints"][0]["maxSkew"] == 1
    assert {"name": "dshm", "mountPath": "/dev/shm"} in server["volumeMounts"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
    } in server["env"]
    assert {
        "name": "KUBERANK_JWT_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "rerank-jwt", "key": "secret"}},
    } in server["env"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60  # weights download
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + SETTINGS.drain_timeout_seconds
    assert server["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert server["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "replicas" not in deployment["spec"]  # the HPA owns it


def test_cpu_pod_uses_the_cpu_image_and_no_gpu() -> None:
    made = children({**SPECS["cpu"], "autoscaling": {"targetConcurrency": 4}})
    deployment, autoscaler = made[DEPLOYMENT], made[AUTOSCALER]
    assert deployment is not None and autoscaler is not None
    server = container(deployment)
    assert server["image"] == SETTINGS.cpu_image
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    assert deployment["spec"]["template"]["spec"]["tolerations"] == []
    # No GPU metric: requests in progress per pod is the CPU pod's only signal.
    assert [m["pods"] for m in autoscaler["spec"]["metrics"]] == [
        {
            "metric": {"name": "kuberank_requests_in_progress"},
            "target": {"type": "AverageValue", "averageValue": "4"},
        }
    ]


def test_autoscaler_metrics_and_window() -> None:
    spec = {
        **SPECS["cache-on"],
        "autoscaling": {"targetGPUUtilization": 60, "scaleDownStabilizationSeconds": 120},
    }
    autoscaler = children(spec)[AUTOSCALER]
    assert autoscaler is not None
    targets = {
        m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"]
        for m in autoscaler["spec"]["metrics"]
    }
    # GPU utilization first (a reranker's duty cycle), then concurrency at its default.
    assert list(targets.items()) == [
        ("kuberank_gpu_utilization", "60"),
        ("kuberank_requests_in_progress", "16"),
    ]
    assert autoscaler["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    gpu_only = {**SPECS["cache-on"], "autoscaling": {"targetConcurrency": None}}
    autoscaler = children(gpu_only)[AUTOSCALER]
    assert autoscaler is not None
    assert [m["pods"]["metric"]["name"] for m in autoscaler["spec"]["metrics"]] == [
        "kuberank_gpu_utilization"
    ]


def test_autoscaling_off_means_no_hpa_and_fixed_replicas() -> None:
    made = children(SPECS["autoscaling-off"])
    assert made[AUTOSCALER] is None
    deployment = made[DEPLOYMENT]
    assert deployment is not None and deployment["spec"]["replicas"] == 3


def test_cache_is_a_claim_mounted_as_hf_home() -> None:
    made = children(SPECS["cache-on"])
    claim, deployment = made[CACHE_CLAIM], made[DEPLOYMENT]
    assert claim is not None and deployment is not None
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "ranker"}
    hf_home = next(e["value"] for e in container(deployment)["env"] if e["name"] == "HF_HOME")
    assert {"name": "model-cache", "mountPath": hf_home} in container(deployment)["volumeMounts"]
    assert children(SPECS["cpu"])[CACHE_CLAIM] is None


def _env(deployment: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container(deployment)["env"]}


def _mount_path_of(deployment: dict[str, Any], path: str) -> tuple[str, str]:
    """(volume, path inside it) of a file path in the server container."""
    mounts = container(deployment)["volumeMounts"]
    mount = max(
        (m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")),
        key=lambda m: len(m["mountPath"]),
    )
    return mount["name"], path.removeprefix(mount["mountPath"]).lstrip("/")


def test_compile_cache_is_on_the_model_cache_claim_shared_by_the_pods() -> None:
    """The server points vLLM's VLLM_CACHE_ROOT (torch.compile, inductor and Triton artifacts)
    at KUBERANK_COMPILE_CACHE_DIR: with model.cache that is a subdirectory of the service's
    claim, which every pod of the service mounts, so a second pod loads the first one's
    artifacts instead of compiling again."""
    deployment = children(SPECS["cache-on"])[DEPLOYMENT]
    assert deployment is not None
    env = _env(deployment)
    volume, subdirectory = _mount_path_of(deployment, env["KUBERANK_COMPILE_CACHE_DIR"] or "")
    assert (volume, subdirectory) == ("model-cache", "vllm")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[volume]["persistentVolumeClaim"] == {"claimName": "ranker"}
    # Not the weights' directory (HF_HOME/hub): the two caches never collide.
    assert _mount_path_of(deployment, env["HF_HOME"] or "") == ("model-cache", "")
    # Without a claim the same path is on the pod's emptyDir: no sharing, but a restarted
    # container (OOM, crash) still finds its kernels.
    no_claim = children(SPECS["cpu"])[DEPLOYMENT]
    assert no_claim is not None
    assert (
        _mount_path_of(no_claim, _env(no_claim)["KUBERANK_COMPILE_CACHE_DIR"] or "")[0]
        == "model-cache"
    )
    no_claim_volumes = {v["name"]: v for v in no_claim["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in no_claim_volumes["model-cache"]


def test_traffic_becomes_the_servers_connection_recycling(monkeypatch: pytest.MonkeyPatch) -> None:
    default = children(SPECS["cpu"])[DEPLOYMENT]
    assert default is not None
    env = _env(default)
    assert (
        env["KUBERANK_MAX_REQUESTS_PER_CONNECTION"],
        env["KUBERANK_MAX_CONNECTION_AGE_SECONDS"],
    ) == (
        "1000",
        "60",
    )
    spec = {
        **SPECS["cpu"],
        "traffic": {"maxRequestsPerConnection": 50, "maxConnectionAgeSeconds": 0},
    }
    deployment = children(spec)[DEPLOYMENT]
    assert deployment is not None
    for variable in container(deployment)["env"]:
        monkeypatch.setenv(variable["name"], variable.get("value", "from-a-secret"))
    settings = ServerSettings()
    assert (settings.max_requests_per_connection, settings.max_connection_age_seconds) == (50, 0)
    assert str(settings.compile_cache_dir) == COMPILE_CACHE_DIR


def test_monitoring_off_and_public_key_file() -> None:
    made = children(SPECS["monitoring-off-public-key"])
    assert made[SERVICE_MONITOR] is None
    assert SERVICE_MONITOR in made  # None: remove one that exists
    deployment = made[DEPLOYMENT]
    assert deployment is not None
    env = {e["name"]: e.get("value") for e in container(deployment)["env"]}
    assert env["KUBERANK_JWT_PUBLIC_KEY_FILE"] == "/etc/kuberank/jwt/public.pem"
    assert env["KUBERANK_JWT_ALGORITHMS"] == '["RS256"]' and "KUBERANK_JWT_SECRET" not in env
    no_api = desired_children(
        OWNER,
        parse_spec(SPECS["cache-on"]),
        SETTINGS,
        service_monitors=False,
        certificates=False,
        keda=False,
    )
    assert SERVICE_MONITOR not in no_api  # no such API: neither made nor removed
    assert CERTIFICATE not in no_api


def pod_files(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Path of each file a Secret volume puts in the server container -> (Secret, key)."""
    pod = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    files = {}
    for mount in pod["containers"][0]["volumeMounts"]:
        if mount["name"] in secrets:
            assert "subPath" not in mount, "a subPath mount never sees the Secret change"
            assert mount["readOnly"] is True
            secret = secrets[mount["name"]]
            for item in secret["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


@pytest.mark.parametrize(
    ("case", "jwt_env"),
    [("api-keys-only", False), ("jwt-or-api-key", True)],
)
def test_api_key_modes_mount_the_key_secret_and_point_the_server_at_it(
    case: str, jwt_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = children(SPECS[case])[DEPLOYMENT]
    assert deployment is not None
    env = container(deployment)["env"]
    for variable in env:
        monkeypatch.setenv(variable["name"], variable.get("value", "from-a-secret"))
    settings = ServerSettings()

    assert settings.auth_mode == SPECS[case]["auth"]["mode"]
    assert pod_files(deployment)[str(settings.api_keys_file)] == (
        "rerank-api-keys",
        API_KEYS_FILE_NAME,
    )
    names = {variable["name"] for variable in env}
    assert ("KUBERANK_JWT_ALGORITHMS" in names) is jwt_env
    assert ("KUBERANK_JWT_PUBLIC_KEY_FILE" in names) is jwt_env
    # The required scopes apply to API keys too, so they travel in every mode that checks them.
    assert settings.jwt_required_scopes == SPECS[case]["auth"].get("requiredScopes", ["rerank"])


def test_jwt_mode_mounts_no_key_secret_even_when_one_is_named() -> None:
    spec = {"model": {"name": "m"}, "auth": {**AUTH, "apiKeys": API_KEYS}}
    deployment = children(spec)[DEPLOYMENT]
    assert deployment is not None
    assert pod_files(deployment) == {}
    assert "KUBERANK_API_KEYS_FILE" not in {v["name"] for v in container(deployment)["env"]}


def test_service_monitor_scrapes_the_metrics_port() -> None:
    monitor = children(SPECS["cache-on"])[SERVICE_MONITOR]
    assert monitor is not None
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]


def test_the_certificate_check_rejects_what_cert_manager_would_not_keep() -> None:
    certificate = children(SPECS["tls-issuer-network-peers"])[CERTIFICATE]
    assert certificate is not None
    validate_certificate(certificate)
    with pytest.raises(AssertionError):
        validate_certificate({**certificate, "spec": {**certificate["spec"], "dnsName": "x"}})
    with pytest.raises(ValueError, match="privateKey"):
        bad_key = {"privateKey": {"algorithm": "DSA"}}
        validate_certificate({**certificate, "spec": {**certificate["spec"], **bad_key}})
    with pytest.raises(ValueError, match="secretName"):
        spec = {k: v for k, v in certificate["spec"].items() if k != "secretName"}
        validate_certificate({**certificate, "spec": spec})


def test_tls_from_a_secret_mounts_it_and_probes_over_https() -> None:
    spec = parse_spec(SPECS["tls-secret-network-default"])
    made = children(SPECS["tls-secret-network-default"])
    assert made[CERTIFICATE] is None  # a Secret given: nothing for cert-manager to do
    deployment = made[DEPLOYMENT]
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert {
        "name": "tls",
        "secret": {
            "secretName": "ranker-cert",
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
        },
    } in pod["volumes"]
    # No subPath: a subPath mount never sees the kubelet's update of a renewed Secret.
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "tls")
    assert mount == {"name": "tls", "mountPath": "/etc/kuberank/tls", "readOnly": True}
    env = {e["name"]: e.get("value") for e in container(deployment)["env"]}
    assert env["KUBERANK_TLS_CERT_FILE"] == "/etc/kuberank/tls/tls.crt"
    assert env["KUBERANK_TLS_KEY_FILE"] == "/etc/kuberank/tls/tls.key"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container(deployment)[probe]["httpGet"]["scheme"] == "HTTPS"
    assert endpoint_url(OWNER, spec) == "https://ranker.team-search.svc:8000"
    assert [ref.key for field, ref in spec.referenced_secrets() if field == "tls.secretName"] == [
        "tls.crt",
        "tls.key",
    ]


def test_without_tls_plain_http_everywhere() -> None:
    spec = parse_spec(SPECS["cpu"])
    deployment = children(SPECS["cpu"])[DEPLOYMENT]
    assert deployment is not None
    assert container(deployment)["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert not any(e["name"].startswith("KUBERANK_TLS") for e in container(deployment)["env"])
    assert endpoint_url(OWNER, spec) == "http://ranker.team-search.svc:8000"


def test_tls_from_an_issuer_is_a_certificate_for_the_service_names() -> None:
    made = children(SPECS["tls-issuer-network-peers"])
    certificate, deployment = made[CERTIFICATE], made[DEPLOYMENT]
    assert certificate is not None and deployment is not None
    assert certificate["spec"]["issuerRef"] == {
        "name": "internal-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert certificate["spec"]["dnsNames"] == [
        "ranker",
        "ranker.team-search",
        "ranker.team-search.svc",
        "ranker.team-search.svc.cluster.local",
    ]
    assert certificate["spec"]["usages"] == ["server auth", "digital signature", "key encipherment"]
    # The Deployment mounts the Secret cert-manager writes.
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == "tls")
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"] == "ranker-tls"
    other_domain = desired_children(
        OWNER,
        parse_spec(SPECS["tls-issuer-network-peers"]),
        OperatorSettings(cluster_domain="corp.internal"),
        service_monitors=True,
        certificates=True,
        keda=False,
    )[CERTIFICATE]
    assert other_domain is not None
    assert other_domain["spec"]["dnsNames"][-1] == "ranker.team-search.svc.corp.internal"


MONITORING_NAMESPACE_LABEL = {"kubernetes.io/metadata.name": "monitoring"}


def test_network_policy_defaults_to_this_namespace_and_the_monitoring_namespace() -> None:
    policy = children(SPECS["tls-secret-network-default"])[NETWORK_POLICY]
    assert policy is not None
    assert policy["spec"] == {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "kuberank-server",
                "app.kubernetes.io/instance": "ranker",
            }
        },
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "ports": [{"port": 8000, "protocol": "TCP"}],
                "from": [{"podSelector": {"matchLabels": {}}}],  # {} with drift detection
            },
            {
                "ports": [{"port": 9100, "protocol": "TCP"}],
                "from": [{"namespaceSelector": {"matchLabels": MONITORING_NAMESPACE_LABEL}}],
            },
        ],
    }
    assert children(SPECS["cpu"])[NETWORK_POLICY] is None  # opt-in


def test_network_policy_admits_the_listed_peers_and_an_empty_list_admits_no_one() -> None:
    policy = children(SPECS["tls-issuer-network-peers"])[NETWORK_POLICY]
    assert policy is not None
    api, metrics = policy["spec"]["ingress"]
    assert api["from"] == SPECS["tls-issuer-network-peers"]["network"]["allowFrom"]
    assert metrics["from"] == SPECS["tls-issuer-network-peers"]["network"]["metricsFrom"]
    closed = children({**SPECS["cpu"], "network": {"allowFrom": [], "metricsFrom": []}})
    # An ingress rule without `from` admits everyone: no peers must mean no rule at all.
    assert closed[NETWORK_POLICY] is not None
    assert closed[NETWORK_POLICY]["spec"]["ingress"] == []
    assert closed[NETWORK_POLICY]["spec"]["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tls": {}}, "tls needs exactly one of secretName or issuerRef"),
        (
            {"tls": {"secretName": "s", "issuerRef": {"name": "ca"}}},
            "tls needs exactly one of secretName or issuerRef",
        ),
        ({"tls": {"issuerRef": {"name": "ca", "kind": "Vault"}}}, r"spec\.tls\.issuerRef\.kind"),
        ({"network": {"allowFrom": [{}]}}, "a peer is podSelector and/or namespaceSelector"),
        (
            {"network": {"allowFrom": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]}},
            "a peer is podSelector and/or namespaceSelector",
        ),
        (
            {"network": {"metricsFrom": [{"podSelector": {"matchExpressions": [{"key": "a"}]}}]}},
            r"spec\.network\.metricsFrom\.0\.podSelector\.matchExpressions\.0\.operator",
        ),
    ],
)
def test_bad_tls_and_network_specs_are_refused_naming_the_field(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        parse_spec({"model": {"name": "m"}, "auth": AUTH, **spec})


GIB = 1 << 30


@pytest.mark.parametrize(
    ("memory", "cache_size", "expected_bytes"),
    [("4Gi", None, GIB), ("16Gi", None, 4 * GIB), ("4Gi", "512Mi", GIB // 2), ("4G", "1e9", 10**9)],
)
def test_a_cpu_pod_gets_a_kv_cache_that_fits_its_memory_limit(
    monkeypatch: pytest.MonkeyPatch, memory: str, cache_size: str | None, expected_bytes: int
) -> None:
    """Pod spec -> env -> the server's settings -> vLLM's own argument parser, with the bytes
    the server would pass on vLLM's CPU platform."""
    engine = {"cpuKvCacheSize": cache_size} if cache_size else {}
    spec = {
        **SPECS["cpu"],
        "model": {"name": EMBEDDED_MODEL_NAME},  # parsed offline: the bundled weights
        "resources": {"gpu": 0, "memory": memory},
        "engine": engine,
    }
    deployment = children(spec)[DEPLOYMENT]
    assert deployment is not None
    limit = container(deployment)["resources"]["limits"]["memory"]
    assert _env(deployment)["KUBERANK_CPU_KV_CACHE_BYTES"] == str(expected_bytes)
    for variable in container(deployment)["env"]:
        monkeypatch.setenv(variable["name"], variable.get("value", "from-a-secret"))
    settings = ServerSettings()
    assert settings.cpu_kv_cache_bytes == expected_bytes
    assert expected_bytes < quantity_bytes(limit)
    args = build_engine_args(settings, choose_model(settings), settings.cpu_kv_cache_bytes)
    assert args.kv_cache_memory_bytes == expected_bytes


def test_gpu_pods_keep_gpu_memory_utilization_and_no_cpu_cache_size() -> None:
    spec = {**SPECS["cpu"], "resources": {"gpu": 1}, "engine": {"cpuKvCacheSize": "1Gi"}}
    deployment = children(spec)[DEPLOYMENT]
    assert deployment is not None
    env = _env(deployment)
    assert "KUBERANK_CPU_KV_CACHE_BYTES" not in env
    assert env["KUBERANK_GPU_MEMORY_UTILIZATION"] == "0.9"


@pytest.mark.parametrize(
    ("resources", "engine", "message"),
    [
        ({"gpu": 0, "memory": "2Gi"}, {"cpuKvCacheSize": "2Gi"}, "must be smaller than"),
        ({"gpu": 0, "memory": "lots"}, {}, "'lots' is not a Kubernetes quantity"),
        ({"gpu": 0, "memory": "4Gi"}, {"cpuKvCacheSize": "1Gb"}, "'1Gb' is not a Kubernetes"),
    ],
)
def test_a_cpu_cache_that_cannot_fit_is_an_invalid_spec(
    resources: dict[str, Any], engine: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        parse_spec({**SPECS["cpu"], "resources": resources, "engine": engine})


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("4Gi", 4 * GIB), ("512Mi", 512 << 20), ("1k", 1000), ("1.5Gi", 3 * GIB // 2), (7, 7),
     ("1e3", 1000), ("2500m", 3), ("1E", 10**18)],
)  # fmt: skip
def test_quantities_as_bytes(quantity: int | str, expected: int) -> None:
    assert quantity_bytes(quantity) == expected
