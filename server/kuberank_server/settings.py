"""The server's one settings object.

Every field is read from a `KUBERANK_<FIELD>` environment variable and can be overridden by
the matching `--field-name` flag of `kuberank-server serve`. The operator sets these variables
on the pods it creates, so the names here are part of the contract with `operator/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ModelKind = Literal["auto", "qwen3-reranker", "cross-encoder", "bi-encoder"]

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def _split_list(value: object) -> object:
    """Accept `a,b` from the environment as well as a JSON list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBERANK_", extra="ignore")

    # --- model and engine -------------------------------------------------------------------
    model: str | None = Field(
        None, description="Hugging Face id or local path; unset serves the embedded default"
    )
    served_model_name: str | None = Field(None, description="name reported by /v1/models")
    revision: str | None = Field(None, description="model revision (branch, tag or commit)")
    model_kind: ModelKind = Field("auto", description="detected from the model's config if auto")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="default Qwen3-Reranker instruction")
    max_model_len: int | None = Field(None, description="engine context length")
    dtype: Literal["auto", "half", "float16", "bfloat16", "float32"] = "auto"
    quantization: str | None = None
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    max_num_seqs: int | None = Field(None, gt=0)
    engine_extra_args: CommaList = Field(
        default_factory=list, description="extra vLLM engine CLI flags, e.g. --enforce-eager"
    )

    # --- network ----------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = Field(9100, ge=0, le=65535, description="0 turns the metrics port off")

    # --- auth -------------------------------------------------------------------------------
    auth_mode: Literal["jwt", "disabled"] = "jwt"
    jwt_secret: SecretStr | None = Field(None, description="HS* shared secret")
    jwt_secret_file: Path | None = Field(None, description="file holding the HS* shared secret")
    jwt_public_key_file: Path | None = Field(None, description="PEM public key for RS*/ES*")
    jwks_url: str | None = Field(None, description="JWKS endpoint for RS*/ES* keys by kid")
    jwt_algorithms: CommaList = Field(default_factory=lambda: ["HS256"])
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_required_scopes: CommaList = Field(default_factory=lambda: ["rerank"])
    jwt_leeway_seconds: float = Field(30, ge=0)
    jwks_cache_seconds: float = Field(300, gt=0, description="how long fetched keys are trusted")
    jwks_refetch_cooldown_seconds: float = Field(
        30, ge=0, description="minimum gap between refetches triggered by an unknown kid"
    )
    rate_limit_per_subject: float = Field(
        0, ge=0, description="requests per second per token subject; 0 means unlimited"
    )
    rate_limit_burst: int = Field(20, ge=1)

    # --- limits -----------------------------------------------------------------------------
    max_documents: int = Field(1000, ge=1)
    max_document_tokens: int = Field(4096, ge=1)
    max_query_tokens: int = Field(2048, ge=1)
    truncate: bool = Field(True, description="truncate long inputs; false rejects them with 413")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_concurrent_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(256, ge=0)

    # --- lifecycle --------------------------------------------------------------------------
    drain_timeout_seconds: float = Field(
        20, ge=0, description="bound on finishing in-flight requests after SIGTERM"
    )
    golden_query_check: bool = Field(
        True,
        description="ready only once a built-in golden query ranks its relevant document first;"
        " off only for models that are not trained rerankers (random test checkpoints)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="before")
    @classmethod
    def _lists_from_commas(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("engine_extra_args", "jwt_algorithms", "jwt_required_scopes"):
                if key in data:
                    data[key] = _split_list(data[key])
        return data
