"""The server's one settings object.

Every field is read from a `KUBERANK_<FIELD>` environment variable and can be overridden by
the matching `--field-name` flag of `kuberank-server serve`. Lists travel as JSON
(`KUBERANK_JWT_ALGORITHMS='["RS256", "ES256"]'`), decoded by pydantic-settings, so an item may
hold commas and quotes. The operator sets these variables on the pods it creates; the enums,
defaults and bounds it shares with this file come from `kuberank_contract`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kuberank_contract import (
    CPU_KV_CACHE_BYTES_WITHOUT_LIMIT,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_INSTRUCTION,
    DEFAULT_JWT_ALGORITHMS,
    DEFAULT_PARALLELISM,
    DEFAULT_REQUIRED_SCOPES,
    ENV_PREFIX,
    HTTP_PORT,
    METRICS_PORT,
    MIN_CPU_KV_CACHE_BYTES,
    AuthMode,
    ConnectionRecycling,
    Dtype,
    ModelKind,
    Parallelism,
    RequestLimits,
)


class ServerSettings(BaseSettings, RequestLimits, ConnectionRecycling):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- model and engine -------------------------------------------------------------------
    model: str | None = Field(
        None, description="Hugging Face id or local path; unset serves the embedded default"
    )
    served_model_name: str | None = Field(None, description="name reported by /v1/models")
    revision: str | None = Field(None, description="model revision (branch, tag or commit)")
    model_kind: ModelKind = Field("auto", description="detected from the model's config if auto")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="default Qwen3-Reranker instruction")
    max_model_len: int | None = Field(None, description="engine context length")
    dtype: Dtype = Field(
        "auto",
        description="weights' precision; auto takes the model's own (float32 for the embedded"
        " default on CPU)",
    )
    quantization: str | None = Field(
        None, description="vLLM quantization method (e.g. fp8, awq); unset: none"
    )
    gpu_memory_utilization: float = Field(
        DEFAULT_GPU_MEMORY_UTILIZATION,
        gt=0,
        le=1,
        description="share of each GPU's memory the engine may use (weights, activations, KV"
        " cache); not used on CPU, where --cpu-kv-cache-bytes sizes the cache",
    )
    cpu_kv_cache_bytes: int | None = Field(
        None,
        ge=MIN_CPU_KV_CACHE_BYTES,
        description="on CPU, the engine's KV cache in bytes; unset: a quarter of the container's"
        f" memory limit, or {CPU_KV_CACHE_BYTES_WITHOUT_LIMIT >> 30} GiB where there is none."
        " Not used on GPUs",
    )
    enable_chunked_prefill: bool = Field(
        True,
        description="split long prompts into chunks so short requests are not stuck behind"
        " them (on: vLLM's default, where the model supports it)",
    )
    enable_prefix_caching: bool = Field(
        True,
        description="reuse the KV cache of a shared prefix (query, instruction) across documents"
        " (on: vLLM's default, where the model supports it)",
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="most sequences the engine scores in one batch; unset: vLLM's"
    )
    engine_extra_args: list[str] = Field(
        default_factory=list,
        description='extra vLLM engine CLI flags as a JSON list, e.g. ["--enforce-eager"]',
    )

    # --- GPUs: how many the engine uses, and how ----------------------------------------------
    gpus: int = Field(
        1, ge=0, description="GPUs the engine uses; 0 or 1 run one engine on the one device"
    )
    parallelism: Parallelism = Field(
        DEFAULT_PARALLELISM,
        description="with gpus > 1: tensor shards one engine over them all, data runs one"
        " engine replica per GPU",
    )
    termination_message_file: Path | None = Field(
        None,
        description="where a failed start writes its reason for Kubernetes to show"
        " (the container's terminationMessagePath)",
    )

    # --- network ----------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="address the API and metrics ports listen on")
    port: int = Field(HTTP_PORT, ge=1, le=65535, description="the API port")
    metrics_port: int = Field(
        METRICS_PORT, ge=0, le=65535, description="0 turns the metrics port off"
    )

    # --- TLS (HTTPS on the API port; the metrics port stays plain HTTP) ----------------------
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain for HTTPS on the API port (with --tls-key-file); "
        "unset serves plain HTTP. Reloaded when the file changes, without a restart",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of --tls-cert-file")
    tls_reload_check_seconds: float = Field(
        5,
        ge=0,
        description="how often, at most, the TLS files are checked for a rotated certificate "
        "(at the next handshake after this interval)",
    )

    @model_validator(mode="after")
    def _tls_files_together(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    # --- HTTP hardening: below the application, on the API and the metrics port ------------
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="request line and headers larger than this get 431"
    )
    header_timeout_seconds: float = Field(
        10, gt=0, description="a request whose headers are not complete by then gets 408, closed"
    )
    body_timeout_seconds: float = Field(
        30, gt=0, description="a request body not complete this long after its headers gets 408"
    )
    max_connections: int = Field(
        1024, ge=1, description="open connections per port; more are answered 503 and closed"
    )
    max_connections_per_client: int = Field(
        256,
        ge=1,
        description="open connections per client address on a port, within max_connections; "
        "more are answered 503 and closed (the probes keep a reserve past the port's cap)",
    )

    # --- auth -------------------------------------------------------------------------------
    auth_mode: AuthMode = Field(
        "jwt",
        description="which credential every API route needs: a JWT, an API key, either, or"
        " none (disabled, logged loudly)",
    )
    jwt_secret: SecretStr | None = Field(None, description="HS* shared secret")
    jwt_secret_file: Path | None = Field(None, description="file holding the HS* shared secret")
    jwt_public_key_file: Path | None = Field(None, description="PEM public key for RS*/ES*")
    jwks_url: str | None = Field(None, description="JWKS endpoint for RS*/ES* keys by kid")
    jwt_algorithms: list[str] = Field(
        default_factory=lambda: list[str](DEFAULT_JWT_ALGORITHMS),
        description="JWT algorithms accepted (never taken from the token)",
    )
    jwt_issuer: str | None = Field(None, description="required iss claim; unset: not checked")
    jwt_audience: str | None = Field(None, description="required aud claim; unset: not checked")
    jwt_required_scopes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REQUIRED_SCOPES),
        description="scopes every credential (JWT or API key) must carry",
    )
    jwt_leeway_seconds: float = Field(
        30, ge=0, description="clock skew allowed when checking exp and nbf"
    )
    jwks_cache_seconds: float = Field(300, gt=0, description="how long fetched keys are trusted")
    jwks_refetch_cooldown_seconds: float = Field(
        30, ge=0, description="minimum gap between refetches triggered by an unknown kid"
    )
    rate_limit_per_subject: float = Field(
        0,
        ge=0,
        description="requests per second per subject (JWT sub, or an API key's subject unless "
        "the key has a rate of its own); 0 means unlimited",
    )
    rate_limit_burst: int = Field(
        20, ge=1, description="requests a subject may send at once above its per-second rate"
    )

    # --- API keys and the audit log (auth modes apiKey / jwtOrApiKey) -----------------------
    api_keys_file: Path | None = Field(
        None,
        description="JSON file of hashed API keys by name (the key Secret's apikeys.json, "
        "mounted); needed by auth modes apiKey and jwtOrApiKey",
    )
    api_keys_reload_seconds: float = Field(
        5,
        gt=0,
        description="how often, at most, the API key file is checked for changes: an added or "
        "revoked key takes effect within this many seconds of the file changing",
    )
    audit_unauthenticated_records_per_second: int = Field(
        20,
        ge=1,
        description="most audit records per second for requests without a verified credential "
        "(failed auth and the like); past it, one summary record counts the suppressed ones",
    )

    # --- limits (the shared ones come from RequestLimits) -------------------------------------
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="larger request bodies get 413"
    )

    # --- autoscaling: start-up and probe logging (connection recycling: ConnectionRecycling) --
    compile_cache_dir: Path | None = Field(
        None,
        description="where vLLM keeps its torch.compile cache (sets VLLM_CACHE_ROOT before the"
        " engine starts); on a volume shared by the replicas, a second start skips compiling."
        " Unset keeps vLLM's default (VLLM_CACHE_ROOT, else ~/.cache/vllm)",
    )
    log_probes: bool = Field(
        False, description="log /health and /ready requests in the request log too"
    )
    open_docs: bool = Field(
        False,
        description="serve /docs and /openapi.json without a credential (on under --dev); "
        "off, they need one like every API route",
    )

    # --- lifecycle --------------------------------------------------------------------------
    drain_timeout_seconds: float = Field(
        20, ge=0, description="bound on finishing in-flight requests after SIGTERM"
    )
    golden_query_check: bool = Field(
        True,
        description="ready only once a built-in golden query ranks its relevant document first;"
        " off only for models that are not trained rerankers (random test checkpoints)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="level of the server's own logs"
    )
