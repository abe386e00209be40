"""An import writes every document row before any chunk. A chunk write takes the writers' mutex (the
`bm25_stats` row, at its end: migration 0026) and keeps it to commit; a document upsert may wait for
another transaction that holds the same (collection, sha256), such as a replacement's swap, and that
transaction takes the mutex at its own chunk write. Upserting one document, writing its chunks, then
upserting the next would wait for that transaction while holding what it waits for: a deadlock."""

from __future__ import annotations

import asyncio
import hashlib
from uuid import UUID

from rag_server.collections.models import DEFAULT_COLLECTION_ID
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.porting.models import ImportChunk, ImportDocument
from rag_server.porting.writer import document_content, document_id, write_documents
from tests.support.locks import until_waiting

ORIGIN = "jsonl"


def document(key: str, text: str) -> ImportDocument:
    return ImportDocument(key=key, filename=f"{key}.txt", metadata={}, chunks=[ImportChunk(text, text, {})])


def ordered_keys(first: str, second: str) -> tuple[str, str]:
    """Two keys whose documents the import writes in this order (it sorts them by id)."""
    ids = {k: document_id(DEFAULT_COLLECTION_ID, ORIGIN, k) for k in (first, second)}
    return (first, second) if ids[first] < ids[second] else (second, first)


async def chunk_count(runtime: Runtime, doc_id: UUID) -> int:
    async with owner_connection(runtime.database_url) as owner:
        return int(await owner.fetchval("SELECT count(*) FROM chunks WHERE document_id = $1", doc_id))


async def test_an_import_waiting_for_a_swap_of_the_same_bytes_does_not_hold_the_writers_mutex(
    runtime: Runtime,
) -> None:
    swapped = document("swapped-doc", "A document whose file another transaction is replacing.")
    await write_documents(runtime, DEFAULT_COLLECTION_ID, ORIGIN, [swapped], reuse_for=None)
    swapped_id = document_id(DEFAULT_COLLECTION_ID, ORIGIN, swapped.key)
    first_key, second_key = ordered_keys("lock-order-a", "lock-order-b")
    first = document(first_key, "Kingfishers dive for small fish from riverside perches.")
    second = document(second_key, "Dippers walk underwater along the beds of fast streams.")

    async with owner_connection(runtime.database_url) as swap:
        # A replacement's final write, as the worker does it: the document row takes the new file's
        # sha256 (the second document's bytes), then its chunks take the mutex.
        transaction = swap.transaction()
        await transaction.start()
        try:
            await swap.execute(
                "UPDATE documents SET sha256 = $2 WHERE id = $1",
                swapped_id,
                hashlib.sha256(document_content(second)).hexdigest(),
            )
            imported = asyncio.ensure_future(
                write_documents(runtime, DEFAULT_COLLECTION_ID, ORIGIN, [first, second], reuse_for=None)
            )
            await until_waiting(runtime, "INSERT INTO documents")  # the second's upsert waits for us
            # The mutex is free: the import holds it only once every document row is written.
            await asyncio.wait_for(swap.execute("SELECT 1 FROM bm25_stats FOR UPDATE"), 30)
        finally:
            await transaction.rollback()  # the replacement failed: the bytes are free again
        counts = await asyncio.wait_for(imported, 60)

    assert (counts.created, counts.duplicates, counts.unusable) == (2, 0, [])
    for doc in (first, second):
        assert await chunk_count(runtime, document_id(DEFAULT_COLLECTION_ID, ORIGIN, doc.key)) == 1
