"""Search request/response types shared by the API, the CLI, chat and the evaluation.

Contract: `rag_server.retrieval.service.search(runtime, request) -> SearchResponse`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, WithJsonSchema

from rag_server.collections.models import CollectionRef, HybridAlpha
from rag_server.retrieval.metadata_match import METADATA_MATCH_RULES, check_match
from rag_server.retrieval.text_match import TEXT_MATCH_RULES, check_text_match
from rag_server.text import Cleaned, CleanText, NotBlank, NotBool

SearchType = Literal["vector", "bm25", "hybrid"]
FusionMethod = Literal["rrf", "convex"]
GroupBy = Literal["chunk", "document"]


# A checked match (metadata_match.py: its forms, its checks, its SQL); a refusal is a 422 naming where.
MetadataMatch = Annotated[
    dict[str, Any],
    BeforeValidator(check_match),
    WithJsonSchema({"type": "object", "description": METADATA_MATCH_RULES}),
]
# A checked text match (text_match.py), Chroma's `where_document`.
TextMatch = Annotated[
    dict[str, Any],
    BeforeValidator(check_text_match),
    WithJsonSchema({"type": "object", "description": TEXT_MATCH_RULES}),
]


class SearchFilters(BaseModel):
    """Applied inside every leg, in SQL, before LIMIT. A key it does not know is refused: ignored, a
    misspelt filter (`file_type`) returned every hit unfiltered."""

    model_config = ConfigDict(extra="forbid")

    document_ids: list[UUID] | None = Field(default=None, max_length=1_000)
    file_types: list[Annotated[str, Field(max_length=50), Cleaned]] | None = Field(
        default=None, max_length=100
    )
    metadata: MetadataMatch | None = Field(
        default=None,
        description=f"Every key must match (chunk metadata over its document's). {METADATA_MATCH_RULES}",
    )
    text: TextMatch | None = Field(default=None, description=f"On each chunk's text. {TEXT_MATCH_RULES}")


MIN_SIMILARITY_RULE = (
    "Leave out the hits whose cosine similarity with the query is below this, unless their text (with "
    "its document's title and headings) holds every word of the query (stemmed, stop words ignored: an "
    "exact name or code stays); the next ranked take their places. Default: none (the top_k ranked, "
    "however weak)."
)
MinSimilarity = Annotated[float, Field(ge=-1, le=1), NotBool]


# The longest search query, and the longest chat question (chat/models.py).
MAX_QUERY_CHARS = 20_000


class SearchRequest(BaseModel):
    # A misspelt option (`filter`, `topk`) is refused, not searched without it.
    model_config = ConfigDict(extra="forbid")

    query: Annotated[CleanText, NotBlank] = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: Annotated[int, Field(ge=1, le=100), NotBool] = 10
    search_type: SearchType = "hybrid"
    filters: SearchFilters | None = None
    collections: list[CollectionRef] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Collections to search (names or ids); default: ['default']. Unknown: 404.",
    )
    # Optional overrides of the configured defaults (RAG_FUSION, RAG_HNSW_EF_SEARCH).
    fusion: FusionMethod | None = None
    ef_search: Annotated[int, Field(ge=1, le=1000), NotBool] | None = None
    alpha: HybridAlpha | None = Field(
        default=None,
        description="Convex fusion: the vector leg's weight (BM25 gets 1 - alpha). Default: the searched "
        "collections' hybrid_alpha (their mean when they differ; unset counts as RAG_HYBRID_ALPHA).",
    )
    group_by: GroupBy = Field(
        default="chunk",
        description="'chunk': the best chunks (several may come from one document). 'document': one "
        "hit per document, its best chunk, documents ranked by fusing each leg's best chunk per "
        "document; a hit's vector/bm25 rank is then the document's rank within that leg.",
    )
    min_similarity: MinSimilarity | None = Field(default=None, description=MIN_SIMILARITY_RULE)
    highlight: StrictBool = Field(
        default=False,
        description="Each hit's `highlights`: where its text holds a word the query matched, as BM25 "
        "reads words (stemmed, accents folded, stop words left out).",
    )


class LegScore(BaseModel):
    rank: int  # 1-based rank within the leg
    score: float


class ChunkLocation(BaseModel):
    """Where a chunk sits in its file beyond the page: a slide's part, a sheet's rows, a CSV's rows.

    `label` is what a citation shows ("slide 3, speaker notes", "Sheet1, rows 12-30", "row 7")."""

    label: str
    slide: int | None = None
    part: Literal["text", "table", "notes"] | None = None
    sheet: str | None = None
    row_start: int | None = None
    row_end: int | None = None

    @classmethod
    def from_stored(cls, stored: object) -> ChunkLocation | None:
        """The chunks.location jsonb as the API shows it; None when there is none (or it is unusable)."""
        if not isinstance(stored, dict) or not stored:
            return None
        try:
            fields = cls.model_validate({**stored, "label": ""})
        except ValueError:
            return None
        return fields.model_copy(update={"label": fields.describe()})

    def describe(self) -> str:
        parts: list[str] = []
        if self.slide is not None:
            parts.append(f"slide {self.slide}")
            if self.part in _PART_LABELS:
                parts.append(_PART_LABELS[self.part])
        if self.sheet is not None:
            parts.append(self.sheet)
        if self.row_start is not None:
            end = self.row_end if self.row_end is not None else self.row_start
            parts.append(f"row {end}" if end == self.row_start else f"rows {self.row_start}\u2013{end}")
        return ", ".join(parts)


_PART_LABELS = {"table": "table", "notes": "speaker notes"}


class SearchHit(BaseModel):
    chunk_id: int
    document_id: UUID
    document_name: str
    chunk_index: int
    page: int | None
    text: str
    score: float  # the fused score for hybrid, the leg's score otherwise
    heading_path: str | None = None  # "Guide > Install > Linux"; a slide's title; a sheet's name
    location: ChunkLocation | None = None
    # The document's version the chunk belongs to (a replacement swaps chunks and version together).
    document_version: int | None = None
    vector: LegScore | None = None
    bm25: LegScore | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    highlights: list[tuple[int, int]] | None = Field(
        default=None,
        description="With `highlight`: the [start, end) offsets in `text` of the words the query matched, "
        "in Unicode code points (in JavaScript, indexes of Array.from(text)).",
    )


class DocumentChunk(BaseModel):
    """One chunk of a document as a reader sees it (REST `/documents/{id}/chunks`, MCP `get_document`)."""

    chunk_id: int
    chunk_index: int
    page: int | None
    text: str
    heading_path: str | None = None
    location: ChunkLocation | None = None


class DocumentChunks(BaseModel):
    """GET /documents/{id}/chunks: a page of the document's chunks in order."""

    document_id: UUID
    total: int = Field(description="The document's chunk count; with `text`, how many chunks match it")
    offset: int
    limit: int
    items: list[DocumentChunk]


class SearchResponse(BaseModel):
    query: str
    search_type: SearchType
    results: list[SearchHit]
    timings_ms: dict[str, float]
