"""Deleting documents (their bytes and chunks go by cascade): one, several, or those a selection names,
in one transaction each, failing their unfinished tasks first in the worker's lock order."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from rag_server.errors import ConflictError, NotFoundError
from rag_server.infra.database import LONG_STATEMENT_TIMEOUT_S, Executor, transaction
from rag_server.ingestion.batches import any_duplicate_of_failed_tasks, fail_duplicates_of_failed_tasks
from rag_server.ingestion.chunks import DELETE_LOCK_CLASS
from rag_server.ingestion.documents import matching_documents
from rag_server.ingestion.models import DeletedDocuments, DeleteDocuments
from rag_server.ingestion.selection import LockedSelection


async def delete_document(conn: Executor, document_id: UUID) -> None:
    """Delete a document, its bytes and its chunks (cascade) together; NotFoundError when there is none."""
    if not await delete_documents(conn, [document_id]):
        raise NotFoundError(f"no document {document_id}")


# Attempts of a delete that finds a task queued for its documents while it waited for their locks. One
# more is needed only when an upload or replacement committed during that wait; documents that keep
# getting new work would otherwise hold the delete, its connection and its locks for ever.
DELETE_ATTEMPTS = 5


async def delete_documents(
    conn: Executor, document_ids: Sequence[UUID], selection: LockedSelection | None = None
) -> list[UUID]:
    """Delete these documents, their bytes and their chunks (cascade) in one transaction; returns the
    ids deleted (the others did not exist, or are out of the caller's reach). With `selection` (they are
    what it matched), only those it still names once they are locked, and none unless they are as many
    as its `expected_count` (SelectionChangedError).

    Tasks still queued or processing for them are failed first, in the worker's lock order for its
    final write (task, then document), so a worker sees it and just drops its message instead of
    writing chunks for a document that is gone. A final write under way gives way at its next
    statement (`lock_out_writes`), so the delete does not wait for the rest of it. Rows are locked in
    id order: two deletions of overlapping sets wait for each other instead of deadlocking.
    ConflictError when a task was queued for them during each of DELETE_ATTEMPTS waits (nothing is
    deleted)."""
    ids = sorted(set(document_ids))
    async with transaction(conn) as c:
        attempts = 0
        while attempts < DELETE_ATTEMPTS:
            try:
                async with transaction(c) as attempt:  # a savepoint: a retry releases its row locks
                    return await _delete_locked(attempt, ids, selection)
            except _TaskQueuedMeanwhile:
                attempts += 1
            except _SelectionNarrowed as narrowed:
                # Fewer ids each time (those of the last attempt still matching): this ends by itself.
                ids = narrowed.ids
        raise ConflictError(
            "New work kept being queued for the documents while this delete waited for them "
            f"({DELETE_ATTEMPTS} times): nothing was deleted; try again."
        )


class _TaskQueuedMeanwhile(Exception):
    """A task of a document being deleted was queued after its tasks were failed (see _delete_locked)."""


class _SelectionNarrowed(Exception):
    """Documents of a selection no longer match (or are gone) once locked: its tasks were failed with
    the others', so the attempt is undone and made again on `ids`, those still matching."""

    def __init__(self, ids: list[UUID]) -> None:
        super().__init__()
        self.ids = ids


async def lock_out_writes(
    c: asyncpg.Connection, *, document_ids: Sequence[UUID] = (), collection_id: UUID | None = None
) -> None:
    """Before any task or document row, this transaction's lock on each of these documents (or of this
    collection's) whose task is processing, read without locking: a worker writing its chunks sees it
    between two statements (chunks.give_way_to_delete), rolls back and so lets go of the task and
    document rows this delete waits for. Only processing ones (a few per worker): each lock takes a slot
    of the shared lock table, and a delete may name tens of thousands of documents. A task that starts
    processing after this read is waited for. Taken in key order (unnest keeps the array's): two deletes
    wait for each other, never in a cycle."""
    keys = [
        r["k"]
        for r in await c.fetch(
            """
            SELECT DISTINCT hashtext(t.document_id::text) AS k FROM job_tasks t
            WHERE t.status = 'processing'
              AND (t.document_id = ANY($1::uuid[])
                   OR t.batch_id IN (SELECT id FROM job_batches WHERE collection_id = $2))
            ORDER BY k
            """,
            list(document_ids),
            collection_id,
            timeout=LONG_STATEMENT_TIMEOUT_S,
        )
    ]
    if keys:
        await c.execute(
            "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k",
            DELETE_LOCK_CLASS,
            keys,
            timeout=LONG_STATEMENT_TIMEOUT_S,
        )


async def _delete_locked(
    c: asyncpg.Connection, ids: list[UUID], selection: LockedSelection | None
) -> list[UUID]:
    # A final write under way gives way: its task and document rows are free sooner (the lock first, in
    # this savepoint: a retry takes them again, as the tasks processing may have changed).
    await lock_out_writes(c, document_ids=ids)
    # Every task row of the documents first, in id order (the lock order: task rows, then document
    # rows). The ones left unlocked here were locked by the document's ON DELETE SET NULL after its row:
    # a retry of a finished task (its task row, then its document) and this delete waited for each other.
    # The unfinished tasks fail; and every task's new file goes: a replacement's bytes are kept for a
    # retry (ON DELETE SET NULL keeps the row), and once its document is gone no retry can use them.
    await c.execute(
        """
        WITH locked AS MATERIALIZED (
            SELECT id, status IN ('queued', 'processing') AS unfinished,
                   new_content IS NOT NULL OR new_metadata IS NOT NULL AS holds_file
            FROM job_tasks WHERE document_id = ANY($1::uuid[])
            ORDER BY id FOR UPDATE
        )
        UPDATE job_tasks t
        SET status = CASE WHEN l.unfinished THEN 'failed' ELSE t.status END,
            error = CASE WHEN l.unfinished THEN 'The document was deleted before processing finished.'
                         ELSE t.error END,
            finished_at = CASE WHEN l.unfinished THEN clock_timestamp() ELSE t.finished_at END,
            updated_at = CASE WHEN l.unfinished THEN now() ELSE t.updated_at END,
            new_content = NULL, new_metadata = NULL
        FROM locked l WHERE t.id = l.id AND (l.unfinished OR l.holds_file)
        """,
        ids,
        timeout=LONG_STATEMENT_TIMEOUT_S,
    )
    # A copy of a document deleted before it was read reads failed, as when its task fails, and stays so.
    await fail_duplicates_of_failed_tasks(c, ids)
    await c.execute(
        "SELECT id FROM documents WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        ids,
        timeout=LONG_STATEMENT_TIMEOUT_S,
    )
    if selection is not None:
        # Matched again under the locks (ingestion/selection.py): one edited (or deleted) between the
        # selection's read and its lock is not deleted; nothing is unless the count is the one confirmed.
        still = await selection.still_matching(c, ids)
        if len(still) != len(ids):
            raise _SelectionNarrowed(still)
        selection.check_count(len(ids), "deleted")
    # With the documents locked no task can be queued for them (a replacement, or a failed document
    # uploaded again, locks its document first); one committed while this waited for them was not
    # failed above, and would outlive its document 'queued' for good. So would a duplicate of them then
    # committed (an upload of the same bytes writes it under the document's row lock): 'duplicate' of no
    # document. Locking it now would take the locks out of order: start again.
    if await c.fetchval(
        "SELECT EXISTS (SELECT FROM job_tasks WHERE document_id = ANY($1::uuid[])"
        " AND status IN ('queued', 'processing'))",
        ids,
    ) or await any_duplicate_of_failed_tasks(c, ids):
        raise _TaskQueuedMeanwhile
    rows = await c.fetch(
        "DELETE FROM documents WHERE id = ANY($1::uuid[]) RETURNING id",
        ids,
        timeout=LONG_STATEMENT_TIMEOUT_S,
    )
    return [r["id"] for r in rows]


async def delete_matching(conn: Executor, collection_id: UUID, request: DeleteDocuments) -> DeletedDocuments:
    """The documents of one collection that `request` names (ids, metadata, text) when they are locked,
    deleted; none unless they are as many as `request.expected_count`, when given (SelectionChangedError)."""
    selection = LockedSelection(collection_id, request, request.expected_count)
    async with transaction(conn) as c:
        chosen = [d.id for d in await matching_documents(c, collection_id, request)]
        deleted = await delete_documents(c, chosen, selection)
    gone = set(deleted)
    kept = [i for i in dict.fromkeys(request.ids or []) if i not in gone]
    return DeletedDocuments(deleted=sorted(deleted), not_deleted=kept)
