"""The operator's settings: `KUBERANK_OPERATOR_<FIELD>` environment variables or CLI flags."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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

    @field_validator("namespaces", mode="before")
    @classmethod
    def _namespaces_from_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
