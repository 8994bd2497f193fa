"""Thin routes: each dialect's body in, `RerankScoring` does the work, its shape out."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Security
from fastapi.security import HTTPBearer

from kuberank_server.auth import require_principal
from kuberank_server.http.errors import error_responses
from kuberank_server.rerank.protocol import (
    CohereBilledUnits,
    CohereMeta,
    CohereRerankRequest,
    CohereRerankResponse,
    CohereRerankResult,
    DocumentText,
    ModelCard,
    ModelList,
    NimRanking,
    NimRankingRequest,
    NimRankingResponse,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
    SharedRerankRequest,
    TeiRank,
    TeiRerankRequest,
)
from kuberank_server.rerank.serving import Ranking, RerankScoring


# Dependencies are `async def`: FastAPI runs plain `def` ones in a worker thread, a thread
# hop per request per dependency.
async def require_serving(request: Request) -> None:
    """503 before the engine is ready, after a failed golden query, and while draining."""
    request.app.state.lifecycle.require_serving()


async def get_scoring(request: Request) -> RerankScoring:
    scoring: RerankScoring = request.app.state.rerank_scoring
    return scoring


Scoring = Annotated[RerankScoring, Depends(get_scoring)]

# Only documents the scheme in OpenAPI; `require_principal` does the checking.
bearer_scheme = HTTPBearer(
    auto_error=False, description="a JWT (`kuberank-server token` mints one for services)"
)

# Readiness first: a draining server answers 503 without spending time on the token.
router = APIRouter(
    dependencies=[Depends(require_serving), Depends(require_principal), Security(bearer_scheme)]
)
# Every status each kind of route can answer besides 200, all in the one error envelope.
SCORING_ERRORS = error_responses(400, 401, 403, 408, 413, 415, 422, 429, 500, 503)
READING_ERRORS = error_responses(401, 403, 500, 503)


@router.post(
    "/v1/rerank", response_model_exclude_none=True, tags=["rerank"], responses=SCORING_ERRORS
)
async def rerank_v1(body: RerankRequest, request: Request, scoring: Scoring) -> RerankResponse:
    """Jina / vLLM rerank."""
    return await _jina_rerank(body, request, scoring)


@router.post(
    "/rerank",
    response_model=RerankResponse | list[TeiRank],
    response_model_exclude_none=True,
    tags=["rerank"],
    responses=SCORING_ERRORS,
)
async def rerank_shared(
    body: Annotated[SharedRerankRequest, Body()], request: Request, scoring: Scoring
) -> RerankResponse | list[TeiRank]:
    """Jina / vLLM rerank, or Hugging Face TEI's body (the one with `texts`)."""
    if isinstance(body, TeiRerankRequest):
        return await _tei_rerank(body, request, scoring)
    return await _jina_rerank(body, request, scoring)


@router.post("/v2/rerank", tags=["rerank"], responses=SCORING_ERRORS)
async def rerank_cohere(
    body: CohereRerankRequest, request: Request, scoring: Scoring
) -> CohereRerankResponse:
    """Cohere v2 rerank."""
    ranking = await scoring.rerank(
        request,
        body.query,
        body.documents,
        top_n=body.top_n,
        max_tokens_per_doc=body.max_tokens_per_doc,
    )
    return CohereRerankResponse(
        id=ranking.id,
        results=[CohereRerankResult(index=d.index, relevance_score=d.relevance)
                 for d in ranking.documents],
        meta=CohereMeta(billed_units=CohereBilledUnits(search_units=1)),
    )  # fmt: skip


@router.post("/v1/score", tags=["rerank"], responses=SCORING_ERRORS)
async def score(body: ScoreRequest, request: Request, scoring: Scoring) -> ScoreResponse:
    """vLLM score: `text_1` against `text_2` (1:1, 1:N or N:N)."""
    queries = [body.text_1] if isinstance(body.text_1, str) else body.text_1
    documents = [body.text_2] if isinstance(body.text_2, str) else body.text_2
    pairs = await scoring.score_pairs(request, queries, documents, instruction=body.instruction)
    return ScoreResponse(
        id=pairs.id,
        created=int(time.time()),
        model=pairs.model,
        data=[ScoreData(index=i, score=value) for i, value in enumerate(pairs.scores)],
        usage=RerankUsage(prompt_tokens=pairs.prompt_tokens, total_tokens=pairs.prompt_tokens),
    )


@router.post("/v1/ranking", tags=["rerank"], responses=SCORING_ERRORS)
async def ranking_nim(
    body: NimRankingRequest, request: Request, scoring: Scoring
) -> NimRankingResponse:
    """NVIDIA NIM text reranking."""
    ranking = await scoring.rerank(
        request,
        body.query.text,
        [passage.text for passage in body.passages],
        truncate=None if body.truncate is None else body.truncate == "END",
        documents_param="passages",
    )
    return NimRankingResponse(
        rankings=[NimRanking(index=d.index, logit=d.logit) for d in ranking.documents],
        usage=_usage(ranking),
    )


@router.get("/v1/models", tags=["models"], responses=READING_ERRORS)
async def list_models(scoring: Scoring) -> ModelList:
    scorer = scoring.scorer
    return ModelList(
        data=[
            ModelCard(
                id=scoring.model_name,
                created=scoring.started_at,
                max_model_len=scorer.max_model_len,
                kind=scorer.kind,
            )
        ]
    )


async def _jina_rerank(body: RerankRequest, request: Request, scoring: Scoring) -> RerankResponse:
    ranking = await scoring.rerank(
        request,
        body.query,
        body.documents,
        top_n=body.top_n,
        instruction=body.instruction,
        max_tokens_per_doc=body.max_tokens_per_doc,
    )
    return RerankResponse(
        id=ranking.id,
        model=ranking.model,
        usage=_usage(ranking),
        results=[
            RerankResult(
                index=d.index,
                relevance_score=d.relevance,
                document=DocumentText(text=body.documents[d.index])
                if body.return_documents
                else None,
            )
            for d in ranking.documents
        ],
    )


async def _tei_rerank(body: TeiRerankRequest, request: Request, scoring: Scoring) -> list[TeiRank]:
    ranking = await scoring.rerank(
        request, body.query, body.texts, truncate=body.truncate, documents_param="texts"
    )
    return [
        TeiRank(
            index=d.index,
            score=d.logit if body.raw_scores else d.relevance,
            text=body.texts[d.index] if body.return_text else None,
        )
        for d in ranking.documents
    ]


def _usage(ranking: Ranking) -> RerankUsage:
    return RerankUsage(prompt_tokens=ranking.prompt_tokens, total_tokens=ranking.prompt_tokens)
