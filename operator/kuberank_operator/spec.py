"""A typed model of `RerankerService.spec`, with the CRD's defaults.

The API server applies the CRD's defaults and CEL rules, but they can be bypassed (an old CRD,
`--validate=false` on a test cluster, an emulator), so the operator checks the same rules again
here and turns a violation into a message a person can act on. A test keeps these defaults
equal to the CRD's.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, NotRequired, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from kuberank_contract import (
    API_KEY_AUTH_MODES,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_INSTRUCTION,
    DEFAULT_JWT_ALGORITHMS,
    DEFAULT_PARALLELISM,
    DEFAULT_REQUIRED_SCOPES,
    JWT_AUTH_MODES,
    AuthMode,
    AutoscalingDriver,
    ConnectionRecycling,
    Dtype,
    JwtAlgorithm,
    ModelKind,
    Parallelism,
    RequestLimits,
    default_cpu_kv_cache_bytes,
)
from kuberank_operator.quantity import quantity_bytes

Quantity = int | str


class CelRule(TypedDict):
    """One `x-kubernetes-validations` entry of the CRD."""

    rule: str
    message: str
    fieldPath: NotRequired[str]


# The resource's models (spec and status): camelCase names as the API has them, and field
# docstrings as the CRD's descriptions (what `kubectl explain` shows).
RESOURCE_MODEL_CONFIG = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    use_attribute_docstrings=True,
)


class SpecModel(BaseModel):
    model_config = RESOURCE_MODEL_CONFIG
    # CEL rules the API server checks on this object (generated into the CRD); the model's
    # own validators check the same rules for the operator, in the same words.
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()


class SecretKeyRef(SpecModel):
    name: str = Field(min_length=1)
    """Name of a Secret in the RerankerService's namespace."""
    key: str


class HfTokenSecretRef(SecretKeyRef):
    key: str = "token"
    """Key of the Secret that holds the token."""


class JwtSecretRef(SecretKeyRef):
    key: str = "secret"
    """Key of the Secret that holds the shared secret."""


class PublicKeySecretRef(SecretKeyRef):
    key: str = "public.pem"
    """Key of the Secret that holds the PEM public key."""


class ModelCache(SpecModel):
    size: Quantity = "20Gi"
    """Requested size of the cache volume (a Kubernetes quantity)."""
    storage_class_name: str | None = None
    """StorageClass of the cache volume; unset uses the cluster's default."""
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = "ReadWriteMany"
    """ReadWriteMany lets replicas on different nodes share the cache; ReadWriteOnce needs a
    storage class without RWX and keeps all replicas on one node."""


class ModelSpec(SpecModel):
    name: str = Field(min_length=1)
    """Hugging Face model id (e.g. Qwen/Qwen3-Reranker-0.6B) or a path inside the model cache
    volume."""
    revision: str = "main"
    """Model revision to load (branch, tag or commit hash)."""
    kind: ModelKind = "auto"
    """How the model scores a query and a document; auto detects it from the model's config."""
    instruction: str = DEFAULT_INSTRUCTION
    """Default task instruction for instruction-following rerankers (Qwen3-Reranker); requests
    may override it."""
    max_model_len: int = Field(32768, ge=16)
    """Engine context length in tokens (query plus document)."""
    dtype: Dtype = "auto"
    """Weight and activation precision; auto follows the model's config."""
    quantization: str | None = None
    """vLLM quantization method (e.g. fp8, awq); unset loads the weights as they are."""
    hf_token_secret_ref: HfTokenSecretRef | None = None
    """Secret key holding a Hugging Face token, for gated or private models (set as HF_TOKEN)."""
    cache: ModelCache | None = None
    """A PersistentVolumeClaim per service for downloaded weights; when absent the cache is an
    emptyDir and weights download at every start."""


# Bounded so that the API server can afford the CEL rule that reads every item.
MAX_EXTRA_ARGS = 64
MAX_EXTRA_ARG_LENGTH = 4096


class EngineSpec(SpecModel):
    gpu_memory_utilization: float = Field(DEFAULT_GPU_MEMORY_UTILIZATION, gt=0, le=1)
    """Fraction of GPU memory the engine may use for weights, activations and KV cache
    (GPU pods; CPU pods size their KV cache with cpuKvCacheSize)."""
    cpu_kv_cache_size: Quantity | None = None
    """On CPU pods (resources.gpu: 0), the engine's KV cache (a quantity such as 1Gi); it must
    fit within resources.memory beside the weights. Absent: a quarter of resources.memory.
    Ignored on GPU pods."""
    enable_chunked_prefill: bool = True
    """Split long prompts into chunks so that short requests are not stuck behind them."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of a shared prefix (the query and instruction) across documents."""
    max_num_seqs: int = Field(256, ge=1)
    """Most sequences (query-document pairs) the engine scores in one batch."""
    parallelism: Parallelism = DEFAULT_PARALLELISM
    """How a pod with resources.gpu > 1 uses its GPUs: tensor shards one engine over all of them
    (a model too big for one GPU; the GPU count must divide the model's attention heads, which
    the server checks at start), data runs one engine replica per GPU and balances requests over
    them (throughput). Ignored with 0 or 1 GPU."""
    extra_args: list[Annotated[str, StringConstraints(max_length=MAX_EXTRA_ARG_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_EXTRA_ARGS
    )
    """Extra vLLM engine flags, e.g. --enforce-eager. An item that is a flag may carry its value
    after a space, shell-quoted as in vLLM's docs (--hf-overrides '{"a": 1, "b": 2}'); any other
    item is the previous flag's value, taken verbatim (JSON with commas and quotes is fine).
    The GPU split is not set here but by resources.gpu and engine.parallelism."""


class ResourcesSpec(SpecModel):
    cel_rules = (
        # `has`: the API server also checks this rule on the object's default, `{}`, before
        # filling in the default of gpu (it refused the CRD with "no such key: gpu").
        CelRule(
            rule="!has(self.gpu) || self.gpu >= 0",
            message="resources.gpu must be 0 (a CPU pod) or more",
        ),
    )

    gpu: int = Field(1, ge=0)
    """GPUs per pod; 0 makes a CPU pod from the operator's CPU image (dev clusters, kind)."""
    gpu_resource: str = "nvidia.com/gpu"
    """Extended resource name of the GPU, also the key of the taint that GPU nodes carry."""
    cpu: Quantity = "4"
    """CPU request and limit per pod (a Kubernetes quantity)."""
    memory: Quantity = "16Gi"
    """Memory request and limit per pod (a Kubernetes quantity)."""


class Toleration(SpecModel):
    """A Kubernetes toleration."""

    key: str | None = None
    """Taint key the toleration applies to; empty matches all keys."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (the default)."""
    value: str | None = None
    """Taint value to match when the operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated before eviction."""


class SchedulingSpec(SpecModel):
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels a pod's node must carry."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Taints the pods tolerate, in addition to the GPU taint the operator tolerates itself."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Pod affinity, anti-affinity and node affinity (a Kubernetes Affinity)."""
    runtime_class_name: str | None = None
    """RuntimeClass of the pods (e.g. nvidia)."""
    priority_class_name: str | None = None
    """PriorityClass of the pods."""
    topology_spread_constraints: list[
        Annotated[dict[str, Any], Field(description="A Kubernetes TopologySpreadConstraint.")]
    ] = Field(default_factory=list)
    """How the pods spread over zones or nodes (Kubernetes TopologySpreadConstraints)."""


class AutoscalingSpec(SpecModel):
    enabled: bool = True
    """Make an autoscaler (a KEDA ScaledObject or an HPA, see driver); when false, spec.replicas
    pods run and any autoscaler is removed."""
    driver: AutoscalingDriver | None = None
    """Who scales the Deployment: keda (a KEDA ScaledObject with Prometheus triggers) or hpa (a
    HorizontalPodAutoscaler on Pods metrics served by prometheus-adapter). Null: the operator's
    default, which is keda where the cluster serves KEDA's API (keda.sh/v1alpha1) and hpa
    elsewhere. Both read the same metrics with the same targets; switching replaces one
    autoscaler by the other and leaves the replica count as it is."""
    min_replicas: int = Field(1, ge=1)
    """Fewest replicas the autoscaler keeps."""
    max_replicas: int = Field(4, ge=1)
    """Most replicas the autoscaler makes."""
    target_gpu_utilization: int = Field(70, ge=1, le=100, alias="targetGPUUtilization")
    """Average GPU utilization (percent, Pods metric kuberank_gpu_utilization) the autoscaler
    aims for."""
    target_concurrency: int | None = Field(16, ge=1)
    """Average requests in progress per pod (accepted and not yet answered: queued or being
    scored; Pods metric kuberank_requests_in_progress) the autoscaler aims for; null drops this
    metric. Unlike the queue, it rises with load before the pods saturate."""
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=3600)
    """How long the autoscaler waits before removing replicas, so that a short lull does not
    drop warm pods."""


class ApiKeysSecretRef(SpecModel):
    name: str = Field(min_length=1)
    """Name of a Secret in the RerankerService's namespace whose key apikeys.json holds the
    hashed API keys (`kuberank-server apikey create` prints entries for it)."""


class ApiKeysSpec(SpecModel):
    secret_ref: ApiKeysSecretRef
    """The Secret of hashed API keys, mounted into the pods as a file: the servers pick up
    added and revoked keys without a restart. The operator never reads it."""


class AuthSpec(SpecModel):
    mode: AuthMode = "jwt"
    """jwt: a valid JWT on every API call; apiKey: an API key (`Authorization: Bearer kr_...`
    or `X-API-Key`); jwtOrApiKey: either; disabled: serves anyone who reaches the Service."""
    api_keys: ApiKeysSpec | None = None
    """Hashed API keys: needed by the apiKey and jwtOrApiKey modes, unused by the others."""
    issuer: str | None = None
    """Required iss claim; unset accepts any issuer."""
    audience: str | None = None
    """Required aud claim; unset accepts tokens without an audience check."""
    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: list(DEFAULT_JWT_ALGORITHMS))
    """Accepted signing algorithms (the token's own header is never trusted for this)."""
    secret_ref: JwtSecretRef | None = None
    """Secret key holding the HS* shared secret."""
    public_key_secret_ref: PublicKeySecretRef | None = None
    """Secret key holding the PEM public key for RS*/ES* tokens (mounted as a file)."""
    # Never null: the key-source CEL rule counts the fields that are present.
    jwks_url: str | None = Field(
        None, alias="jwksURL", pattern=r"^https?://", json_schema_extra={"nullable": False}
    )
    """JWKS endpoint serving the RS*/ES* verification keys by kid."""
    required_scopes: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUIRED_SCOPES))
    """Scopes every credential must carry (a token's scope or scp claim, an API key's
    scopes)."""


class LimitsSpec(SpecModel, RequestLimits):
    """Bounds on each request and on the load one pod accepts (the server's own settings)."""


class TrafficSpec(SpecModel, ConnectionRecycling):
    """Keep-alive connection recycling (the server's own settings)."""


class ServiceSpec(SpecModel):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Kubernetes Service type."""
    port: int = Field(8000, ge=1, le=65535)
    """Port of the rerank API on the Service."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations put on the Service (e.g. for a load balancer)."""


class IssuerRef(SpecModel):
    name: str = Field(min_length=1)
    """Name of the cert-manager issuer that signs the certificate."""
    kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"
    """Issuer (in the RerankerService's namespace) or ClusterIssuer."""


# The keys of a kubernetes.io/tls Secret (cert-manager writes the same).
TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY = "tls.crt", "tls.key"
TLS_SOURCE_MESSAGE = "tls needs exactly one of secretName or issuerRef"


class TlsSpec(SpecModel):
    """HTTPS on the API port (the metrics port stays plain HTTP); absent: plain HTTP."""

    cel_rules = (
        CelRule(rule="has(self.secretName) != has(self.issuerRef)", message=TLS_SOURCE_MESSAGE),
    )

    # Never null: the CEL rule counts the fields that are present.
    secret_name: str | None = Field(None, min_length=1, json_schema_extra={"nullable": False})
    """A kubernetes.io/tls Secret (keys tls.crt and tls.key) in this namespace holding the
    server's certificate and key. A renewed Secret reaches the running pods within a minute or
    two (the kubelet's sync), and the server serves it to new connections without a restart."""
    issuer_ref: IssuerRef | None = None
    """A cert-manager issuer: the operator makes a cert-manager Certificate for the Service's
    DNS names (name, name.namespace, name.namespace.svc, name.namespace.svc.<cluster domain>),
    stored in the Secret <name>-tls, which cert-manager renews. Needs cert-manager in the
    cluster."""

    @model_validator(mode="after")
    def _one_source(self) -> TlsSpec:
        if (self.secret_name is None) == (self.issuer_ref is None):
            raise ValueError(TLS_SOURCE_MESSAGE)
        return self


class LabelSelectorRequirement(SpecModel):
    """One label requirement."""

    key: str = Field(min_length=1)
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key's value is compared with values."""
    values: list[str] = Field(default_factory=list)
    """Values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(SpecModel):
    """A Kubernetes label selector; {} selects all."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Label requirements that must all hold."""


class IpBlock(SpecModel):
    """Addresses, usually outside the cluster."""

    cidr: str = Field(min_length=1)
    """A CIDR such as 10.0.0.0/16."""
    except_: list[str] = Field(default_factory=list, alias="except")
    """CIDRs inside cidr to leave out."""


PEER_MESSAGE = "a peer is podSelector and/or namespaceSelector, or ipBlock alone"


class NetworkPolicyPeer(SpecModel):
    """A Kubernetes NetworkPolicyPeer: pods, namespaces or an IP block allowed in."""

    cel_rules = (
        CelRule(
            rule="(has(self.podSelector) || has(self.namespaceSelector)) != has(self.ipBlock)",
            message=PEER_MESSAGE,
        ),
    )

    pod_selector: LabelSelector | None = None
    """Pods selected by labels, in this namespace or in the namespaces namespaceSelector
    picks; {} selects all."""
    namespace_selector: LabelSelector | None = None
    """Namespaces selected by labels (all their pods, or those podSelector picks); {} selects
    all."""
    ip_block: IpBlock | None = None
    """Addresses, usually outside the cluster (pod addresses change: select pods instead)."""

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if selectors == (self.ip_block is not None):
            raise ValueError(PEER_MESSAGE)
        return self


MONITORING_NAMESPACE = "monitoring"
# A bound keeps the CEL rule on each peer within the API server's cost budget.
MAX_PEERS = 64


def _same_namespace() -> list[NetworkPolicyPeer]:
    return [NetworkPolicyPeer(pod_selector=LabelSelector())]


def _monitoring_namespace() -> list[NetworkPolicyPeer]:
    selector = LabelSelector(match_labels={"kubernetes.io/metadata.name": MONITORING_NAMESPACE})
    return [NetworkPolicyPeer(namespace_selector=selector)]


class NetworkSpec(SpecModel):
    """A NetworkPolicy admitting the API and metrics ports only from the peers listed; all
    other ingress to the pods is denied. Needs a network plugin that enforces NetworkPolicy."""

    allow_from: list[NetworkPolicyPeer] = Field(
        default_factory=_same_namespace, max_length=MAX_PEERS
    )
    """Who may call the API port (Kubernetes NetworkPolicyPeers: podSelector,
    namespaceSelector, ipBlock). Default: every pod in this namespace. An empty list admits no
    one."""
    metrics_from: list[NetworkPolicyPeer] = Field(
        default_factory=_monitoring_namespace, max_length=MAX_PEERS
    )
    """Who may scrape the metrics port. Default: pods in the namespace named monitoring (a
    namespaceSelector on kubernetes.io/metadata.name). An empty list admits no one."""


class MonitoringSpec(SpecModel):
    service_monitor: bool = True
    """Make a ServiceMonitor when the monitoring.coreos.com API exists in the cluster."""
    interval: str = Field("15s", pattern=r"^[0-9]+(ms|s|m|h)$")
    """Scrape interval."""


class DisruptionSpec(SpecModel):
    min_available: Quantity = 1
    """Pods (a number or a percentage) that must stay available during node drains."""


# vLLM's flags for how many GPUs the engine spans (long names with - or _, and short ones).
PARALLEL_SIZE_FLAG_PATTERN = (
    r"^(-tp|-pp|-dp|-dpl|--(tensor|pipeline|data)[-_]parallel[-_]size([-_]local)?)([ =]|$)"
)
PARALLEL_FLAGS_MESSAGE = (
    "engine.extraArgs must not set --tensor-parallel-size, --data-parallel-size or"
    " --pipeline-parallel-size: resources.gpu and engine.parallelism set how the engine uses"
    " the pod's GPUs"
)
MIN_REPLICAS_MESSAGE = "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"
KEY_SOURCE_MESSAGE = (
    "auth.mode jwt and jwtOrApiKey need exactly one key source: auth.secretRef (HS*), "
    "auth.publicKeySecretRef (RS*/ES*) or auth.jwksURL; or set auth.mode: apiKey or disabled"
)
API_KEYS_MESSAGE = (
    "auth.mode apiKey and jwtOrApiKey need auth.apiKeys.secretRef, the Secret of hashed API keys"
)


class RerankerSpec(SpecModel):
    """What to serve and how; the operator makes the Deployment, Service, autoscaler, PDB and
    friends from it."""

    cel_rules = (
        CelRule(
            rule="!self.autoscaling.enabled"
            " || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
            message=MIN_REPLICAS_MESSAGE,
            fieldPath=".autoscaling.minReplicas",
        ),
        CelRule(
            rule="!(self.auth.mode in ['jwt', 'jwtOrApiKey'])"
            " || (has(self.auth.secretRef) ? 1 : 0)"
            " + (has(self.auth.publicKeySecretRef) ? 1 : 0)"
            " + (has(self.auth.jwksURL) ? 1 : 0) == 1",
            message=KEY_SOURCE_MESSAGE,
            fieldPath=".auth",
        ),
        CelRule(
            rule=f"!self.engine.extraArgs.exists(a, a.matches('{PARALLEL_SIZE_FLAG_PATTERN}'))",
            message=PARALLEL_FLAGS_MESSAGE,
            fieldPath=".engine.extraArgs",
        ),
        CelRule(
            rule="!(self.auth.mode in ['apiKey', 'jwtOrApiKey']) || has(self.auth.apiKeys)",
            message=API_KEYS_MESSAGE,
            fieldPath=".auth.apiKeys",
        ),
    )

    model: ModelSpec
    """The reranking model and how to load it."""
    engine: EngineSpec = Field(default_factory=EngineSpec)
    """vLLM engine tuning."""
    image: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")
    """Server container image; unset uses the operator's default GPU image, or its CPU image
    when resources.gpu is 0."""
    replicas: int = Field(1, ge=0)
    """Number of server pods when autoscaling is off (ignored while autoscaling is on)."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """Compute resources of each server pod."""
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    """Where the server pods may run."""
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    """Autoscaling on the servers' own metrics, through KEDA or a HorizontalPodAutoscaler."""
    auth: AuthSpec = Field(default_factory=AuthSpec)
    """Authentication of the rerank API: JWT bearer tokens, API keys, or either."""
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    """Bounds on each request and on the load one pod accepts."""
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    """When the server closes a client's keep-alive connection (after its response, never
    mid-request), so that callers with connection pools spread over the replicas the autoscaler
    adds: kube-proxy balances per connection."""
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    """The Service in front of the pods."""
    tls: TlsSpec | None = None
    """HTTPS on the API port from a Secret or a cert-manager issuer; absent: plain HTTP."""
    network: NetworkSpec | None = None
    """A NetworkPolicy admitting the API port only from the peers listed and the metrics port
    only from the monitoring peers; absent: no NetworkPolicy."""
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    """Prometheus scraping of the servers' metrics port."""
    disruption: DisruptionSpec = Field(default_factory=DisruptionSpec)
    """The PodDisruptionBudget protecting the servers from voluntary evictions."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> RerankerSpec:
        # The first three are the CEL rules above, in the same words.
        scaling = self.autoscaling
        if scaling.enabled and scaling.min_replicas > scaling.max_replicas:
            raise ValueError(MIN_REPLICAS_MESSAGE)
        if self.auth.mode in JWT_AUTH_MODES and len(self.key_sources) != 1:
            raise ValueError(KEY_SOURCE_MESSAGE)
        if self.auth.mode in API_KEY_AUTH_MODES and self.auth.api_keys is None:
            raise ValueError(API_KEYS_MESSAGE)
        self._check_parallel_flags()
        self._check_cpu_kv_cache()
        if scaling.enabled and self.resources.gpu == 0 and scaling.target_concurrency is None:
            raise ValueError(
                "autoscaling a CPU pod (resources.gpu: 0) needs autoscaling.targetConcurrency,"
                " the only metric it has; or set autoscaling.enabled: false"
            )
        return self

    def _check_cpu_kv_cache(self) -> None:
        if self.resources.gpu > 0:
            return
        memory = quantity_bytes(self.resources.memory)
        if self.engine.cpu_kv_cache_size is None:
            return
        cache = quantity_bytes(self.engine.cpu_kv_cache_size)
        if cache >= memory:
            raise ValueError(
                f"engine.cpuKvCacheSize ({self.engine.cpu_kv_cache_size}) must be smaller than"
                f" resources.memory ({self.resources.memory}), which also holds the weights"
            )

    @property
    def cpu_kv_cache_bytes(self) -> int | None:
        """The KV cache of a CPU pod in bytes (None for GPU pods: gpuMemoryUtilization)."""
        if self.resources.gpu > 0:
            return None
        if self.engine.cpu_kv_cache_size is not None:
            return quantity_bytes(self.engine.cpu_kv_cache_size)
        return default_cpu_kv_cache_bytes(quantity_bytes(self.resources.memory))

    def _check_parallel_flags(self) -> None:
        # The CEL rule above, and what the spec asks for instead, with the numbers.
        args = self.engine.extra_args
        found = [
            # A flag alone in its item takes its value from the next item.
            " ".join(args[i : i + 2] if re.fullmatch(r"\S+", arg) else [arg])
            for i, arg in enumerate(args)
            if re.match(PARALLEL_SIZE_FLAG_PATTERN, arg)
        ]
        if not found:
            return
        gpus = self.resources.gpu
        asked = (
            f"resources.gpu: {gpus} with engine.parallelism: {self.engine.parallelism}"
            if gpus > 1
            else f"resources.gpu: {gpus} (one engine on one device)"
        )
        raise ValueError(
            f"{PARALLEL_FLAGS_MESSAGE}; engine.extraArgs has {', '.join(map(repr, found))}"
            f" while the spec asks for {asked}"
        )

    @property
    def key_sources(self) -> list[str]:
        sources = {
            "auth.secretRef": self.auth.secret_ref,
            "auth.publicKeySecretRef": self.auth.public_key_secret_ref,
            "auth.jwksURL": self.auth.jwks_url,
        }
        return [name for name, value in sources.items() if value is not None]

    def referenced_secrets(self) -> list[tuple[str, SecretKeyRef]]:
        """(spec field, reference) for every Secret key the pods will read, and the operator
        checks for. Not the API-key Secret: the operator never reads it (it is mounted)."""
        refs: list[tuple[str, SecretKeyRef | None]] = [
            ("model.hfTokenSecretRef", self.model.hf_token_secret_ref)
        ]
        if self.auth.mode in JWT_AUTH_MODES:
            refs += [
                ("auth.secretRef", self.auth.secret_ref),
                ("auth.publicKeySecretRef", self.auth.public_key_secret_ref),
            ]
        if self.tls is not None and self.tls.secret_name is not None:
            refs += [
                ("tls.secretName", SecretKeyRef(name=self.tls.secret_name, key=key))
                for key in (TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY)
            ]
        return [(field, ref) for field, ref in refs if ref is not None]


class InvalidSpecError(ValueError):
    """The spec breaks a rule; `str()` is a message for the person who wrote it."""


def parse_spec(raw: dict[str, Any]) -> RerankerSpec:
    try:
        return RerankerSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpecError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"spec.{path}: {message}" if path else f"spec: {message}")
    return "; ".join(problems)
