"""Request and response bodies of every rerank dialect the server speaks.

Jina / vLLM (`/v1/rerank`, `/rerank`), Cohere v2 (`/v2/rerank`), vLLM score (`/v1/score`),
Hugging Face TEI (`/rerank` with `texts`) and NVIDIA NIM (`/v1/ranking`). Field names and
defaults follow each service's public API so that its client SDK works unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, StrictBool, Tag

NonEmptyText = Annotated[str, Field(min_length=1)]
# Strict: the schema says integer, so `true` or `"3"` is refused, not coerced.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]


class DocumentText(BaseModel):
    text: str


# ------------------------------------------------------------- Jina / vLLM rerank ---------
class RerankRequest(BaseModel):
    model: str | None = None
    query: NonEmptyText
    documents: list[str] = Field(min_length=1)
    top_n: PositiveInt | None = None
    return_documents: StrictBool = True
    instruction: str | None = Field(None, description="Qwen3-Reranker instruction override")
    max_tokens_per_doc: PositiveInt | None = None


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: DocumentText | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]


# ------------------------------------------------------------- Cohere v2 ------------------
class CohereRerankRequest(BaseModel):
    model: str | None = None
    query: NonEmptyText
    documents: list[str] = Field(min_length=1)
    top_n: PositiveInt | None = None
    max_tokens_per_doc: PositiveInt | None = None


class CohereRerankResult(BaseModel):
    index: int
    relevance_score: float


class CohereApiVersion(BaseModel):
    version: str = "2"


class CohereBilledUnits(BaseModel):
    search_units: int


class CohereMeta(BaseModel):
    api_version: CohereApiVersion = Field(default_factory=CohereApiVersion)
    billed_units: CohereBilledUnits


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereRerankResult]
    meta: CohereMeta


# ------------------------------------------------------------- vLLM score ------------------
class ScoreRequest(BaseModel):
    """1:1, 1:N (one `text_1`, many `text_2`) or N:N pairs, as vLLM's `/v1/score`."""

    model: str | None = None
    text_1: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]
    text_2: str | Annotated[list[str], Field(min_length=1)]
    instruction: str | None = None


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: RerankUsage


# ------------------------------------------------------------- Hugging Face TEI -----------
class TeiRerankRequest(BaseModel):
    query: NonEmptyText
    texts: list[str] = Field(min_length=1)
    truncate: StrictBool | None = None
    raw_scores: StrictBool = False
    return_text: StrictBool = False


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


def _rerank_dialect(body: Any) -> str:
    """`/rerank` serves Jina's and TEI's bodies: TEI's is the one with `texts`."""
    return "tei" if isinstance(body, dict) and "texts" in body else "jina"


SharedRerankRequest = Annotated[
    Annotated[RerankRequest, Tag("jina")] | Annotated[TeiRerankRequest, Tag("tei")],
    Discriminator(_rerank_dialect),
]


# ------------------------------------------------------------- NVIDIA NIM -----------------
class NimText(BaseModel):
    text: str


class NimQuery(BaseModel):
    text: NonEmptyText


class NimRankingRequest(BaseModel):
    model: str | None = None
    query: NimQuery
    passages: list[NimText] = Field(min_length=1)
    truncate: Literal["NONE", "END"] | None = None


class NimRanking(BaseModel):
    index: int
    logit: float


class NimRankingResponse(BaseModel):
    rankings: list[NimRanking]
    usage: RerankUsage


# ------------------------------------------------------------- models -------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kuberank"
    max_model_len: int
    kind: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
