"""A collection's row as every write into the collection holds it: here, apart from store.py, which
deletes collections with ingestion's help (ingestion.deletion), so that ingestion's writers can import it."""

from __future__ import annotations

from uuid import UUID

from rag_server.infra.database import Executor


async def share_collection(conn: Executor, collection_id: UUID) -> bool:
    """Hold the collection's row (FOR KEY SHARE) to the end of the caller's transaction, as every write
    into a collection does (an upload, a replacement, an import's batch): a delete of the collection
    waits for it, or it finds the collection gone (False; also outside the caller's scope). Through
    migration 0004's function: row locks need the UPDATE policy, which editors do not pass."""
    return bool(await conn.fetchval("SELECT rag_share_collection($1)", collection_id))
