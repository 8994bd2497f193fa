"""Prompt building with the models' real tokenizers: exact Qwen3 prompt ids, token types
for cross-encoders, truncation and rejection at the limits (no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from kuberank_server.engine.prompts import (
    QWEN3_PREFIX,
    QWEN3_SUFFIX,
    BiEncoderPrompts,
    CrossEncoderPrompts,
    Qwen3RerankerPrompts,
    TokenLimits,
    format_qwen3_prompt,
)
from kuberank_server.engine.scorer import embedded_model_path
from kuberank_server.http.errors import PayloadTooLargeError

GENEROUS = TokenLimits(max_query_tokens=2048, max_document_tokens=4096, truncate=True)


@pytest.fixture(scope="module")
def minilm_tokenizer() -> object:
    return AutoTokenizer.from_pretrained(embedded_model_path())


def test_qwen3_prompt_is_the_published_template() -> None:
    prompt = format_qwen3_prompt("Find it", "the query", "the doc")
    assert prompt == (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n<Instruct>: Find it\n<Query>: the query\n"
        "<Document>: the doc<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert prompt.startswith(QWEN3_PREFIX) and prompt.endswith(QWEN3_SUFFIX)


def test_qwen3_ids_equal_tokenizing_the_whole_prompt(tiny_qwen3_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_path)
    builder = Qwen3RerankerPrompts(tokenizer, max_model_len=512)
    documents = ["Using indexes can speed up queries.", " leading space", "", "中文 🚀"]
    prepared = builder.prepare("How fast?", documents, "Judge it", GENEROUS)
    for document, item in zip(documents, prepared.documents, strict=True):
        whole = tokenizer(format_qwen3_prompt("Judge it", "How fast?", document))["input_ids"]
        assert item.token_ids == whole
    assert prepared.truncated_documents == 0


def test_qwen3_document_truncated_to_fit_the_context(tiny_qwen3_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_path)
    builder = Qwen3RerankerPrompts(tokenizer, max_model_len=128)
    prepared = builder.prepare("query", ["indexes " * 500, "short"], "Judge", GENEROUS)
    assert prepared.truncated_documents == 1
    assert all(len(item.token_ids) <= 128 for item in prepared.documents)
    assert prepared.documents[0].token_ids[-len(builder.suffix_ids) :] == builder.suffix_ids


def test_cross_encoder_pairs_carry_the_document_segment_start(minilm_tokenizer: object) -> None:
    builder = CrossEncoderPrompts(minilm_tokenizer, max_model_len=64)
    prepared = builder.prepare("fast queries", ["use an index", "word " * 100], "", GENEROUS)
    reference = minilm_tokenizer("fast queries", "use an index")  # type: ignore[operator]
    first = prepared.documents[0]
    assert first.token_ids == reference["input_ids"]
    assert first.token_type_boundary == reference["token_type_ids"].index(1)
    assert len(prepared.documents[1].token_ids) == 64  # truncated to the context exactly
    assert prepared.truncated_documents == 1


def test_bi_encoder_counts_and_limits(minilm_tokenizer: object) -> None:
    builder = BiEncoderPrompts(minilm_tokenizer, max_model_len=256)
    limits = TokenLimits(max_query_tokens=4, max_document_tokens=3, truncate=True)
    prepared = builder.prepare("one two three four five", ["a b c d", "a b"], "", limits)
    assert prepared.query is not None
    assert len(prepared.query.token_ids) == 4 + 2  # [CLS] ... [SEP]
    assert [len(item.token_ids) for item in prepared.documents] == [3 + 2, 2 + 2]
    assert prepared.truncated_documents == 1
    assert prepared.prompt_tokens == 6 + 5 + 4


def test_limits_reject_when_truncation_is_off(minilm_tokenizer: object) -> None:
    builder = BiEncoderPrompts(minilm_tokenizer, max_model_len=256)
    strict = TokenLimits(max_query_tokens=10, max_document_tokens=3, truncate=False)
    with pytest.raises(PayloadTooLargeError) as rejected:
        builder.prepare("query", ["fine", "far too many words here"], "", strict)
    assert rejected.value.param == "documents[1]"
    assert "5 tokens" in rejected.value.message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Indexes speed up database queries. " * 30_000, id="1MB-english"),
        pytest.param("x" * 200_000, id="one-long-word"),
        pytest.param("数据库索引可以加快查询速度。" * 20_000, id="cjk-no-spaces"),
        pytest.param(("word   " * 700) + "tail " * 10_000, id="space-runs"),
        pytest.param("a" * 4_100 + " b" * 5_000, id="word-across-the-head"),
    ],
)
def test_long_texts_fit_exactly_as_tokenizing_all_of_them(
    minilm_tokenizer: object, text: str
) -> None:
    """Only a head of a long text is tokenized (bounded memory and CPU for megabyte
    documents), and what is scored is the same prefix the whole text would give."""
    builder = BiEncoderPrompts(minilm_tokenizer, max_model_len=256)
    budget = 254
    fitted = builder._fit([text], budget, truncate=True, param="documents")
    whole = minilm_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
    assert fitted.token_ids == [whole["input_ids"][:budget]]
    if len(whole["input_ids"]) <= budget:  # one [UNK] for a word over 100 characters
        assert fitted.texts == [text]
    else:
        assert fitted.texts == [text[: whole["offset_mapping"][budget - 1][1]]]


class CountingTokenizer:
    """The real tokenizer, counting its calls (each costs a fraction of a millisecond)."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self.tokenizer(*args, **kwargs)  # type: ignore[operator]

    def __getattr__(self, name: str) -> object:
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize("builder_class", [BiEncoderPrompts, CrossEncoderPrompts])
def test_query_and_documents_are_tokenized_in_one_call_then_assembled(
    minilm_tokenizer: object, builder_class: type[BiEncoderPrompts | CrossEncoderPrompts]
) -> None:
    counting = CountingTokenizer(minilm_tokenizer)
    documents = ["use an index", "cache hot rows", "word " * 300]
    prepared = builder_class(counting, max_model_len=64).prepare(
        "fast queries", documents, "", GENEROUS
    )

    # One call fits the query and every document to its budget, one builds the inputs.
    assert counting.calls == 2
    assert prepared.truncated_documents == 1
    reference = builder_class(minilm_tokenizer, max_model_len=64)
    assert prepared == reference.prepare("fast queries", documents, "", GENEROUS)
