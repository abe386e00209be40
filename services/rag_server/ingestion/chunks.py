"""The one chunk write: the worker, direct ingestion and the synthetic bench data all go through it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from uuid import UUID

import numpy as np

from rag_server.infra.database import Executor, transaction
from rag_server.ingestion.chunking import Chunk


async def insert_chunks(
    conn: Executor, document_ids: Sequence[UUID], chunks: Sequence[Chunk], vectors: np.ndarray
) -> None:
    """Insert chunks (chunks[i] belongs to document_ids[i]) in ONE statement: the BM25 triggers are
    statement-level, so one INSERT indexes them all in one run. Each chunk takes its document's
    collection (denormalised for the search legs' filter; a missing document fails on NOT NULL)."""
    if not len(document_ids) == len(chunks) == len(vectors):
        raise ValueError(f"{len(document_ids)} document ids, {len(chunks)} chunks, {len(vectors)} vectors")
    if not chunks:
        return
    await conn.execute(
        """
        INSERT INTO chunks (document_id, collection_id, chunk_index, text, search_text, embedding, page,
                            char_start, char_end, heading_path, location)
        SELECT c.doc, (SELECT d.collection_id FROM documents d WHERE d.id = c.doc), c.idx, c.text,
               c.search_text, c.embedding::vector, c.page, c.char_start, c.char_end, c.heading_path,
               c.location::jsonb
        FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[],
                    $8::int[], $9::text[], $10::text[])
             AS c(doc, idx, text, search_text, embedding, page, char_start, char_end, heading_path,
                  location)
        """,
        list(document_ids),
        [c.index for c in chunks],
        [c.text for c in chunks],
        [c.search_text for c in chunks],
        [vector_literal(v) for v in vectors],
        [c.page for c in chunks],
        [c.char_start for c in chunks],
        [c.char_end for c in chunks],
        [c.heading_path for c in chunks],
        # jsonb[] cannot be bound through unnest either: JSON text, cast per row.
        [None if c.location is None else json.dumps(c.location) for c in chunks],
    )


async def write_chunks(
    conn: Executor, document_id: UUID, chunks: Sequence[Chunk], vectors: np.ndarray
) -> None:
    """Replace the document's chunks (idempotent after a crash) and mark it ready, in one transaction
    (the caller's, when `conn` is a connection inside one)."""
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    async with transaction(conn) as c:
        # The document row first, then (in the BM25 triggers) the bm25_stats row: the order every chunk
        # writer and DELETE /documents/{id} take them in, so two of them cannot deadlock.
        await c.execute("SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", document_id)
        await c.execute("DELETE FROM chunks WHERE document_id = $1", document_id)
        await insert_chunks(c, [document_id] * len(chunks), chunks, vectors)
        await c.execute(
            """
            UPDATE documents SET status = 'ready', error = NULL, chunk_count = $2, updated_at = now()
            WHERE id = $1
            """,
            document_id,
            len(chunks),
        )


def vector_literal(vector: np.ndarray) -> str:
    # asyncpg cannot bind an array of pgvector values; the text form casts cleanly inside unnest.
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"
