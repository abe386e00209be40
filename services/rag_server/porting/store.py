"""All SQL of imports and exports: imported documents (deterministic ids), chunk metadata, the export
cursor, a collection's import lock. Chunks themselves go through ingestion.chunks.write_chunks, the one
chunk INSERT."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import asyncpg

from rag_server.collections.models import CreateCollection
from rag_server.collections.store import (
    CollectionNotEmptyError,
    create_collection,
    delete_collection,
    get_collection,
    parse_ref,
)
from rag_server.errors import CollectionNotFoundError, ConflictError, NotFoundError
from rag_server.generations.store import BASE_GENERATION
from rag_server.infra.database import Executor, transaction
from rag_server.infra.queue import IngestQueue
from rag_server.infra.scoped_pool import ScopedPool

# What an imported document's stored bytes are, whatever its file type was in the source: its chunk
# texts joined (the source kept no file). The download serves them as what they are.
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class StoredDocument:
    sha256: str
    metadata: dict[str, Any]
    status: str
    chunk_metadata: list[dict[str, Any]]
    chunk_texts: list[str]
    import_fingerprint: str | None


@dataclass(frozen=True)
class ImportedFile:
    """What an import stores as the document: name, type (for display), bytes, their sha256, metadata."""

    filename: str
    file_type: str
    content: bytes
    sha256: str
    metadata: dict[str, Any]


async def ensure_collection(conn: Executor, name: str) -> tuple[UUID, bool]:
    """(id, created): the collection by name or id, created when no collection has that name."""
    try:
        return (await get_collection(conn, name)).id, False
    except NotFoundError:
        if isinstance(parse_ref(name), UUID):
            raise  # an id names an existing collection; only a name can make a new one
    try:
        return (await create_collection(conn, CreateCollection(name=name))).id, True
    except ConflictError:  # another import (or an admin) created it meanwhile: that one is used
        return (await get_collection(conn, name)).id, False


# The advisory lock class of "an import is writing into this collection" ('RAIM'; two-int keys: this
# class, then hashtext(collection id)). Every running import holds it shared, as a session lock on a
# connection of its own (porting.service._target), from the moment it has its collection to its end; the
# cleanup of a failed import's new collection takes it exclusive with a try (`delete_unused_collection`).
# A hash collision only keeps an empty collection that could have gone.
IMPORT_LOCK_CLASS = 0x5241494D


async def hold_import_lock(conn: asyncpg.Connection, collection_id: UUID) -> None:
    """The collection's import lock, shared, until `release_import_lock` or the session's end (waits
    while a failed import's cleanup deletes it: the caller then finds it gone)."""
    await conn.execute(
        "SELECT pg_advisory_lock_shared($1, hashtext($2::uuid::text))", IMPORT_LOCK_CLASS, collection_id
    )


async def release_import_lock(conn: asyncpg.Connection, collection_id: UUID) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock_shared($1, hashtext($2::uuid::text))", IMPORT_LOCK_CLASS, collection_id
    )


async def collection_exists(conn: Executor, collection_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT FROM collections WHERE id = $1)", collection_id))


async def delete_unused_collection(
    conn: Executor, queue: IngestQueue, collection_id: UUID
) -> Literal["removed", "importing", "holds documents", "gone"]:
    """Delete a collection a failed import created, in ONE transaction, unless another import holds its
    import lock ('importing': it may be embedding its first batch, nothing of it written yet) or it holds
    documents now ('holds documents': written by an import, an upload...; counted under the collection's
    row lock by delete_collection); 'gone': someone deleted it meanwhile. The caller has released its own
    import lock."""
    async with transaction(conn) as c:
        if not await c.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2::uuid::text))", IMPORT_LOCK_CLASS, collection_id
        ):
            return "importing"
        try:  # the lock is held to the commit: an import starting now waits, then finds it gone
            await delete_collection(c, queue, str(collection_id))
        except CollectionNotEmptyError:
            return "holds documents"
        except CollectionNotFoundError:
            return "gone"
    return "removed"


async def stored_documents(
    conn: Executor, ids: Sequence[UUID], texts_of: Sequence[UUID] = ()
) -> dict[UUID, StoredDocument]:
    """The documents of `ids` that exist; the chunk texts only of those in `texts_of` (else [])."""
    rows = await conn.fetch(
        """
        SELECT d.id, d.sha256, d.metadata, d.status, d.import_fingerprint,
               (SELECT coalesce(jsonb_agg(c.metadata ORDER BY c.chunk_index), '[]'::jsonb)
                FROM chunks c WHERE c.document_id = d.id) AS chunk_metadata,
               CASE WHEN d.id = ANY($2::uuid[]) THEN
                   (SELECT array_agg(c.text ORDER BY c.chunk_index) FROM chunks c WHERE c.document_id = d.id)
               END AS chunk_texts
        FROM documents d WHERE d.id = ANY($1::uuid[])
        """,
        list(ids),
        list(texts_of),
    )
    return {
        r["id"]: StoredDocument(
            r["sha256"],
            dict(r["metadata"]),
            r["status"],
            list(r["chunk_metadata"]),
            list(r["chunk_texts"] or []),
            r["import_fingerprint"],
        )
        for r in rows
    }


async def documents_in_collection(conn: Executor, collection_id: UUID, ids: Sequence[UUID]) -> set[UUID]:
    """Which of `ids` are documents of the collection."""
    rows = await conn.fetch(
        "SELECT id FROM documents WHERE collection_id = $1 AND id = ANY($2::uuid[])", collection_id, list(ids)
    )
    return {r["id"] for r in rows}


async def lock_documents(c: asyncpg.Connection, ids: Sequence[UUID]) -> None:
    """Row locks on those of `ids` that exist, in id order, until the transaction ends."""
    await c.execute("SELECT 1 FROM documents WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", list(ids))


async def record_fingerprints(conn: Executor, fingerprints: dict[UUID, str]) -> None:
    """The fingerprints of documents imported before migration 0018, found unchanged (one statement;
    a document that got one meanwhile keeps it)."""
    await conn.execute(
        """
        UPDATE documents d SET import_fingerprint = f.fingerprint
        FROM unnest($1::uuid[], $2::text[]) AS f(id, fingerprint)
        WHERE d.id = f.id AND d.import_fingerprint IS NULL
        """,
        list(fingerprints),
        list(fingerprints.values()),
    )


async def imported_elsewhere(conn: Executor, ids: Sequence[UUID], source: str) -> dict[str, int]:
    """Of the documents `ids` that exist, how many each other source store wrote (0029), by store."""
    rows = await conn.fetch(
        """
        SELECT import_source, count(*) AS n FROM documents
        WHERE id = ANY($1::uuid[]) AND import_source <> $2
        GROUP BY import_source ORDER BY count(*) DESC, import_source
        """,
        list(ids),
        source,
    )
    return {r["import_source"]: r["n"] for r in rows}


async def claim_documents(
    conn: Executor, ids: Sequence[UUID], source: str, *, taking_over: bool = False
) -> None:
    """Record `source` as the store of the documents `ids` imported before migration 0029 (NULL), or, when
    `taking_over` (`--take-over`), of every one of them another store wrote."""
    # Rows locked in id order first, as every writer of documents locks them (CLAUDE.md's lock order).
    await conn.execute(
        """
        WITH locked AS (
            SELECT id FROM documents
            WHERE id = ANY($1::uuid[]) AND (import_source IS NULL OR ($3 AND import_source <> $2))
            ORDER BY id FOR UPDATE
        )
        UPDATE documents d SET import_source = $2 FROM locked WHERE d.id = locked.id
        """,
        list(ids),
        source,
        taking_over,
    )


async def upsert_document(
    c: asyncpg.Connection,
    doc_id: UUID,
    collection_id: UUID,
    f: ImportedFile,
    fingerprint: str | None,
    source: str | None = None,
    *,
    only_from: str | None = None,
) -> Literal["created", "updated", "duplicate", "elsewhere"]:
    """Insert or update an imported document and its bytes, inside the caller's transaction, locked;
    'duplicate' when another document of the collection already has these bytes (nothing written).
    An update is a new version (version + 1, replaced_at), as a replacement's swap makes one.
    `fingerprint`: what the source gave (None: the document's fingerprint is left as it is); `source`: the
    store it came from (None: left as it is). `only_from`: a store; a document another store wrote is
    left as it is, 'elsewhere' (0029)."""
    # filename, file_type, content_type, size_bytes, sha256, metadata: inserted or updated alike.
    columns = (f.filename, f.file_type, TEXT_CONTENT_TYPE, len(f.content), f.sha256, f.metadata)
    created = await c.fetchval(
        """
        INSERT INTO documents (id, collection_id, filename, file_type, content_type, size_bytes, sha256,
                               metadata, status, import_fingerprint, import_source)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'processing', $9, $10)
        ON CONFLICT DO NOTHING RETURNING id
        """,
        doc_id,
        collection_id,
        *columns,
        fingerprint,
        source,
    )
    if created is not None:
        await c.execute(
            "INSERT INTO document_files (document_id, content) VALUES ($1, $2)", doc_id, f.content
        )
        return "created"
    # Read under the row's lock: an import of another store that passed its check together with this
    # one may have inserted the document since (the INSERT above waited for it).
    row = await c.fetchrow("SELECT import_source FROM documents WHERE id = $1 FOR UPDATE", doc_id)
    if row is None:
        return "duplicate"  # the conflict was on (collection_id, sha256), not on the id
    if only_from is not None and row["import_source"] not in (None, only_from):
        return "elsewhere"
    try:
        async with c.transaction():  # a savepoint: a sha256 clash leaves the batch's transaction usable
            await c.execute(
                """
                UPDATE documents SET filename = $2, file_type = $3, content_type = $4, size_bytes = $5,
                       sha256 = $6, metadata = $7, import_fingerprint = coalesce($8, import_fingerprint),
                       import_source = coalesce($9, import_source),
                       version = version + 1, replaced_at = now(), updated_at = now()
                WHERE id = $1
                """,
                doc_id,
                *columns,
                fingerprint,
                source,
            )
            await c.execute(
                "UPDATE document_files SET content = $2 WHERE document_id = $1", doc_id, f.content
            )
    except asyncpg.UniqueViolationError:
        return "duplicate"
    return "updated"


async def set_chunk_metadata(c: asyncpg.Connection, doc_id: UUID, metadata: list[dict[str, Any]]) -> None:
    # One statement per document; the BM25 triggers see an unchanged search_text and re-index nothing.
    await c.execute(
        """
        UPDATE chunks c SET metadata = m.value
        FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS m(value, n)
        WHERE c.document_id = $1 AND c.chunk_index = m.n - 1
        """,
        doc_id,
        metadata,
    )


EXPORT_SQL = """
SELECT d.id AS document_id, d.filename, d.file_type, d.content_type, d.metadata AS document_metadata,
       d.created_at, d.import_source, c.chunk_index, c.text, c.search_text, c.page, c.char_start, c.char_end,
       c.heading_path, c.location, c.metadata
       {vector}
FROM documents d JOIN chunks c ON c.document_id = d.id
WHERE d.collection_id = $1 AND d.status = 'ready'
ORDER BY d.id, c.chunk_index
"""


def _vector_column(generation_id: int) -> str:
    """The `embedding` column of the export: generation 1's is chunks.embedding, a later one's is in
    chunk_vectors (an integer literal, like the vector leg's)."""
    if generation_id == BASE_GENERATION:
        return ", c.embedding"
    return (
        ", (SELECT v.embedding FROM chunk_vectors v"
        f" WHERE v.generation_id = {int(generation_id)} AND v.chunk_id = c.id) AS embedding"
    )


async def export_rows(
    conn: Executor,
    collection_id: UUID,
    *,
    with_vectors: bool,
    generation_id: int = BASE_GENERATION,
    prefetch: int = 500,
) -> AsyncIterator[asyncpg.Record]:
    """The collection's ready documents' chunks, by document then chunk index, through a server-side
    cursor in one repeatable-read snapshot: memory stays bounded whatever the collection's size.
    `with_vectors`: each chunk's vector of embedding generation `generation_id` too."""
    sql = EXPORT_SQL.format(vector=_vector_column(generation_id) if with_vectors else "")
    if isinstance(conn, ScopedPool):
        async with conn.acquire(isolation="repeatable_read", readonly=True) as c:
            async for row in c.cursor(sql, collection_id, prefetch=prefetch):
                yield row
    elif conn.is_in_transaction():
        async for row in conn.cursor(sql, collection_id, prefetch=prefetch):
            yield row
    else:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for row in conn.cursor(sql, collection_id, prefetch=prefetch):
                yield row


async def count_not_ready(conn: Executor, collection_id: UUID) -> dict[str, int]:
    """The collection's documents an export leaves out (queued, processing, failed), by status."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM documents WHERE collection_id = $1 AND status <> 'ready'"
        " GROUP BY status ORDER BY status",
        collection_id,
    )
    return {row["status"]: int(row["n"]) for row in rows}


async def count_ready(conn: Executor, collection_id: UUID) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS docs, coalesce(sum(chunk_count), 0) AS chunks FROM documents"
        " WHERE collection_id = $1 AND status = 'ready'",
        collection_id,
    )
    assert row is not None
    return int(row["docs"]), int(row["chunks"])
