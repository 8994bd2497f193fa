"""Model kind detection and the vLLM engine arguments built from settings (no engine)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.server.harness import server_settings

from kuberank_contract import DEFAULT_GPU_MEMORY_UTILIZATION
from kuberank_server.engine.kinds import QWEN3_RERANKER_HF_OVERRIDES, detect_model_kind
from kuberank_server.engine.parallelism import ParallelismError, check_tensor_split
from kuberank_server.engine.scorer import (
    EMBEDDED_MODEL_NAME,
    ModelChoice,
    build_engine_args,
    check_parallelism,
    choose_model,
    embedded_model_path,
)

QWEN3_CAUSAL = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}
BERT_CLASSIFIER = {"architectures": ["BertForSequenceClassification"]}


@pytest.mark.parametrize(
    ("name", "config", "kind"),
    [
        ("Qwen/Qwen3-Reranker-0.6B", QWEN3_CAUSAL, "qwen3-reranker"),
        ("/models/qwen3-reranker-4b", QWEN3_CAUSAL, "qwen3-reranker"),
        ("Qwen/Qwen3-Embedding-0.6B", QWEN3_CAUSAL, "bi-encoder"),
        ("BAAI/bge-reranker-v2-m3", {"architectures": ["XLMRobertaForSequenceClassification"]},
         "cross-encoder"),
        ("cross-encoder/ms-marco-MiniLM-L6-v2", BERT_CLASSIFIER, "cross-encoder"),
        ("sentence-transformers/all-MiniLM-L6-v2", {"architectures": ["BertModel"]}, "bi-encoder"),
        ("some/model", {}, "bi-encoder"),
    ],
)  # fmt: skip
def test_detect_model_kind(name: str, config: dict[str, object], kind: str) -> None:
    assert detect_model_kind(name, config) == kind


def test_forced_kind_wins_over_detection() -> None:
    settings = server_settings(model="/nowhere/plain-model", model_kind="qwen3-reranker")
    assert choose_model(settings).kind == "qwen3-reranker"  # no config.json read at all


def test_embedded_default_engine_arguments() -> None:
    settings = server_settings()
    choice = choose_model(settings)
    assert choice == ModelChoice(embedded_model_path(), EMBEDDED_MODEL_NAME, "bi-encoder", True)
    args = build_engine_args(settings, choice)
    assert (args.model, args.runner, args.dtype, args.max_model_len) == (
        embedded_model_path(), "pooling", "float32", 256
    )  # fmt: skip
    assert args.served_model_name == [EMBEDDED_MODEL_NAME]
    assert args.gpu_memory_utilization == DEFAULT_GPU_MEMORY_UTILIZATION
    # "On" leaves the choice to vLLM, which enables it where the model supports it.
    assert args.enable_prefix_caching is None
    assert args.hf_overrides in (None, {})


@pytest.mark.parametrize("revision", [None, "main"])
def test_the_embedded_model_named_by_its_hub_id_serves_the_bundled_weights(
    revision: str | None,
) -> None:
    choice = choose_model(server_settings(model=EMBEDDED_MODEL_NAME, revision=revision))
    assert choice == ModelChoice(embedded_model_path(), EMBEDDED_MODEL_NAME, "bi-encoder", True)


def test_another_revision_of_the_embedded_model_goes_to_the_hub() -> None:
    settings = server_settings(
        model=EMBEDDED_MODEL_NAME, revision="abc123", model_kind="bi-encoder"
    )
    assert choose_model(settings).path == EMBEDDED_MODEL_NAME


def test_qwen3_engine_arguments_and_extra_args(tmp_path: Path) -> None:
    # A local path: with HF_HUB_OFFLINE (as `make test` sets) vLLM resolves a hub id against
    # the local cache while parsing arguments, and nothing is cached here. Forcing the kind
    # means no config.json is read.
    settings = server_settings(
        model=str(tmp_path),
        model_kind="qwen3-reranker",
        dtype="bfloat16",
        max_model_len=8192,
        enable_prefix_caching=False,
        engine_extra_args=["--enforce-eager", "--max-num-batched-tokens 4096"],
    )
    args = build_engine_args(settings, choose_model(settings))
    assert args.hf_overrides == QWEN3_RERANKER_HF_OVERRIDES
    assert (args.dtype, args.max_model_len) == ("bfloat16", 8192)
    assert args.enable_prefix_caching is False
    assert args.enforce_eager is True
    assert args.max_num_batched_tokens == 4096


def test_extra_args_from_the_environment_are_a_json_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Items keep their commas and quotes: a flag with a shell-quoted JSON value, and a flag
    followed by its JSON value as an item of its own."""
    pooler = {"pooling_type": "LAST", "use_activation": False}
    overrides = {"max_position_embeddings": 512, "model_type": "bert"}
    items = [
        "--enforce-eager",
        "--max-num-seqs 8",
        f"--pooler-config '{json.dumps(pooler)}'",
        "--hf-overrides",
        json.dumps(overrides),
    ]
    monkeypatch.setenv("KUBERANK_ENGINE_EXTRA_ARGS", json.dumps(items))
    settings = server_settings()
    assert settings.engine_extra_args == items
    args = build_engine_args(settings, choose_model(settings))
    assert (args.enforce_eager, args.max_num_seqs) == (True, 8)
    assert args.hf_overrides == overrides
    assert pooler.items() <= vars(args.pooler_config).items()


def test_unknown_engine_flag_is_a_clear_error() -> None:
    settings = server_settings(engine_extra_args=["--no-such-vllm-flag"])
    with pytest.raises(ValueError, match="invalid vLLM engine arguments"):
        build_engine_args(settings, choose_model(settings))


# --- several GPUs: the engine arguments for each parallelism, through vLLM's parser ---------


@pytest.mark.parametrize(
    ("gpus", "parallelism", "tensor", "data"),
    [
        (0, "tensor", 1, 1),  # a CPU pod: parallelism ignored
        (1, "data", 1, 1),
        (2, "tensor", 2, 1),
        (2, "data", 1, 2),
        (8, "tensor", 8, 1),
        (4, "data", 1, 4),
    ],
)
def test_every_gpu_is_used_as_the_parallelism_says(
    tmp_path: Path, gpus: int, parallelism: str, tensor: int, data: int
) -> None:
    settings = server_settings(
        model=str(tmp_path), model_kind="qwen3-reranker", gpus=gpus, parallelism=parallelism
    )
    args = build_engine_args(settings, choose_model(settings))
    assert (args.tensor_parallel_size, args.data_parallel_size) == (tensor, data)
    assert args.pipeline_parallel_size == 1


@pytest.mark.parametrize(
    ("gpus", "extra_args", "spanned"),
    [
        (2, ["--tensor-parallel-size 4"], "span 8 GPUs (tensor 4 x pipeline 1 x data 2"),
        (1, ["-tp", "2"], "span 2 GPUs (tensor 2 x pipeline 1 x data 1"),
        (2, ["--pipeline-parallel", "2"], "span 4 GPUs"),  # argparse accepts abbreviations
    ],
)
def test_extra_args_cannot_span_other_gpus_than_the_server_has(
    tmp_path: Path, gpus: int, extra_args: list[str], spanned: str
) -> None:
    settings = server_settings(
        model=str(tmp_path),
        model_kind="qwen3-reranker",
        gpus=gpus,
        parallelism="data",
        engine_extra_args=extra_args,
    )
    with pytest.raises(ParallelismError, match=re.escape(spanned)) as caught:
        build_engine_args(settings, choose_model(settings))
    assert f"but the server has {gpus}" in str(caught.value)


QWEN3_RERANKER_0_6B_HEADS = {"num_attention_heads": 16, "num_key_value_heads": 8}


@pytest.mark.parametrize("gpus", [1, 2, 4, 8, 16])
def test_tensor_split_that_divides_the_heads_passes(gpus: int) -> None:
    check_tensor_split("Qwen/Qwen3-Reranker-0.6B", gpus, QWEN3_RERANKER_0_6B_HEADS)


@pytest.mark.parametrize(
    ("config", "gpus", "problem", "choices"),
    [
        (QWEN3_RERANKER_0_6B_HEADS, 3, "its 16 attention heads are not divisible by 3",
         "2, 4, 8, 16"),
        (QWEN3_RERANKER_0_6B_HEADS, 32, "its 16 attention heads are not divisible by 32",
         "2, 4, 8, 16"),
        # 6 divides 12 heads, but 4 KV heads can be neither split over 6 nor replicated.
        ({"num_attention_heads": 12, "num_key_value_heads": 4}, 6,
         "its 4 key-value heads cannot be split over 6 GPUs", "2, 4, 12"),
    ],
)  # fmt: skip
def test_tensor_split_that_does_not_fit_says_so_with_the_numbers(
    config: dict[str, int], gpus: int, problem: str, choices: str
) -> None:
    with pytest.raises(ParallelismError) as caught:
        check_tensor_split("some/model", gpus, config)
    message = str(caught.value)
    assert f"cannot shard model some/model over {gpus} GPUs: {problem}" in message
    assert f"GPU counts that work for tensor parallelism: {choices};" in message
    assert "resources.gpu, engine.parallelism" in message


def test_the_servers_start_check_reads_the_models_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["Qwen3ForCausalLM"], **QWEN3_RERANKER_0_6B_HEADS})
    )
    settings = server_settings(model=str(tmp_path), model_kind="qwen3-reranker", gpus=3)
    with pytest.raises(ParallelismError, match="16 attention heads are not divisible by 3"):
        check_parallelism(settings, choose_model(settings))
    # Data parallelism runs whole replicas: nothing to divide.
    check_parallelism(settings.model_copy(update={"parallelism": "data"}), choose_model(settings))


def test_the_embedded_models_heads_are_checked_too() -> None:
    settings = server_settings(gpus=5)
    with pytest.raises(ParallelismError, match="12 attention heads are not divisible by 5"):
        check_parallelism(settings, choose_model(settings))
