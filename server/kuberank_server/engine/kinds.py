"""Which kind of reranker a checkpoint is, read from its `config.json`.

- `qwen3-reranker`: Qwen3-Reranker checkpoints. Their config says `Qwen3ForCausalLM`, exactly
  like Qwen3-Embedding's, so the config alone cannot tell them apart: the model's name
  (Hugging Face id or folder) must contain "reranker", as every published one does.
- `cross-encoder`: any `*ForSequenceClassification` (BGE reranker, ms-marco MiniLM).
- `bi-encoder`: everything else, scored by the cosine of query and document embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from kuberank_contract import ModelKind

ResolvedKind = Literal["qwen3-reranker", "cross-encoder", "bi-encoder"]

QWEN3_RERANKER_HF_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


def detect_model_kind(model_name: str, config: dict[str, Any]) -> ResolvedKind:
    architectures = [str(name) for name in config.get("architectures") or []]
    is_qwen3 = config.get("model_type") == "qwen3" or "Qwen3ForCausalLM" in architectures
    if is_qwen3 and "reranker" in model_name.lower():
        return "qwen3-reranker"
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return "cross-encoder"
    return "bi-encoder"


def resolve_model_kind(
    model_name: str, requested: ModelKind, revision: str | None = None
) -> ResolvedKind:
    """The configured kind, or (for `auto`) the one detected from the model's config."""
    if requested != "auto":
        return requested
    return detect_model_kind(model_name, load_hf_config(model_name, revision))


def load_hf_config(model_name: str, revision: str | None = None) -> dict[str, Any]:
    """`config.json` from a local folder, or from the Hugging Face cache / hub for an id."""
    local = Path(model_name)
    if local.is_dir():
        return dict(json.loads((local / "config.json").read_text()))
    from transformers import AutoConfig

    return dict(AutoConfig.from_pretrained(model_name, revision=revision).to_dict())
