"""The facts the rerank server and the operator share, each defined once.

Both sides import this package (it needs pydantic only: no vLLM, no Kopf). The server's
settings and the operator's spec models, hence the generated CRD, derive their enums,
defaults and bounds from here; tests/contract checks that the two sides still agree.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from pydantic import BaseModel, Field

# --- what a model is and how it is loaded ---------------------------------------------------
ModelKind = Literal["auto", "qwen3-reranker", "cross-encoder", "bi-encoder"]
MODEL_KINDS: Final = get_args(ModelKind)
# vLLM's own dtype names; `half` and `float16` are the same precision.
Dtype = Literal["auto", "half", "float16", "bfloat16", "float32"]
DTYPES: Final = get_args(Dtype)
DEFAULT_INSTRUCTION: Final = (
    "Given a web search query, retrieve relevant passages that answer the query"
)
DEFAULT_GPU_MEMORY_UTILIZATION: Final = 0.9
# On CPU the KV cache is sized in bytes: vLLM's CPU backend reads the fraction above as a
# share of the whole host's memory (and refuses to start unless that much is free), which
# has nothing to do with what one pod may use. A quarter of the container's memory limit
# leaves the rest to weights and the runtime; with no limit known, a modest fixed size.
CPU_KV_CACHE_SHARE_OF_MEMORY_LIMIT: Final = 0.25
CPU_KV_CACHE_BYTES_WITHOUT_LIMIT: Final = 1 << 30
MIN_CPU_KV_CACHE_BYTES: Final = 64 << 20


def default_cpu_kv_cache_bytes(memory_limit_bytes: int | None) -> int:
    """The CPU KV cache for a container with this memory limit (None: no limit)."""
    if memory_limit_bytes is None:
        return CPU_KV_CACHE_BYTES_WITHOUT_LIMIT
    share = int(memory_limit_bytes * CPU_KV_CACHE_SHARE_OF_MEMORY_LIMIT)
    return max(MIN_CPU_KV_CACHE_BYTES, share)


# --- how one pod uses several GPUs -----------------------------------------------------------
# `tensor`: one engine sharded over all the pod's GPUs (a model too big for one GPU);
# `data`: one engine replica per GPU, requests balanced over them (throughput).
Parallelism = Literal["tensor", "data"]
PARALLELISMS: Final = get_args(Parallelism)
DEFAULT_PARALLELISM: Final[Parallelism] = "tensor"

# --- autoscaling -----------------------------------------------------------------------------
# Who scales a RerankerService's Deployment. keda: a KEDA ScaledObject with Prometheus triggers;
# hpa: an autoscaling/v2 HorizontalPodAutoscaler on custom Pods metrics (prometheus-adapter).
AutoscalingDriver = Literal["keda", "hpa"]
AUTOSCALING_DRIVERS: Final = get_args(AutoscalingDriver)

# --- auth -----------------------------------------------------------------------------------
# jwt: JWT bearer tokens; apiKey: API keys (`Bearer kr_...` or `X-API-Key`); jwtOrApiKey:
# either; disabled: no credential at all (sandboxes only).
AuthMode = Literal["jwt", "apiKey", "jwtOrApiKey", "disabled"]
AUTH_MODES: Final = get_args(AuthMode)
JWT_AUTH_MODES: Final = frozenset({"jwt", "jwtOrApiKey"})
API_KEY_AUTH_MODES: Final = frozenset({"apiKey", "jwtOrApiKey"})
# The one key of the API-key Secret, and the name of the file it is mounted as: a JSON
# object of hashed keys by key name (`kuberank-server apikey create` prints an entry).
API_KEYS_FILE_NAME: Final = "apikeys.json"
HmacAlgorithm = Literal["HS256", "HS384", "HS512"]
RsaAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
EcAlgorithm = Literal["ES256", "ES384", "ES512"]
EdDsaAlgorithm = Literal["EdDSA"]
JwtAlgorithm = Literal[HmacAlgorithm, RsaAlgorithm, EcAlgorithm, EdDsaAlgorithm]
HMAC_ALGORITHMS: Final = frozenset(get_args(HmacAlgorithm))
RSA_ALGORITHMS: Final = frozenset(get_args(RsaAlgorithm))
EC_ALGORITHMS: Final = frozenset(get_args(EcAlgorithm))
EDDSA_ALGORITHMS: Final = frozenset(get_args(EdDsaAlgorithm))
JWT_ALGORITHMS: Final = get_args(JwtAlgorithm)
DEFAULT_JWT_ALGORITHMS: Final[tuple[JwtAlgorithm, ...]] = ("HS256",)
DEFAULT_REQUIRED_SCOPES: Final = ("rerank",)


# One request's tokens: 128 documents of 1,024 tokens, or 1,000 of 131. The bound keeps the
# worst request a pod accepts to seconds of GPU work (minutes of CPU on the CPU build).
DEFAULT_MAX_REQUEST_TOKENS: Final = 131_072
# Clients time out at 30 s (README): a request expected to wait longer than this for a slot
# would leave too little of that for scoring, so it is told at once when to come back.
DEFAULT_MAX_QUEUE_WAIT_SECONDS: Final = 10.0


class RequestLimits(BaseModel):
    """Bounds on each request and on the load one pod accepts.

    The same fields are the server's settings (`KUBERANK_MAX_DOCUMENTS`, ...) and the CR's
    `spec.limits` (camelCase), so a bound or default is written here alone.
    """

    max_documents: int = Field(
        1000, ge=1, description="Most documents in one request (413 past it)."
    )
    max_document_tokens: int = Field(4096, ge=1, description="Most tokens of one document.")
    max_query_tokens: int = Field(2048, ge=1, description="Most tokens of the query.")
    max_request_tokens: int = Field(
        DEFAULT_MAX_REQUEST_TOKENS,
        ge=1,
        description="Most tokens one request may send to the model, after truncation: the "
        "query and every document, as counted in usage.prompt_tokens (pair models repeat the "
        "query with each document). Past it the request is refused with 413.",
    )
    truncate: bool = Field(
        True, description="Truncate inputs over the token limits; false rejects them with 413."
    )
    max_concurrent_requests: int = Field(64, ge=1, description="Requests one pod scores at once.")
    max_queued_requests: int = Field(
        256,
        ge=0,
        description="Requests one pod queues beyond those; more are answered 429 with Retry-After.",
    )
    max_queue_wait_seconds: float = Field(
        DEFAULT_MAX_QUEUE_WAIT_SECONDS,
        gt=0,
        description="Longest expected wait for the work accepted ahead of a request (its "
        "prompt tokens at the engine's measured throughput); a request that would wait longer "
        "is answered 429 at once, with a Retry-After that books it a turn.",
    )


class ConnectionRecycling(BaseModel):
    """When the server asks a keep-alive client to reconnect (`Connection: close` on a response,
    never cutting a request), so that pooled callers spread over new replicas.

    The same fields are the server's settings (`KUBERANK_MAX_REQUESTS_PER_CONNECTION`, ...) and
    the CR's `spec.traffic` (camelCase), so a bound or default is written here alone.
    """

    max_requests_per_connection: int = Field(
        1000,
        ge=0,
        description="Requests answered on one keep-alive connection before the server closes it"
        " (the last response carries Connection: close), so that pooled clients reconnect and"
        " reach new replicas; 0 never closes a connection for its request count.",
    )
    max_connection_age_seconds: int = Field(
        60,
        ge=0,
        description="Seconds after which a keep-alive connection is closed after its next"
        " response; 0 never closes a connection for its age.",
    )


# --- how settings travel from the operator to the server -----------------------------------
ENV_PREFIX: Final = "KUBERANK_"


def env_var(setting: str) -> str:
    """The environment variable of a server setting (`max_documents` -> KUBERANK_MAX_DOCUMENTS).

    Lists and maps travel as JSON, which the server's settings decode (pydantic-settings)."""
    return ENV_PREFIX + setting.upper()


# --- ports and labels ----------------------------------------------------------------------
HTTP_PORT: Final = 8000
METRICS_PORT: Final = 9100
SERVER_APP_NAME: Final = "kuberank-server"
SERVER_COMPONENT: Final = "reranker"
OPERATOR_NAME: Final = "kuberank-operator"  # also the operator's field manager
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
