"""The work behind every rerank route: limits, one engine call per request, sort, top_n.

Routes translate their dialect into `RerankScoring.rerank` and its `Ranking` back out, so
limits, truncation, metrics and ordering are the same whatever the client speaks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request

from kuberank_server.engine.prompts import TokenLimits, check_request_tokens
from kuberank_server.engine.scorer import Scorer
from kuberank_server.http.errors import InvalidRequestError, PayloadTooLargeError
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.lifecycle import ConcurrencyLimiter
from kuberank_server.runtime.settings import ServerSettings


@dataclass(frozen=True)
class RankedDocument:
    index: int
    relevance: float
    logit: float


@dataclass(frozen=True)
class Ranking:
    id: str
    model: str
    # Best first; ties keep request order.
    documents: list[RankedDocument]
    prompt_tokens: int


@dataclass(frozen=True)
class PairScores:
    id: str
    model: str
    # In the order of the pairs.
    scores: list[float]
    prompt_tokens: int


def new_request_id(prefix: str = "rerank") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class RerankScoring:
    """Scores rerank and score requests: checks limits, waits for a slot, records metrics."""

    def __init__(
        self,
        scorer: Scorer,
        settings: ServerSettings,
        metrics: ServerMetrics,
        concurrency_limiter: ConcurrencyLimiter,
    ) -> None:
        self.scorer = scorer
        self.settings = settings
        self.metrics = metrics
        self.concurrency_limiter = concurrency_limiter
        self.started_at = int(time.time())

    @property
    def model_name(self) -> str:
        return self.scorer.choice.served_name

    async def rerank(
        self,
        request: Request,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        max_tokens_per_doc: int | None = None,
        truncate: bool | None = None,
        documents_param: str = "documents",
    ) -> Ranking:
        request.state.documents = len(documents)
        self._check_document_count(len(documents), documents_param)
        limits = self._limits(max_tokens_per_doc, truncate)
        # Our own id, not the client's X-Request-Id: engine request ids must be unique.
        request_id = new_request_id()
        # Tokenized first: admission weighs the request by its work.
        prepared = await self.scorer.prepare(
            query, documents, instruction=instruction or self.settings.instruction, limits=limits
        )
        check_request_tokens(prepared.prompt_tokens, limits.max_request_tokens, "documents")
        async with self.concurrency_limiter.slot(prepared.prompt_tokens):
            scores = await self.scorer.score_prepared(prepared, request_id)
        self._record(len(documents), scores.prompt_tokens, scores.truncated_documents)
        ranked = sorted(
            (
                RankedDocument(index, relevance, logit)
                for index, (relevance, logit) in enumerate(
                    zip(scores.relevance, scores.logits, strict=True)
                )
            ),
            key=lambda item: -item.relevance,
        )
        return Ranking(
            id=request_id,
            model=self.model_name,
            documents=ranked[:top_n] if top_n is not None else ranked,
            prompt_tokens=scores.prompt_tokens,
        )

    async def score_pairs(
        self,
        request: Request,
        queries: Sequence[str],
        documents: Sequence[str],
        *,
        instruction: str | None = None,
    ) -> PairScores:
        """vLLM's score API: one query against every document, or query i with document i."""
        request.state.documents = len(documents)
        if len(queries) not in (1, len(documents)):
            raise InvalidRequestError(
                f"text_1 has {len(queries)} texts and text_2 {len(documents)}: "
                "give one text_1, or as many as text_2",
                param="text_1",
            )
        self._check_document_count(len(documents), "text_2")
        limits = self._limits(None, None)
        request_id = new_request_id("score")
        groups = _group_by_query(queries, documents)
        prepared = [
            await self.scorer.prepare(
                query,
                [documents[i] for i in positions],
                instruction=instruction or self.settings.instruction,
                limits=limits,
            )
            for query, positions in groups.items()
        ]
        # The budget is per request, not per query group.
        prompt_tokens = sum(group.prompt_tokens for group in prepared)
        check_request_tokens(prompt_tokens, limits.max_request_tokens, "text_2")
        async with self.concurrency_limiter.slot(prompt_tokens):
            group_scores = await asyncio.gather(
                *(
                    self.scorer.score_prepared(group, f"{request_id}-q{number}")
                    for number, group in enumerate(prepared)
                )
            )
        by_position: dict[int, float] = {}
        for positions, scores in zip(groups.values(), group_scores, strict=True):
            by_position.update(zip(positions, scores.relevance, strict=True))
        truncated = sum(scores.truncated_documents for scores in group_scores)
        self._record(len(documents), prompt_tokens, truncated)
        return PairScores(
            id=request_id,
            model=self.model_name,
            scores=[by_position[i] for i in range(len(documents))],
            prompt_tokens=prompt_tokens,
        )

    def _check_document_count(self, count: int, param: str) -> None:
        if count > self.settings.max_documents:
            raise PayloadTooLargeError(
                f"{count} documents in one request; the limit is {self.settings.max_documents}",
                param=param,
            )

    def _limits(self, max_tokens_per_doc: int | None, truncate: bool | None) -> TokenLimits:
        document_tokens = self.settings.max_document_tokens
        if max_tokens_per_doc is not None:
            document_tokens = min(document_tokens, max_tokens_per_doc)
        return TokenLimits(
            max_query_tokens=self.settings.max_query_tokens,
            max_document_tokens=document_tokens,
            max_request_tokens=self.settings.max_request_tokens,
            # An explicit per-request choice (TEI `truncate`, NIM `truncate`) wins, and a
            # client-chosen `max_tokens_per_doc` asks for truncation by definition.
            truncate=(
                truncate
                if truncate is not None
                else (max_tokens_per_doc is not None or self.settings.truncate)
            ),
        )

    def _record(self, documents: int, prompt_tokens: int, truncated: int) -> None:
        self.metrics.documents_per_request.observe(documents)
        self.metrics.pairs_scored_total.inc(documents)
        self.metrics.prompt_tokens_total.inc(prompt_tokens)
        self.metrics.truncated_documents_total.inc(truncated)


def _group_by_query(queries: Sequence[str], documents: Sequence[str]) -> dict[str, list[int]]:
    """Positions of the documents scored against each distinct query (order kept)."""
    if len(queries) == 1:
        return {queries[0]: list(range(len(documents)))}
    groups: dict[str, list[int]] = {}
    for position, query in enumerate(queries):
        groups.setdefault(query, []).append(position)
    return groups
