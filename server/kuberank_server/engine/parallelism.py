"""How the engine uses several GPUs: the vLLM flags for `gpus` and `parallelism`, and the
model check that only the server can make (it has the model's config; the operator has not).

- `tensor`: one engine sharded over the GPUs (`--tensor-parallel-size N`). Each GPU holds a
  share of every layer's attention heads, so N must divide them; vLLM would say so itself,
  but later and in its own terms, and a bad KV-head split only fails inside a worker.
- `data`: N independent engine replicas, one per GPU (`--data-parallel-size N`); vLLM's
  `AsyncLLM` balances requests over them in-process (pooling requests included: vLLM treats
  the ranks of a model without experts as independent engines).
"""

from __future__ import annotations

from typing import Any

from kuberank_contract import Parallelism
from kuberank_server.engine import EngineConfigurationError

PARALLEL_SIZE_FLAGS: dict[Parallelism, str] = {
    "tensor": "--tensor-parallel-size",
    "data": "--data-parallel-size",
}


class ParallelismError(EngineConfigurationError):
    """The model cannot be split as asked; `str()` says why, with the numbers."""


def parallel_argv(gpus: int, parallelism: Parallelism) -> list[str]:
    """Engine flags that put all `gpus` to work; none for one GPU or a CPU."""
    if gpus <= 1:
        return []
    return [PARALLEL_SIZE_FLAGS[parallelism], str(gpus)]


def check_tensor_split(model: str, gpus: int, hf_config: dict[str, Any]) -> None:
    """Raise `ParallelismError` if tensor parallelism cannot split `model` over `gpus`."""
    heads = hf_config.get("num_attention_heads")
    if not isinstance(heads, int) or gpus <= 1:
        return  # a config without the usual key: vLLM checks it with its own model registry
    kv_heads = hf_config.get("num_key_value_heads") or heads
    if heads % gpus == 0 and _kv_heads_split(kv_heads, gpus):
        return
    counts = [n for n in range(2, heads + 1) if heads % n == 0 and _kv_heads_split(kv_heads, n)]
    if heads % gpus:
        problem = f"its {heads} attention heads are not divisible by {gpus}"
    else:
        problem = (
            f"its {kv_heads} key-value heads cannot be split over {gpus} GPUs"
            f" ({gpus} must divide them or be a multiple of them)"
        )
    choices = ", ".join(map(str, counts)) if counts else "none above 1"
    raise ParallelismError(
        f"tensor parallelism cannot shard model {model} over {gpus} GPUs: {problem}."
        f" GPU counts that work for tensor parallelism: {choices};"
        f" or use data parallelism (one engine replica per GPU) if the model fits one GPU"
        f" (RerankerService: resources.gpu, engine.parallelism;"
        f" server: KUBERANK_GPUS, KUBERANK_PARALLELISM)"
    )


def check_world_size(gpus: int, engine_args: Any) -> None:
    """The parsed engine arguments must span the GPUs the server was given, no more or fewer
    (`engine_extra_args` could ask for others, even through an abbreviated flag)."""
    if gpus == 0:
        return  # CPU: vLLM's CPU workers are cores, not devices the pod was granted
    sizes = {
        "tensor": engine_args.tensor_parallel_size,
        "pipeline": engine_args.pipeline_parallel_size,
        "data": engine_args.data_parallel_size,
    }
    spanned = sizes["tensor"] * sizes["pipeline"] * sizes["data"]
    if spanned != gpus:
        described = " x ".join(f"{kind} {size}" for kind, size in sizes.items())
        raise ParallelismError(
            f"the engine arguments span {spanned} GPUs ({described} parallel) but the server has"
            f" {gpus} (KUBERANK_GPUS; RerankerService resources.gpu): set the GPU count and"
            f" parallelism there, not in the engine's extra arguments"
        )


def _kv_heads_split(kv_heads: int, gpus: int) -> bool:
    # vLLM's QKV projection shards KV heads, or replicates them when GPUs outnumber them.
    return kv_heads % gpus == 0 if gpus <= kv_heads else gpus % kv_heads == 0
