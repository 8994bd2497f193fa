"""A typed model of `RerankerService.spec`, with the CRD's defaults.

The API server applies the CRD's defaults and CEL rules, but they can be bypassed (an old CRD,
`--validate=false` on a test cluster, an emulator), so the operator checks the same rules again
here and turns a violation into a message a person can act on. A test keeps these defaults
equal to the CRD's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from kuberank_contract import RequestLimits

Quantity = int | str


class CelRule(TypedDict):
    """One `x-kubernetes-validations` entry of the CRD."""

    rule: str
    message: str
    fieldPath: NotRequired[str]


class SpecModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    # CEL rules the API server checks on this object (generated into the CRD); the model's
    # own validators check the same rules for the operator, in the same words.
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()


class SecretKeyRef(SpecModel):
    name: str = Field(min_length=1)
    key: str


class HfTokenSecretRef(SecretKeyRef):
    key: str = "token"


class JwtSecretRef(SecretKeyRef):
    key: str = "secret"


class PublicKeySecretRef(SecretKeyRef):
    key: str = "public.pem"


class ModelCache(SpecModel):
    size: Quantity = "20Gi"
    storage_class_name: str | None = None
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = "ReadWriteMany"


class ModelSpec(SpecModel):
    name: str = Field(min_length=1)
    revision: str = "main"
    kind: Literal["auto", "qwen3-reranker", "cross-encoder", "bi-encoder"] = "auto"
    instruction: str = "Given a web search query, retrieve relevant passages that answer the query"
    max_model_len: int = Field(32768, ge=16)
    dtype: Literal["auto", "half", "bfloat16", "float32"] = "auto"
    quantization: str | None = None
    hf_token_secret_ref: HfTokenSecretRef | None = None
    cache: ModelCache | None = None


class EngineSpec(SpecModel):
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    max_num_seqs: int = Field(256, ge=1)
    extra_args: list[str] = Field(default_factory=list)


class ResourcesSpec(SpecModel):
    cel_rules = (
        CelRule(rule="self.gpu >= 0", message="resources.gpu must be 0 (a CPU pod) or more"),
    )

    gpu: int = Field(1, ge=0)
    gpu_resource: str = "nvidia.com/gpu"
    cpu: Quantity = "4"
    memory: Quantity = "16Gi"


class Toleration(SpecModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class SchedulingSpec(SpecModel):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    runtime_class_name: str | None = None
    priority_class_name: str | None = None
    topology_spread_constraints: list[dict[str, Any]] = Field(default_factory=list)


class AutoscalingSpec(SpecModel):
    enabled: bool = True
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(4, ge=1)
    target_gpu_utilization: int = Field(70, ge=1, le=100, alias="targetGPUUtilization")
    target_requests_waiting: int | None = Field(8, ge=1)
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=3600)


class AuthSpec(SpecModel):
    mode: Literal["jwt", "disabled"] = "jwt"
    issuer: str | None = None
    audience: str | None = None
    algorithms: list[
        Literal[
            "HS256",
            "HS384",
            "HS512",
            "RS256",
            "RS384",
            "RS512",
            "ES256",
            "ES384",
            "ES512",
            "PS256",
            "PS384",
            "PS512",
        ]
    ] = Field(default_factory=lambda: ["HS256"])  # type: ignore[arg-type]
    secret_ref: JwtSecretRef | None = None
    public_key_secret_ref: PublicKeySecretRef | None = None
    jwks_url: str | None = Field(None, alias="jwksURL", pattern=r"^https?://")
    required_scopes: list[str] = Field(default_factory=lambda: ["rerank"])


class LimitsSpec(SpecModel, RequestLimits):
    """Bounds on each request and on the load one pod accepts (the server's own settings)."""


class ServiceSpec(SpecModel):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(8000, ge=1, le=65535)
    annotations: dict[str, str] = Field(default_factory=dict)


class MonitoringSpec(SpecModel):
    service_monitor: bool = True
    interval: str = Field("15s", pattern=r"^[0-9]+(ms|s|m|h)$")


class DisruptionSpec(SpecModel):
    min_available: Quantity = 1


MIN_REPLICAS_MESSAGE = "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"
KEY_SOURCE_MESSAGE = (
    "auth.mode jwt needs exactly one key source: auth.secretRef (HS*), "
    "auth.publicKeySecretRef (RS*/ES*) or auth.jwksURL; or set auth.mode: disabled"
)


class RerankerSpec(SpecModel):
    cel_rules = (
        CelRule(
            rule="!self.autoscaling.enabled"
            " || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
            message=MIN_REPLICAS_MESSAGE,
            fieldPath=".autoscaling.minReplicas",
        ),
        CelRule(
            rule="self.auth.mode != 'jwt' || (has(self.auth.secretRef) ? 1 : 0)"
            " + (has(self.auth.publicKeySecretRef) ? 1 : 0)"
            " + (has(self.auth.jwksURL) ? 1 : 0) == 1",
            message=KEY_SOURCE_MESSAGE,
            fieldPath=".auth",
        ),
    )

    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    image: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")
    replicas: int = Field(1, ge=0)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    auth: AuthSpec = Field(default_factory=AuthSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    disruption: DisruptionSpec = Field(default_factory=DisruptionSpec)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> RerankerSpec:
        # The first two are the CEL rules above, in the same words.
        scaling = self.autoscaling
        if scaling.enabled and scaling.min_replicas > scaling.max_replicas:
            raise ValueError(MIN_REPLICAS_MESSAGE)
        if self.auth.mode == "jwt" and len(self.key_sources) != 1:
            raise ValueError(KEY_SOURCE_MESSAGE)
        if scaling.enabled and self.resources.gpu == 0 and scaling.target_requests_waiting is None:
            raise ValueError(
                "autoscaling a CPU pod (resources.gpu: 0) needs autoscaling.targetRequestsWaiting,"
                " the only metric it has; or set autoscaling.enabled: false"
            )
        return self

    @property
    def key_sources(self) -> list[str]:
        sources = {
            "auth.secretRef": self.auth.secret_ref,
            "auth.publicKeySecretRef": self.auth.public_key_secret_ref,
            "auth.jwksURL": self.auth.jwks_url,
        }
        return [name for name, value in sources.items() if value is not None]

    def referenced_secrets(self) -> list[tuple[str, SecretKeyRef]]:
        """(spec field, reference) for every Secret key the pods will read."""
        refs: list[tuple[str, SecretKeyRef | None]] = [
            ("model.hfTokenSecretRef", self.model.hf_token_secret_ref)
        ]
        if self.auth.mode == "jwt":
            refs += [
                ("auth.secretRef", self.auth.secret_ref),
                ("auth.publicKeySecretRef", self.auth.public_key_secret_ref),
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
