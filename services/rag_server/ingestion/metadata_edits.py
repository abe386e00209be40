"""Editing documents' metadata: one document (PATCH /documents/{id}) or several of a collection in one
transaction (POST /documents/metadata, Chroma's `update(ids, metadatas)`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from rag_server.errors import NotFoundError
from rag_server.infra.database import Executor, transaction
from rag_server.ingestion.documents import get_document
from rag_server.ingestion.metadata import check_metadata
from rag_server.ingestion.models import Document, MetadataUpdate, MetadataUpdates, UpdatedDocuments


async def update_metadata(conn: Executor, document_id: UUID, update: MetadataUpdate) -> Document:
    """Replace the document's metadata, or merge top-level keys into it (a null value removes the key).

    Search filters read the document's metadata (`d.metadata || c.metadata`, retrieval/filters.py) in
    both legs, so the new value applies to every chunk as soon as this commits; chunks' own metadata
    (per-chunk keys, not a copy) is left alone.

    The later edit wins: while a replacement that carries metadata is pending (queued or processing),
    the edit is applied to the metadata it will swap in too, in this transaction, so the swap cannot
    bring back the value the edit replaced. Lock order as the worker's final write: task row, then
    document row.
    """
    check_metadata(update.metadata)
    async with transaction(conn) as c:
        return await _update_with_retries(c, document_id, update)


async def _update_with_retries(c: asyncpg.Connection, document_id: UUID, update: MetadataUpdate) -> Document:
    while True:
        try:
            async with transaction(c) as attempt:  # a savepoint: a retry releases its row locks
                return await _update_metadata_locked(attempt, document_id, update)
        except _ReplacementQueuedMeanwhile:
            continue


class _ReplacementQueuedMeanwhile(Exception):
    """A replacement was queued between locking the pending tasks and locking the document."""


_PENDING_REPLACEMENT = (
    "document_id = $1 AND status IN ('queued', 'processing') AND replaces_version IS NOT NULL"
    " AND new_metadata IS NOT NULL"
)


async def _update_metadata_locked(
    c: asyncpg.Connection, document_id: UUID, update: MetadataUpdate
) -> Document:
    pending = await c.fetch(
        f"SELECT id, new_metadata FROM job_tasks WHERE {_PENDING_REPLACEMENT} ORDER BY id FOR UPDATE",
        document_id,
    )
    current = await c.fetchval("SELECT metadata FROM documents WHERE id = $1 FOR UPDATE", document_id)
    if current is None:
        raise NotFoundError(f"no document {document_id}")
    # With the document locked no replacement can be queued (queue_replacement locks it first); one
    # queued before that but after the tasks were read is not locked here, and locking it now would take
    # the locks out of order: start again.
    now_pending = await c.fetch(f"SELECT id FROM job_tasks WHERE {_PENDING_REPLACEMENT}", document_id)
    if {r["id"] for r in now_pending} != {r["id"] for r in pending}:
        raise _ReplacementQueuedMeanwhile
    await c.execute(
        "UPDATE documents SET metadata = $2, updated_at = now() WHERE id = $1",
        document_id,
        _edited(current, update),
    )
    for task in pending:
        await c.execute(
            "UPDATE job_tasks SET new_metadata = $2, updated_at = now() WHERE id = $1",
            task["id"],
            _edited(task["new_metadata"], update),
        )
    return await get_document(c, document_id)


def _edited(metadata: dict[str, Any], update: MetadataUpdate) -> dict[str, Any]:
    if update.mode == "merge":
        merged = {**metadata, **update.metadata}
        return check_metadata({k: v for k, v in merged.items() if v is not None})
    return check_metadata(update.metadata)


async def update_many(conn: Executor, collection_id: UUID, request: MetadataUpdates) -> UpdatedDocuments:
    """Each named document of the collection gets its metadata as `update_metadata` would give it, all in
    one transaction (every value is checked before any is written); a document not in the collection
    (gone, or elsewhere) is left out and listed in `not_updated`. Documents are locked in id order, so
    two bulk edits naming the same documents wait for each other instead of deadlocking."""
    edits = {d.id: MetadataUpdate(metadata=d.metadata, mode=request.mode) for d in request.documents}
    for i, edit in enumerate(edits.values()):
        check_metadata(edit.metadata, f"documents[{i}].metadata")
    updated: list[UUID] = []
    async with transaction(conn) as c:
        present = await c.fetch(
            "SELECT id FROM documents WHERE id = ANY($1::uuid[]) AND collection_id = $2 ORDER BY id",
            list(edits),
            collection_id,
        )
        for row in present:
            try:
                await _update_with_retries(c, row["id"], edits[row["id"]])
            except NotFoundError:  # deleted since it was read
                continue
            updated.append(row["id"])
    done = set(updated)
    return UpdatedDocuments(updated=updated, not_updated=[i for i in edits if i not in done])
