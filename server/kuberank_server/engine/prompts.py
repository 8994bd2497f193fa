"""How a (query, documents) request becomes token ids for the engine, per model kind.

Every kind truncates (or, with truncation off, rejects) the query and each document with the
model's own tokenizer, at the limit of the settings, the request, and the model's context.
Text is cut at a token's character offset, so what is scored is a prefix of what was sent.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kuberank_server.engine.kinds import ResolvedKind
from kuberank_server.http.errors import PayloadTooLargeError

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def qwen3_middle(instruction: str, query: str, document: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def format_qwen3_prompt(instruction: str, query: str, document: str) -> str:
    """The whole Qwen3-Reranker prompt as one string (what the model was trained on)."""
    return QWEN3_PREFIX + qwen3_middle(instruction, query, document) + QWEN3_SUFFIX


@dataclass(frozen=True)
class TokenLimits:
    max_query_tokens: int
    max_document_tokens: int
    truncate: bool
    # Tokens of the whole request after truncation (`PreparedInputs.prompt_tokens`).
    max_request_tokens: int | None = None


@dataclass(frozen=True)
class EngineInput:
    token_ids: list[int]
    # Cross-encoders with segment embeddings (BERT): where the document's segment starts.
    token_type_boundary: int | None = None


@dataclass(frozen=True)
class PreparedInputs:
    # Bi-encoders embed the query once; pair kinds carry it inside every document input.
    query: EngineInput | None
    documents: list[EngineInput]
    truncated_documents: int

    @property
    def prompt_tokens(self) -> int:
        query_tokens = len(self.query.token_ids) if self.query else 0
        return query_tokens + sum(len(item.token_ids) for item in self.documents)


def check_request_tokens(prompt_tokens: int, limit: int | None, param: str) -> None:
    """413 for a request whose truncated inputs exceed the per-request token budget."""
    if limit is not None and prompt_tokens > limit:
        raise PayloadTooLargeError(
            f"the request has {prompt_tokens} tokens after truncation (the query and every "
            f"document, as sent to the model); the limit per request is {limit}",
            param=param,
        )


class PromptBuilder(ABC):
    def __init__(self, tokenizer: Any, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len

    @abstractmethod
    def prepare(
        self, query: str, documents: Sequence[str], instruction: str, limits: TokenLimits
    ) -> PreparedInputs: ...

    def _fit_query(
        self, query: str, budget: int, limits: TokenLimits, heads: Heads | None = None
    ) -> Fitted:
        return self._fit([query], budget, limits.truncate, "query", heads)

    def _fit_documents(
        self, documents: Sequence[str], budget: int, limits: TokenLimits, heads: Heads | None = None
    ) -> Fitted:
        return self._fit(documents, budget, limits.truncate, "documents", heads)

    def _fit(
        self, texts: Sequence[str], budget: int, truncate: bool, param: str,
        heads: Heads | None = None,
    ) -> Fitted:  # fmt: skip
        """`texts` within `budget` tokens each; `heads`: their tokenization, if done already
        (with a budget at least this one)."""
        if budget < 1:
            raise PayloadTooLargeError(
                f"the query leaves no room for documents in the model's context "
                f"({self.max_model_len} tokens)",
                param="query",
            )
        if heads is None:
            heads = self._encode_heads(texts, [budget] * len(texts))
        fitted = Fitted(texts=[], token_ids=[], truncated=0)
        for position, (text, ids, offsets, head_characters) in enumerate(
            zip(texts, heads.token_ids, heads.offsets, heads.characters, strict=True)
        ):
            if len(ids) <= budget:
                fitted.texts.append(text)
                fitted.token_ids.append(ids)
                continue
            if not truncate:
                where = param if param == "query" else f"{param}[{position}]"
                # Only a head of a long text was tokenized: its count is a lower bound.
                whole = len(text) <= head_characters
                counted = str(len(ids)) if whole else f"at least {len(ids)}"
                raise PayloadTooLargeError(
                    f"{where} has {counted} tokens, more than the limit of {budget} "
                    "(truncation is off)",
                    param=where,
                )
            fitted.texts.append(text[: offsets[budget - 1][1]])
            fitted.token_ids.append(ids[:budget])
            fitted.truncated += 1
        return fitted

    def _encode_heads(self, texts: Sequence[str], budgets: Sequence[int]) -> Heads:
        """Token ids and offsets of each text, or of a head of it long enough to hold more
        than its budget of tokens exactly as the whole text has them, in one tokenizer call
        (each call costs a fraction of a millisecond in Python whatever it tokenizes). A 2 MB
        document cut to 256 tokens costs the tokenizer a few kilobytes, not half a million
        tokens of memory."""
        characters = [budget * HEAD_CHARACTERS_PER_TOKEN for budget in budgets]
        heads = [text[:head] for text, head in zip(texts, characters, strict=True)]
        encoded = self.tokenizer(heads, add_special_tokens=False, return_offsets_mapping=True)
        all_ids, all_offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
        for position, text in enumerate(texts):
            if len(text) > characters[position] and not _head_decides(
                text, characters[position], all_offsets[position], budgets[position]
            ):
                whole = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                all_ids[position] = whole["input_ids"]
                all_offsets[position] = whole["offset_mapping"]
                characters[position] = len(text)
        return Heads(all_ids, all_offsets, characters)


def _head_decides(text: str, head_characters: int, offsets: list[tuple[int, int]],
                  budget: int) -> bool:  # fmt: skip
    """Whether the head's first `budget + 1` tokens are the whole text's: they are when a
    word starts after them inside the head, since every tokenizer here splits words at
    whitespace and normalizes within them (else the whole text is tokenized)."""
    if len(offsets) <= budget:
        return False
    return _WORD_START.search(text, offsets[budget][1], head_characters) is not None


# Text beyond this many characters per token of budget is not tokenized when a head decides.
HEAD_CHARACTERS_PER_TOKEN = 16
_WORD_START = re.compile(r"\s\S")


@dataclass(frozen=True)
class Heads:
    """Texts tokenized (no special tokens), each as far as `characters` of it: the ids and
    the character offsets of its tokens. A budget of fewer tokens than the one a head was cut
    for is decided by the same head (a word starting after its last token still does)."""

    token_ids: list[list[int]]
    offsets: list[list[tuple[int, int]]]
    characters: list[int]

    def part(self, start: int, stop: int | None = None) -> Heads:
        return Heads(
            self.token_ids[start:stop], self.offsets[start:stop], self.characters[start:stop]
        )


@dataclass
class Fitted:
    """Texts within their token budget, with their token ids (no special tokens)."""

    texts: list[str]
    token_ids: list[list[int]]
    truncated: int


class BiEncoderPrompts(PromptBuilder):
    """Query and documents embedded separately; the score is their cosine."""

    def prepare(
        self, query: str, documents: Sequence[str], instruction: str, limits: TokenLimits
    ) -> PreparedInputs:
        room = self.max_model_len - self.tokenizer.num_special_tokens_to_add(pair=False)
        query_budget = min(limits.max_query_tokens, room)
        document_budget = min(limits.max_document_tokens, room)
        heads = self._encode_heads(
            [query, *documents], [query_budget] + [document_budget] * len(documents)
        )
        [query] = self._fit_query(query, query_budget, limits, heads.part(0, 1)).texts
        fitted = self._fit_documents(documents, document_budget, limits, heads.part(1))
        encoded = self.tokenizer([query, *fitted.texts])["input_ids"]
        return PreparedInputs(
            query=EngineInput(encoded[0]),
            documents=[EngineInput(ids) for ids in encoded[1:]],
            truncated_documents=fitted.truncated,
        )


class CrossEncoderPrompts(PromptBuilder):
    """`[CLS] query [SEP] document [SEP]` through a sequence-classification head."""

    def prepare(
        self, query: str, documents: Sequence[str], instruction: str, limits: TokenLimits
    ) -> PreparedInputs:
        room = self.max_model_len - self.tokenizer.num_special_tokens_to_add(pair=True)
        # A long query may take at most half the context, so documents keep some room.
        query_budget = min(limits.max_query_tokens, room // 2)
        # The documents' budget depends on the query's tokens: their heads are cut for the
        # most it can be, so that one tokenizer call serves the query and the documents.
        heads = self._encode_heads(
            [query, *documents],
            [query_budget] + [min(limits.max_document_tokens, room)] * len(documents),
        )
        fitted_query = self._fit_query(query, query_budget, limits, heads.part(0, 1))
        [query] = fitted_query.texts
        query_tokens = len(fitted_query.token_ids[0])
        fitted = self._fit_documents(
            documents, min(limits.max_document_tokens, room - query_tokens), limits,
            heads.part(1),
        )  # fmt: skip
        encoded = self.tokenizer([query] * len(fitted.texts), fitted.texts)
        segments = encoded.get("token_type_ids")
        inputs = [
            EngineInput(ids, _document_segment_start(segments[i]) if segments else None)
            for i, ids in enumerate(encoded["input_ids"])
        ]
        return PreparedInputs(query=None, documents=inputs, truncated_documents=fitted.truncated)


class Qwen3RerankerPrompts(PromptBuilder):
    """The Qwen3-Reranker chat prompt; the engine scores P("yes") at its last position.

    Like Qwen's reference code, the fixed prefix and suffix are tokenized once and the
    instruction/query/document part per document: special tokens bound all three, so the
    ids equal those of tokenizing the whole prompt string.
    """

    def __init__(self, tokenizer: Any, max_model_len: int) -> None:
        super().__init__(tokenizer, max_model_len)
        self.prefix_ids: list[int] = tokenizer(QWEN3_PREFIX, add_special_tokens=False)["input_ids"]
        self.suffix_ids: list[int] = tokenizer(QWEN3_SUFFIX, add_special_tokens=False)["input_ids"]

    def prepare(
        self, query: str, documents: Sequence[str], instruction: str, limits: TokenLimits
    ) -> PreparedInputs:
        room = self.max_model_len - len(self.prefix_ids) - len(self.suffix_ids)
        [query] = self._fit_query(query, min(limits.max_query_tokens, room // 2), limits).texts
        head = qwen3_middle(instruction, query, "")
        # One token of slack: the document's first token may merge with the head's last.
        head_tokens = len(self.tokenizer(head, add_special_tokens=False)["input_ids"]) + 1
        fitted = self._fit_documents(
            documents, min(limits.max_document_tokens, room - head_tokens), limits
        )
        middles = self.tokenizer(
            [qwen3_middle(instruction, query, document) for document in fitted.texts],
            add_special_tokens=False,
        )["input_ids"]
        inputs = [EngineInput(self.prefix_ids + ids + self.suffix_ids) for ids in middles]
        return PreparedInputs(query=None, documents=inputs, truncated_documents=fitted.truncated)


def _document_segment_start(token_type_ids: list[int]) -> int:
    """Index of the first token of the second segment (vLLM's compressed token types)."""
    return next(
        (i for i, segment in enumerate(token_type_ids) if segment == 1), len(token_type_ids)
    )


PROMPT_BUILDERS: dict[ResolvedKind, type[PromptBuilder]] = {
    "bi-encoder": BiEncoderPrompts,
    "cross-encoder": CrossEncoderPrompts,
    "qwen3-reranker": Qwen3RerankerPrompts,
}
