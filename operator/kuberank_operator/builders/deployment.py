"""The Deployment running the rerank server."""

from __future__ import annotations

import json
from typing import Any

from kuberank_contract import API_KEY_AUTH_MODES, API_KEYS_FILE_NAME, JWT_AUTH_MODES
from kuberank_operator.builders.certificate import certificate_secret_name
from kuberank_operator.builders.common import (
    HTTP_PORT,
    METRICS_PORT,
    Owner,
    labels,
    metadata,
    selector_labels,
)
from kuberank_operator.settings import OperatorSettings
from kuberank_operator.spec import TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY, RerankerSpec

CONTAINER_NAME = "server"
CACHE_MOUNT = "/var/cache/kuberank"
# vLLM's compile cache (torch.compile, inductor and Triton artifacts) beside the weights: on a
# PersistentVolumeClaim a second pod of the service loads them instead of compiling again;
# on the emptyDir they still survive a container restart.
COMPILE_CACHE_DIR = f"{CACHE_MOUNT}/vllm"
PUBLIC_KEY_DIR = "/etc/kuberank/jwt"
TLS_DIR = "/etc/kuberank/tls"
# A directory mount, never subPath: kubelet updates only those when the Secret changes.
API_KEYS_DIR = "/etc/kuberank/api-keys"
# Pods leave the Service's endpoints asynchronously; this pause before SIGTERM lets the
# load balancers stop sending new requests before the server starts draining.
PRE_STOP_SLEEP_SECONDS = 5
GRACE_MARGIN_SECONDS = 10
# Generous: a first start downloads the weights (tens of GB for large rerankers).
STARTUP_PROBE_PERIOD_SECONDS = 10
STARTUP_PROBE_FAILURES = 180
SERVER_UID = 10001  # the non-root user the server images create (Dockerfile)
# Where the server writes why it failed to start (Kubernetes' default path, set explicitly
# because the server is told it): the kubelet copies it into the pod's status, where the
# operator's pod diagnosis reads it. Without it the log's tail stands in (FallbackToLogsOnError).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# /dev/shm (memory-backed): vLLM's workers share tensors and broadcast queues through it and
# NCCL its intra-node buffers, so it grows with the engine processes; the container runtime's
# default 64 MiB is too small even for one.
SHM_BASE_GIB = 2
SHM_PER_EXTRA_GPU_GIB = 1


def server_image(spec: RerankerSpec, settings: OperatorSettings) -> str:
    if spec.image:
        return spec.image
    return settings.gpu_image if spec.resources.gpu > 0 else settings.cpu_image


def _plain(name: str, value: object) -> dict[str, Any]:
    # Lists and maps travel as JSON, as the server's settings decode them.
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, list | dict):
        value = json.dumps(value)
    return {"name": name, "value": str(value)}


def _from_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def server_env(spec: RerankerSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """`KUBERANK_*` variables read by `kuberank_server.runtime.settings.ServerSettings`."""
    model, engine, auth, limits = spec.model, spec.engine, spec.auth, spec.limits
    values: dict[str, object] = {
        "MODEL": model.name,
        "REVISION": model.revision,
        "MODEL_KIND": model.kind,
        "INSTRUCTION": model.instruction,
        "MAX_MODEL_LEN": model.max_model_len,
        "DTYPE": model.dtype,
        "QUANTIZATION": model.quantization,
        "GPU_MEMORY_UTILIZATION": engine.gpu_memory_utilization,
        "CPU_KV_CACHE_BYTES": spec.cpu_kv_cache_bytes,
        "ENABLE_CHUNKED_PREFILL": engine.enable_chunked_prefill,
        "ENABLE_PREFIX_CACHING": engine.enable_prefix_caching,
        "MAX_NUM_SEQS": engine.max_num_seqs,
        "ENGINE_EXTRA_ARGS": engine.extra_args or None,
        # Only a pod with several GPUs has a choice to make; a CPU pod ignores parallelism.
        "GPUS": spec.resources.gpu if spec.resources.gpu > 1 else None,
        "PARALLELISM": engine.parallelism if spec.resources.gpu > 1 else None,
        "TERMINATION_MESSAGE_FILE": TERMINATION_MESSAGE_PATH,
        "PORT": HTTP_PORT,
        "METRICS_PORT": METRICS_PORT,
        "AUTH_MODE": auth.mode,
        "MAX_DOCUMENTS": limits.max_documents,
        "MAX_DOCUMENT_TOKENS": limits.max_document_tokens,
        "MAX_QUERY_TOKENS": limits.max_query_tokens,
        "MAX_REQUEST_TOKENS": limits.max_request_tokens,
        "TRUNCATE": limits.truncate,
        "MAX_CONCURRENT_REQUESTS": limits.max_concurrent_requests,
        "MAX_QUEUED_REQUESTS": limits.max_queued_requests,
        "MAX_QUEUE_WAIT_SECONDS": limits.max_queue_wait_seconds,
        "MAX_REQUESTS_PER_CONNECTION": spec.traffic.max_requests_per_connection,
        "MAX_CONNECTION_AGE_SECONDS": spec.traffic.max_connection_age_seconds,
        "DRAIN_TIMEOUT_SECONDS": settings.drain_timeout_seconds,
        "COMPILE_CACHE_DIR": COMPILE_CACHE_DIR,
    }
    if auth.mode != "disabled":
        values["JWT_REQUIRED_SCOPES"] = auth.required_scopes  # JWTs and API keys alike
    if auth.mode in JWT_AUTH_MODES:
        values |= {
            "JWT_ALGORITHMS": auth.algorithms,
            "JWT_ISSUER": auth.issuer,
            "JWT_AUDIENCE": auth.audience,
            "JWKS_URL": auth.jwks_url,
        }
        if auth.public_key_secret_ref:
            values["JWT_PUBLIC_KEY_FILE"] = f"{PUBLIC_KEY_DIR}/{auth.public_key_secret_ref.key}"
    if spec.tls is not None:
        values["TLS_CERT_FILE"] = f"{TLS_DIR}/{TLS_CERT_KEY}"
        values["TLS_KEY_FILE"] = f"{TLS_DIR}/{TLS_PRIVATE_KEY_KEY}"
    if auth.mode in API_KEY_AUTH_MODES:
        values["API_KEYS_FILE"] = f"{API_KEYS_DIR}/{API_KEYS_FILE_NAME}"
    env = [_plain(f"KUBERANK_{key}", value) for key, value in values.items() if value is not None]
    if auth.mode in JWT_AUTH_MODES and auth.secret_ref:
        env.append(_from_secret("KUBERANK_JWT_SECRET", auth.secret_ref.name, auth.secret_ref.key))
    env.append({"name": "HF_HOME", "value": CACHE_MOUNT})
    if model.hf_token_secret_ref:
        ref = model.hf_token_secret_ref
        env.append(_from_secret("HF_TOKEN", ref.name, ref.key))
    return env


def _resources(spec: RerankerSpec) -> dict[str, Any]:
    compute = {"cpu": str(spec.resources.cpu), "memory": str(spec.resources.memory)}
    limits = dict(compute)
    if spec.resources.gpu > 0:
        limits[spec.resources.gpu_resource] = str(spec.resources.gpu)
    return {"requests": compute, "limits": limits}


def tls_secret_name(owner: Owner, spec: RerankerSpec) -> str | None:
    """The Secret holding the server's certificate: the user's, or cert-manager's."""
    if spec.tls is None:
        return None
    return spec.tls.secret_name or certificate_secret_name(owner)


def _probe(path: str, period: int, failures: int, scheme: str) -> dict[str, Any]:
    return {
        # The kubelet does not verify the certificate of an HTTPS probe.
        "httpGet": {"path": path, "port": "http", "scheme": scheme},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def shm_size(spec: RerankerSpec) -> str:
    return f"{SHM_BASE_GIB + SHM_PER_EXTRA_GPU_GIB * max(spec.resources.gpu - 1, 0)}Gi"


def _volumes(owner: Owner, spec: RerankerSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts)."""
    cache: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": owner.name}}
        if spec.model.cache
        else {"emptyDir": {}}
    )
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(spec)}},
        {"name": "model-cache", **cache},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - a memory emptyDir
        {"name": "model-cache", "mountPath": CACHE_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir, not a shared /tmp
    ]
    key_ref = spec.auth.public_key_secret_ref
    if spec.auth.mode in JWT_AUTH_MODES and key_ref:
        volumes.append(
            {
                "name": "jwt-public-key",
                "secret": {
                    "secretName": key_ref.name,
                    "items": [{"key": key_ref.key, "path": key_ref.key}],
                },
            }
        )
        mounts.append({"name": "jwt-public-key", "mountPath": PUBLIC_KEY_DIR, "readOnly": True})
    tls_secret = tls_secret_name(owner, spec)
    if tls_secret is not None:
        # The whole Secret as a folder (no subPath): the kubelet then swaps in renewed files.
        items = [{"key": key, "path": key} for key in (TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY)]
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret, "items": items}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    if spec.auth.mode in API_KEY_AUTH_MODES and spec.auth.api_keys:
        volumes.append(
            {
                "name": "api-keys",
                "secret": {
                    "secretName": spec.auth.api_keys.secret_ref.name,
                    "items": [{"key": API_KEYS_FILE_NAME, "path": API_KEYS_FILE_NAME}],
                },
            }
        )
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
    return volumes, mounts


def _tolerations(spec: RerankerSpec) -> list[dict[str, Any]]:
    tolerations = [
        t.model_dump(by_alias=True, exclude_none=True) for t in spec.scheduling.tolerations
    ]
    if spec.resources.gpu > 0:
        # GPU node pools are tainted with the GPU resource name (GKE, AKS, the NVIDIA operator).
        gpu_taint = {
            "key": spec.resources.gpu_resource,
            "operator": "Exists",
            "effect": "NoSchedule",
        }
        tolerations.insert(0, gpu_taint)
    return tolerations


def grace_period_seconds(settings: OperatorSettings) -> int:
    return PRE_STOP_SLEEP_SECONDS + settings.drain_timeout_seconds + GRACE_MARGIN_SECONDS


def build_deployment(
    owner: Owner, spec: RerankerSpec, settings: OperatorSettings
) -> dict[str, Any]:
    volumes, mounts = _volumes(owner, spec)
    scheme = "HTTP" if spec.tls is None else "HTTPS"
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": server_image(spec, settings),
        "imagePullPolicy": "IfNotPresent",
        "command": ["kuberank-server", "serve"],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": server_env(spec, settings),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "startupProbe": _probe(
            "/health", STARTUP_PROBE_PERIOD_SECONDS, STARTUP_PROBE_FAILURES, scheme
        ),
        "livenessProbe": _probe("/health", 10, 3, scheme),
        "readinessProbe": _probe("/ready", 5, 3, scheme),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    scheduling = spec.scheduling
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": grace_period_seconds(settings),
        "automountServiceAccountToken": False,  # the server never calls the Kubernetes API
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SERVER_UID,
            "runAsGroup": SERVER_UID,
            "fsGroup": SERVER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "tolerations": _tolerations(spec),
        "nodeSelector": scheduling.node_selector,
    }
    optional = {
        "affinity": scheduling.affinity,
        "runtimeClassName": scheduling.runtime_class_name,
        "priorityClassName": scheduling.priority_class_name,
        "topologySpreadConstraints": scheduling.topology_spread_constraints,
    }
    pod_spec |= {key: value for key, value in optional.items() if value}
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(owner)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": STARTUP_PROBE_PERIOD_SECONDS * STARTUP_PROBE_FAILURES + 300,
        "template": {"metadata": {"labels": labels(owner)}, "spec": pod_spec},
    }
    if not spec.autoscaling.enabled:
        # With autoscaling on, the HPA owns the replica count: never send it then.
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner),
        "spec": deployment_spec,
    }
