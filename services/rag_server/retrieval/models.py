"""Search request/response types shared by the API, the CLI, chat and the evaluation.

Contract: `rag_server.retrieval.service.search(runtime, request) -> SearchResponse`.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

SearchType = Literal["vector", "bm25", "hybrid"]
FusionMethod = Literal["rrf", "convex"]


class SearchFilters(BaseModel):
    """Applied inside every leg, in SQL, before LIMIT."""

    document_ids: list[UUID] | None = None
    file_types: list[str] | None = None
    metadata: dict[str, str | int | float | bool] | None = None


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=20_000)
    top_k: int = Field(default=10, ge=1, le=100)
    search_type: SearchType = "hybrid"
    filters: SearchFilters | None = None
    # Optional overrides of the configured defaults (RAG_FUSION, RAG_HNSW_EF_SEARCH).
    fusion: FusionMethod | None = None
    ef_search: int | None = Field(default=None, ge=1, le=1000)


class LegScore(BaseModel):
    rank: int  # 1-based rank within the leg
    score: float


class SearchHit(BaseModel):
    chunk_id: int
    document_id: UUID
    document_name: str
    chunk_index: int
    page: int | None
    text: str
    score: float  # the fused score for hybrid, the leg's score otherwise
    vector: LegScore | None = None
    bm25: LegScore | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    query: str
    search_type: SearchType
    results: list[SearchHit]
    timings_ms: dict[str, float]
