"""The operator's settings: `KUBERANK_OPERATOR_<FIELD>` environment variables or CLI flags."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kuberank_contract import AutoscalingDriver
from kuberank_operator.autoscaling_metrics import DEFAULT_PROMETHEUS_URL

# auto: keda where the cluster serves KEDA's API (keda.sh/v1alpha1), else hpa.
DefaultAutoscalingDriver = Literal["auto"] | AutoscalingDriver


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBERANK_OPERATOR_", extra="ignore")

    gpu_image: str = Field(
        "ghcr.io/kuberank/kuberank-server:0.1.0",
        description="server image for RerankerServices with resources.gpu > 0 and no spec.image",
    )
    cpu_image: str = Field(
        "ghcr.io/kuberank/kuberank-server:0.1.0-cpu",
        description="server image (embedded model baked in) for resources.gpu: 0",
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="namespaces to watch (comma list); empty watches all"
    )
    liveness_port: int = Field(
        8080, ge=0, le=65535, description="port of the /healthz liveness endpoint; 0 turns it off"
    )
    json_logs: bool = Field(True, description="one JSON object per log line")
    cluster_domain: str = Field(
        "cluster.local",
        description="the cluster's DNS domain, for the names TLS certificates cover",
    )
    drain_timeout_seconds: int = Field(
        20, ge=0, description="KUBERANK_DRAIN_TIMEOUT_SECONDS given to the servers"
    )

    autoscaling_driver: DefaultAutoscalingDriver = Field(
        "auto",
        description="driver of RerankerServices whose spec.autoscaling.driver is null: keda, hpa,"
        " or auto (keda where the cluster serves keda.sh/v1alpha1, else hpa)",
    )
    keda_prometheus_url: str = Field(
        DEFAULT_PROMETHEUS_URL,
        min_length=1,
        description="Prometheus that KEDA's triggers query (serverAddress)",
    )
    keda_authentication_name: str | None = Field(
        None,
        min_length=1,
        description="a KEDA TriggerAuthentication (in each RerankerService's namespace) or"
        " ClusterTriggerAuthentication holding the credentials for that Prometheus; unset: none",
    )
    keda_authentication_kind: Literal["TriggerAuthentication", "ClusterTriggerAuthentication"] = (
        Field("TriggerAuthentication", description="the kind keda_authentication_name names")
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _namespaces_from_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
