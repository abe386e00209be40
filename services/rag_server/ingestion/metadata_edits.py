"""Editing documents' metadata: one document (PATCH /documents/{id}), several of a collection in one
transaction (POST /documents/metadata, Chroma's `update(ids, metadatas)`), or every document a selection
names with one value (`rag-server documents update`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from rag_server.errors import ConflictError, NotFoundError
from rag_server.infra.database import Executor, transaction
from rag_server.ingestion import locks
from rag_server.ingestion.documents import get_document, matching_documents
from rag_server.ingestion.metadata import check_metadata
from rag_server.ingestion.models import (
    Document,
    DocumentSelection,
    MetadataUpdate,
    MetadataUpdates,
    UpdatedDocuments,
)
from rag_server.ingestion.selection import LockedSelection


async def update_metadata(conn: Executor, document_id: UUID, update: MetadataUpdate) -> Document:
    """Replace the document's metadata, or merge top-level keys into it (a null value removes the key).

    Search filters read the document's metadata (`d.metadata || c.metadata`, retrieval/filters.py) in
    both legs, so the new value applies to every chunk as soon as this commits; chunks' own metadata
    (per-chunk keys, not a copy) is left alone.

    The later edit wins: while a replacement that carries metadata is pending (queued or processing),
    the edit is applied to the metadata it will swap in too, in this transaction, so the swap cannot
    bring back the value the edit replaced.
    """
    checked = update.model_copy(update={"metadata": check_metadata(update.metadata)})
    async with transaction(conn) as c:
        if not await _edit(c, {document_id: checked}, collection_id=None):
            raise NotFoundError(f"no document {document_id}")
        return await get_document(c, document_id)


async def update_many(conn: Executor, collection_id: UUID, request: MetadataUpdates) -> UpdatedDocuments:
    """Each named document of the collection gets its metadata as `update_metadata` would give it, all in
    one transaction (every value is checked before any is written); a document not in the collection
    (gone, or elsewhere) is left out and listed in `not_updated`."""
    edits = {
        d.id: MetadataUpdate(
            metadata=check_metadata(d.metadata, f"documents[{i}].metadata"), mode=request.mode
        )
        for i, d in enumerate(request.documents)
    }
    async with transaction(conn) as c:
        updated = await _edit(c, edits, collection_id)
    done = set(updated)
    return UpdatedDocuments(updated=updated, not_updated=[i for i in edits if i not in done])


async def update_matching(
    conn: Executor,
    collection_id: UUID,
    selection: DocumentSelection,
    update: MetadataUpdate,
    expected_count: int | None = None,
) -> UpdatedDocuments:
    """Every document of the collection that `selection` names (matched in this transaction, and again
    once the documents are locked: ingestion/selection.py) gets its metadata from `update`, as
    `update_metadata` would give it; the ids named that no longer match (gone, changed meanwhile,
    elsewhere) are listed in `not_updated`. `expected_count` (None: no check): unless the documents about
    to be updated are that many, a SelectionChangedError and nothing is written."""
    checked = update.model_copy(update={"metadata": check_metadata(update.metadata)})
    locked = LockedSelection(collection_id, selection, expected_count)
    async with transaction(conn) as c:
        chosen = [d.id for d in await matching_documents(c, collection_id, selection)]
        updated = await _edit(c, dict.fromkeys(chosen, checked), collection_id, locked)
    done = set(updated)
    return UpdatedDocuments(
        updated=updated, not_updated=[i for i in dict.fromkeys(selection.ids or []) if i not in done]
    )


class _ReplacementQueuedMeanwhile(Exception):
    """A replacement was queued between locking the pending tasks and locking its document."""


_PENDING_REPLACEMENTS = (
    "document_id = ANY($1::uuid[]) AND status IN ('queued', 'processing') AND replaces_version IS NOT NULL"
    " AND new_metadata IS NOT NULL"
)


async def _edit(
    c: asyncpg.Connection,
    edits: dict[UUID, MetadataUpdate],
    collection_id: UUID | None,
    selection: LockedSelection | None = None,
) -> list[UUID]:
    """The ids edited, in id order (those of `collection_id` only, unless None; those `selection` still
    names once locked, when given)."""
    while True:
        try:
            async with transaction(c) as attempt:  # a savepoint: a retry releases its row locks
                return await _edit_locked(attempt, edits, collection_id, selection)
        except _ReplacementQueuedMeanwhile:
            continue


async def _edit_locked(
    c: asyncpg.Connection,
    edits: dict[UUID, MetadataUpdate],
    collection_id: UUID | None,
    selection: LockedSelection | None,
) -> list[UUID]:
    # The lock order of a delete (deletion.delete_documents) and of the worker's final write: every
    # task row first, then every document row, each set in id order.
    ids = list(edits)
    what = f"document {ids[0]}" if len(ids) == 1 else "a document of these"
    async with locks.document_rows(c, what):
        pending = await c.fetch(
            f"SELECT id, document_id, new_metadata FROM job_tasks WHERE {_PENDING_REPLACEMENTS}"
            " ORDER BY id FOR UPDATE",
            ids,
        )
        documents = await c.fetch(
            "SELECT id, metadata FROM documents WHERE id = ANY($1::uuid[]) AND ($2::uuid IS NULL OR"
            " collection_id = $2) ORDER BY id FOR UPDATE",
            ids,
            collection_id,
        )
    # With the documents locked no replacement can be queued (queue_replacement locks the document
    # first); one queued before that but after the tasks were read is not locked here, and locking it
    # now would take the locks out of order: start again.
    now_pending = await c.fetch(f"SELECT id FROM job_tasks WHERE {_PENDING_REPLACEMENTS}", ids)
    if {r["id"] for r in now_pending} != {r["id"] for r in pending}:
        raise _ReplacementQueuedMeanwhile
    if selection is not None:
        # Matched again under the locks: one edited between the selection's read and its lock so that it
        # no longer matches is left alone (its pending replacement too: `found` below), and nothing is
        # written unless those left are as many as the caller confirmed.
        still = set(await selection.still_matching(c, [d["id"] for d in documents]))
        documents = [d for d in documents if d["id"] in still]
        selection.check_count(len(documents), "updated")
    for d in documents:  # read under the row lock: no edit can land between this and the write
        expected = edits[d["id"]].expected_metadata
        if expected is not None and not same_json(d["metadata"], expected):
            raise ConflictError(
                f"the metadata of document {d['id']} was changed since it was read (another edit came "
                "first); nothing was written: read it again, then edit"
            )
    await c.executemany(
        "UPDATE documents SET metadata = $2, updated_at = now() WHERE id = $1",
        [(d["id"], _edited(d["metadata"], edits[d["id"]], d["id"])) for d in documents],
    )
    found = {d["id"] for d in documents}
    await c.executemany(
        "UPDATE job_tasks SET new_metadata = $2, updated_at = now() WHERE id = $1",
        [
            (t["id"], _edited(t["new_metadata"], edits[t["document_id"]], t["document_id"]))
            for t in pending
            if t["document_id"] in found
        ],
    )
    return [d["id"] for d in documents]


def same_json(a: Any, b: Any) -> bool:
    """JSON values equal as jsonb compares them: Python's `==` takes true for 1 and false for 0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_json, a, b))
    return bool(a == b)


def _edited(metadata: dict[str, Any], update: MetadataUpdate, document_id: UUID) -> dict[str, Any]:
    if update.mode == "merge":
        merged = {**metadata, **update.metadata}
        # Only the merge can grow past the limits (each part was within them): say whose.
        return check_metadata(
            {k: v for k, v in merged.items() if v is not None}, f"document {document_id}'s metadata"
        )
    return update.metadata  # checked once where the edit came in
