"""What the MCP tools do, over the domain (no SQL, no MCP types): search, ask, list the collections, list
and read documents.

Every result names documents by name and id (search hits also chunk ids, pages and scores) so an
assistant can cite what it used. Domain errors (NotFoundError...) propagate; server.py turns them into
MCP tool errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from rag_server.chat.models import QueryRequest, Source
from rag_server.chat.service import ChatService
from rag_server.collections import store as collections
from rag_server.collections.models import DEFAULT_COLLECTION
from rag_server.errors import InvalidInputError
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import documents
from rag_server.ingestion.models import Document, DocumentStatus
from rag_server.retrieval.models import (
    DocumentChunk,
    MetadataMatch,
    SearchFilters,
    SearchHit,
    SearchRequest,
    TextMatch,
)
from rag_server.retrieval.service import search
from rag_server.retrieval.store import fetch_document_chunks, find_document_chunks

SearchMode = Literal["hybrid", "bm25", "vector"]
# A document read through a tool returns at most this many chunks per call (page with start/end).
MAX_CHUNKS_PER_READ = 200


class SearchResult(BaseModel):
    query: str
    mode: SearchMode
    results: list[SearchHit]


class AskResult(BaseModel):
    answer: str = Field(description="Cites its sources as [n].")
    answer_mode: Literal["llm", "extractive"]
    sources: list[Source]
    llm_error: str | None = None


class DocumentSummary(BaseModel):
    """A document, its fields named as `GET /documents` names them (its file: `filename`)."""

    id: UUID
    filename: str
    collection_id: UUID
    file_type: str
    status: DocumentStatus
    chunk_count: int
    size_bytes: int
    created_at: datetime


class DocumentListing(BaseModel):
    documents: list[DocumentSummary]
    total: int
    limit: int
    offset: int


class DocumentContent(BaseModel):
    document: DocumentSummary
    metadata: dict[str, Any]
    error: str | None
    start: int = Field(description="First chunk index asked for.")
    end: int = Field(
        description="One past the last chunk index read: to read on, call again with start = end."
    )
    matches: int | None = Field(
        default=None,
        description="With `text`: how many chunks in start..end (as asked) match; more than returned "
        "means the rest lie from `end` on.",
    )
    chunks: list[DocumentChunk]
    text: str = Field(description="The returned chunks' text joined in order.")


class CollectionSummary(BaseModel):
    name: str
    id: UUID
    description: str
    document_count: int


class CollectionListing(BaseModel):
    collections: list[CollectionSummary]
    total: int
    limit: int
    offset: int


def _collections(collection: str | None) -> list[str] | None:
    return None if collection is None else [collection]


async def search_chunks(
    runtime: Runtime,
    query: str,
    mode: SearchMode = "hybrid",
    top_k: int = 10,
    collection: str | None = None,
    filters: SearchFilters | None = None,
    min_similarity: float | None = None,
    *,
    highlight: bool = False,
) -> SearchResult:
    request = SearchRequest(
        query=query,
        top_k=top_k,
        search_type=mode,
        filters=filters,
        collections=_collections(collection),
        min_similarity=min_similarity,
        highlight=highlight,
    )
    response = await search(runtime, request, pool=runtime.read_pool())
    return SearchResult(query=response.query, mode=response.search_type, results=response.results)


async def ask(
    chat: ChatService, question: str, collection: str | None = None, mode: SearchMode | None = None
) -> AskResult:
    """A cited answer that leaves nothing behind: an unstored turn (no session, no history), the same
    path the OpenAI-compatible API takes."""
    request = QueryRequest(query=question, collections=_collections(collection), search_type=mode)
    turn = await chat.resolve_unstored(request, history=[], llm_options={})
    async for _ in chat.generate(turn):
        pass
    return AskResult(
        answer=turn.answer, answer_mode=turn.mode, sources=turn.sources, llm_error=turn.llm_error
    )


async def list_collections(runtime: Runtime, limit: int = 100, offset: int = 0) -> CollectionListing:
    """The collections the caller's key can read (row-level security), by name: what the other tools'
    `collection` takes. A key limited to some collections cannot search `default`: this says which."""
    listing = await collections.list_collections(runtime.read_pool(), limit=limit, offset=offset)
    return CollectionListing(
        collections=[
            CollectionSummary(
                name=c.name, id=c.id, description=c.description, document_count=c.document_count
            )
            for c in listing.items
        ],
        total=listing.total,
        limit=limit,
        offset=offset,
    )


def _summary(doc: Document) -> DocumentSummary:
    return DocumentSummary(
        id=doc.id,
        filename=doc.filename,
        collection_id=doc.collection_id,
        file_type=doc.file_type,
        status=doc.status,
        chunk_count=doc.chunk_count,
        size_bytes=doc.size_bytes,
        created_at=doc.created_at,
    )


async def list_documents(
    runtime: Runtime,
    collection: str = DEFAULT_COLLECTION,
    status: DocumentStatus | None = None,
    limit: int = 50,
    offset: int = 0,
    name: str | None = None,
    metadata: MetadataMatch | None = None,
    text: TextMatch | None = None,
) -> DocumentListing:
    pool = runtime.read_pool()
    scope = await collections.resolve_ids(pool, [collection])
    listing = await documents.list_documents(
        pool,
        limit=limit,
        offset=offset,
        status=status,
        collection_ids=scope,
        name=name,
        metadata=metadata,
        text=text,
    )
    return DocumentListing(
        documents=[_summary(d) for d in listing.items], total=listing.total, limit=limit, offset=offset
    )


async def get_document(
    runtime: Runtime,
    document_id: UUID,
    start: int = 0,
    end: int | None = None,
    text: TextMatch | None = None,
) -> DocumentContent:
    """The document's metadata and the text of chunks `start <= index < end` (at most
    MAX_CHUNKS_PER_READ of them; default: from the first), or, with `text`, of the chunks among them
    whose text matches (Chroma's `where_document` on one document)."""
    if end is not None and end < start:
        raise InvalidInputError(f"end ({end}) is before start ({start}): chunks start <= index < end")
    pool = runtime.read_pool()
    doc = await documents.get_document(pool, document_id)
    window_end = max(end if end is not None else doc.chunk_count, start)
    matches = None
    if text is None:
        stop = min(start + MAX_CHUNKS_PER_READ, window_end)
        chunks = await fetch_document_chunks(pool, document_id, start, stop)
    else:
        matches, chunks = await find_document_chunks(
            pool, document_id, text, 0, MAX_CHUNKS_PER_READ, start=start, end=window_end
        )
        # A capped page ends after its last match, so that `start = end` reads the rest.
        stop = chunks[-1].chunk_index + 1 if matches > len(chunks) else window_end
    return DocumentContent(
        document=_summary(doc),
        metadata=doc.metadata,
        error=doc.error,
        start=start,
        end=stop,
        matches=matches,
        chunks=chunks,
        text="\n\n".join(c.text for c in chunks),
    )
