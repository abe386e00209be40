"""Reading chunks: those a search returns (display fields, in one query), and a document's in order, all
or those whose text matches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from rag_server.infra.database import Executor
from rag_server.retrieval.models import ChunkLocation, DocumentChunk
from rag_server.retrieval.text_match import chunk_contains, text_clause


@dataclass(frozen=True)
class ChunkRow:
    chunk_id: int
    document_id: UUID
    document_name: str
    chunk_index: int
    page: int | None
    text: str
    metadata: dict[str, Any]
    heading_path: str | None = None
    location: ChunkLocation | None = None
    document_version: int | None = None


HYDRATE_SQL = """
    SELECT c.id, c.document_id, d.filename, c.chunk_index, c.page, c.text,
           d.metadata || c.metadata AS metadata, c.heading_path, c.location, d.version
    FROM chunks c JOIN documents d ON d.id = c.document_id
    WHERE c.id = ANY($1::bigint[])
"""


async def fetch_chunks(conn: asyncpg.Connection, chunk_ids: list[int]) -> dict[int, ChunkRow]:
    """Display fields by chunk id. A chunk deleted since the legs ran is simply absent."""
    if not chunk_ids:
        return {}
    rows = await conn.fetch(HYDRATE_SQL, chunk_ids)
    return {int(r["id"]): _row(r) for r in rows}


async def chunk_documents(conn: Executor, chunk_ids: list[int]) -> dict[int, UUID]:
    """The document of each chunk (by primary key: cheap even for a few hundred candidates)."""
    if not chunk_ids:
        return {}
    rows = await conn.fetch("SELECT id, document_id FROM chunks WHERE id = ANY($1::bigint[])", chunk_ids)
    return {int(r["id"]): r["document_id"] for r in rows}


async def holds_more_documents(
    conn: Executor, collections: Sequence[UUID] | None, document_ids: Sequence[UUID] | None, than: int
) -> bool:
    """Whether the collections (None: all; `document_ids`: only those) hold more than `than` ready
    documents: counted on the (collection_id, ...) index, up to `than` + 1."""
    return bool(
        await conn.fetchval(
            """
            SELECT count(*) > $4 FROM (
                SELECT 1 FROM documents
                WHERE status = 'ready' AND ($1::uuid[] IS NULL OR collection_id = ANY($1::uuid[]))
                  AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[]))
                LIMIT $3
            ) AS held
            """,
            None if collections is None else list(collections),
            None if document_ids is None else list(document_ids),
            than + 1,
            than,
        )
    )


def _row(r: asyncpg.Record) -> ChunkRow:
    return ChunkRow(
        chunk_id=int(r["id"]),
        document_id=r["document_id"],
        document_name=r["filename"],
        chunk_index=int(r["chunk_index"]),
        page=r["page"],
        text=r["text"],
        metadata=dict(r["metadata"] or {}),
        heading_path=r["heading_path"],
        location=ChunkLocation.from_stored(r["location"]),
        document_version=r["version"],
    )


DOCUMENT_CHUNKS_SQL = """
    SELECT c.id, c.chunk_index, c.page, c.text, c.heading_path, c.location
    FROM chunks c
    WHERE c.document_id = $1 AND c.chunk_index >= $2 AND c.chunk_index < $3
    ORDER BY c.chunk_index
"""


async def fetch_document_chunks(
    conn: Executor, document_id: UUID, start: int, end: int
) -> list[DocumentChunk]:
    """One document's chunks with `start <= chunk_index < end`, in order (a reader's window on it)."""
    return [_document_chunk(r) for r in await conn.fetch(DOCUMENT_CHUNKS_SQL, document_id, start, end)]


CHUNK_INDEX_MAX = 2**31 - 1  # chunks.chunk_index is an int4


async def document_chunks_page(
    conn: Executor, document_id: UUID, chunk_count: int, offset: int, limit: int, text: dict[str, Any] | None
) -> tuple[int, list[DocumentChunk]]:
    """A page of one document's chunks in order, and how many there are to page through: all of its
    `chunk_count` from chunk_index `offset`, or, with `text` (a checked match), the chunks whose text
    matches it, the first `offset` matches skipped."""
    if text is not None:
        return await find_document_chunks(conn, document_id, text, offset, limit)
    end = min(offset + limit, CHUNK_INDEX_MAX)  # the window's end must not overflow chunk_index
    return chunk_count, await fetch_document_chunks(conn, document_id, offset, end)


MATCHING_CHUNKS_SQL = """
    WITH matching AS MATERIALIZED (
        SELECT c.id, c.chunk_index, c.page, c.text, c.heading_path, c.location
        FROM chunks c
        WHERE c.document_id = $1 AND c.chunk_index >= $4 AND c.chunk_index < $5 AND {condition}
    )
    SELECT counted.total, m.*
    FROM (SELECT count(*) AS total FROM matching) AS counted
    LEFT JOIN LATERAL (SELECT * FROM matching ORDER BY chunk_index OFFSET $2 LIMIT $3) AS m ON true
    ORDER BY m.chunk_index
"""


async def find_document_chunks(
    conn: Executor,
    document_id: UUID,
    text: dict[str, Any],
    offset: int,
    limit: int,
    start: int = 0,
    end: int = CHUNK_INDEX_MAX,
) -> tuple[int, list[DocumentChunk]]:
    """One document's chunks with `start <= chunk_index < end` whose own text matches `text` (a checked
    match, retrieval/text_match.py), in order: how many match, and at most `limit` of them after the
    first `offset`. One statement, so the count and the page agree."""
    params: list[Any] = []
    condition = text_clause(text, params, 6, chunk_contains("c.text"))
    rows = await conn.fetch(
        MATCHING_CHUNKS_SQL.format(condition=condition),
        document_id,
        offset,
        limit,
        start,
        min(end, CHUNK_INDEX_MAX),
        *params,
    )
    return int(rows[0]["total"]), [_document_chunk(r) for r in rows if r["id"] is not None]


def _document_chunk(r: asyncpg.Record) -> DocumentChunk:
    return DocumentChunk(
        chunk_id=r["id"],
        chunk_index=r["chunk_index"],
        page=r["page"],
        text=r["text"],
        heading_path=r["heading_path"],
        location=ChunkLocation.from_stored(r["location"]),
    )
