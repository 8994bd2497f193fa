"""Model kind detection and the vLLM engine arguments built from settings (no engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.server.harness import server_settings

from kuberank_server.engine.kinds import QWEN3_RERANKER_HF_OVERRIDES, detect_model_kind
from kuberank_server.engine.scorer import (
    EMBEDDED_MODEL_NAME,
    ModelChoice,
    build_engine_args,
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
    assert args.gpu_memory_utilization == 0.2
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
