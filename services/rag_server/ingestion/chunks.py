"""The one chunk write: the worker, direct ingestion and the synthetic bench data all go through it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from uuid import UUID

import numpy as np

from rag_server.generations.store import BASE_GENERATION, insert_document_vectors, lock_for_writer
from rag_server.infra.database import Executor, transaction, vector_literal
from rag_server.ingestion.chunking import Chunk


async def insert_chunks(
    conn: Executor, document_ids: Sequence[UUID], chunks: Sequence[Chunk], vectors: np.ndarray | None
) -> None:
    """Insert chunks (chunks[i] belongs to document_ids[i]) in ONE statement: the BM25 triggers are
    statement-level, so one INSERT indexes them all in one run. Each chunk takes its document's
    collection (denormalised for the search legs' filter; a missing document fails on NOT NULL).
    `vectors`: embedding generation 1's (None once `reembed --finalize` dropped it)."""
    n_vectors = len(chunks) if vectors is None else len(vectors)
    if not len(document_ids) == len(chunks) == n_vectors:
        raise ValueError(f"{len(document_ids)} document ids, {len(chunks)} chunks, {n_vectors} vectors")
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
        [None] * len(chunks) if vectors is None else [vector_literal(v) for v in vectors],
        [c.page for c in chunks],
        [c.char_start for c in chunks],
        [c.char_end for c in chunks],
        [c.heading_path for c in chunks],
        # jsonb[] cannot be bound through unnest either: JSON text, cast per row.
        [None if c.location is None else json.dumps(c.location) for c in chunks],
    )


# Rows per INSERT when one document's chunks are written: all 72,969 chunks of a 40 MB file in one
# statement bound every text and every vector (as text) at once, and the worker and the PostgreSQL backend
# each held ~1.9 GiB for the whole write (a worker in a 2 GB container is killed there, then retried from
# the start). Same transaction, so readers see all or nothing as before; a document of up to this many
# chunks is still one statement (the BM25 triggers run once per statement).
INSERT_BATCH_ROWS = 4096

# Sets migration 0026's transaction-local flag, under which the native engine's INSERT and DELETE
# triggers wait for bm25_defer_end; true where it did, NULL on ParadeDB's pg_search (no such function,
# nothing to defer).
DEFER_BEGIN_SQL = """
    SELECT CASE WHEN to_regprocedure('bm25_defer_end(uuid, bigint[], integer)') IS NOT NULL
                THEN set_config('rag.bm25_defer', 'on', true) = 'on' END
"""


# The advisory lock class of "a delete waits for this document" (two-int keys: this class, then
# hashtext(document id)): a delete (ingestion/deletion.py) holds it, exclusive and until it ends, for each
# document it deletes whose task is processing, before any task or document row. Names' is
# NAME_LOCK_CLASS ('RAFN'), workers' WORKER_LOCK_CLASS ('RAGW'); this one is 'RADL'.
DELETE_LOCK_CLASS = 0x5241444C

# Whether a delete holds (or waits for) the document's lock, exclusive (a worker waiting for a delete
# takes it shared: tasks.end_after_giving_way): a read of pg_locks, which takes no lock (a
# try-lock and its unlock would be a session lock, left held on the pooled connection if the statement
# ended between the two). A hash collision only makes a task's write give way to another document's
# delete: the task is then retried, as after a delete that rolled back.
DELETE_WAITING_SQL = f"""
    SELECT EXISTS (
        SELECT FROM pg_locks
        WHERE locktype = 'advisory' AND objsubid = 2 AND classid = {DELETE_LOCK_CLASS}::oid
          AND mode = 'ExclusiveLock' AND objid = hashtext($1::uuid::text)::oid
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    )
"""


class DeleteWaitingError(Exception):
    """A delete of the document whose chunks a task is writing waits for it: the write gives way (its
    transaction must roll back); the worker then ends the task, or retries it (tasks.end_after_giving_way)."""


async def give_way_to_delete(conn: Executor, document_id: UUID) -> None:
    """DeleteWaitingError when a delete waits for this document: a long write stops between its
    statements instead of keeping the delete (an HTTP request) waiting until it commits."""
    if await conn.fetchval(DELETE_WAITING_SQL, document_id):
        raise DeleteWaitingError(f"a delete of document {document_id} is waiting for its write")


async def write_chunks(
    conn: Executor,
    document_id: UUID,
    chunks: Sequence[Chunk],
    vectors: np.ndarray | None,
    generations: Mapping[int, np.ndarray] | None = None,
    *,
    give_way: bool = False,
) -> None:
    """Replace the document's chunks (idempotent after a crash) and mark it ready, in one transaction
    (the caller's, when `conn` is a connection inside one). `vectors`: embedding generation 1's;
    `generations`: later generations' (id -> vectors). Every active or retired generation must be
    given (else GenerationsChangedError: embed again); a building one may be missing (its backfill
    catches up); a dropped one's vectors are not written.

    Rows go INSERT_BATCH_ROWS per statement. `give_way` (a task's final write, which its worker can end
    or retry): before each statement after the first, and before the BM25 work at the end of a write of
    several, DeleteWaitingError when a delete of the document waits (ingestion/deletion.py); the caller's
    transaction must then roll back. Other writers (an import) have nothing to end or retry afterwards:
    a delete waits for them."""
    for array in [vectors, *(generations or {}).values()]:
        if array is not None and len(chunks) != len(array):
            raise ValueError(f"{len(chunks)} chunks but {len(array)} vectors")
    extra = dict(generations or {})
    async with transaction(conn) as c:
        statements = 0

        async def next_statement() -> None:
            nonlocal statements
            if statements and give_way:
                await give_way_to_delete(c, document_id)
            statements += 1

        # The document row first, then the generations lock (shared), then (in the BM25 triggers, or
        # bm25_defer_end) the bm25_stats row: the order every chunk writer and DELETE /documents/{id}
        # take them in.
        await c.execute("SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", document_id)
        given = ([BASE_GENERATION] if vectors is not None else []) + list(extra)
        live = await lock_for_writer(c, given)
        # Native BM25 (migration 0026): the old chunks (a replacement's) leave the BM25 tables and the new
        # ones enter them once, after the inserts, so the writers' mutex is not held while the chunks go
        # into the HNSW index (most of a big document's write).
        deferred = await c.fetchval(DEFER_BEGIN_SQL)
        removed = await c.fetch("DELETE FROM chunks WHERE document_id = $1 RETURNING id", document_id)
        base = vectors if BASE_GENERATION in live else None
        for start in range(0, len(chunks), INSERT_BATCH_ROWS):
            part = chunks[start : start + INSERT_BATCH_ROWS]
            part_vectors = None if base is None else base[start : start + INSERT_BATCH_ROWS]
            await next_statement()
            await insert_chunks(c, [document_id] * len(part), part, part_vectors)
        indexes = [chunk.index for chunk in chunks]
        for generation_id, generation_vectors in extra.items():
            if generation_id in live and generation_id != BASE_GENERATION:
                # In slices too: after `reembed --finalize` every vector is written here (generation
                # 1's column is NULL), and one statement would bind them all again.
                for start in range(0, len(chunks), INSERT_BATCH_ROWS):
                    end = start + INSERT_BATCH_ROWS
                    await next_statement()
                    await insert_document_vectors(
                        c, document_id, indexes[start:end], generation_id, generation_vectors[start:end]
                    )
        if deferred:
            if statements > 1 and give_way:  # a big document's BM25 work (under the mutex) takes seconds
                await give_way_to_delete(c, document_id)
            removed_ids = [r["id"] for r in removed]
            await c.execute("SELECT bm25_defer_end($1, $2, $3)", document_id, removed_ids, INSERT_BATCH_ROWS)
        await c.execute(
            """
            UPDATE documents SET status = 'ready', error = NULL, chunk_count = $2, updated_at = now()
            WHERE id = $1
            """,
            document_id,
            len(chunks),
        )
