"""Replacing a document's file: queue the new bytes as a task, and swap them in when the worker is done.

Until the swap nothing of the document changes: its stored file, chunks, metadata, status and error stay
the current version's, so search keeps finding the old text and a replacement that fails leaves it live.
Failing, cancelled or retried by an operator, the replacement is its task's alone (tasks.fail_task,
operations._retry_locked): a failed document keeps the error about its own bytes. The swap
(ingestion/tasks.complete_task) is one transaction: new bytes and metadata in, version + 1, then
`write_chunks` deletes the old chunks and inserts the new ones (the BM25 statistics stay exact: migration
0026 does both sides' BM25 work at the end), the task completes and its message goes.

The old bytes are not kept: they would be a second copy of every replaced file, while nothing could use
them (their chunks are gone after the swap; a chat answer keeps the excerpt it cited).

Names: `replace=true` decides by file name (replace the document so named, or create one) under a
transaction advisory lock per (collection, name), `lock_names`. A replacement that renames its
document (PUT with another file name) takes the same lock for the new name at the swap, before any row
lock (`lock_new_name`), and never takes a name another document of the collection has: refused when
queued (409) and, under the lock, at the swap (the task fails, the old version stays). So an upload's
"no document has this name, create it" cannot interleave with a swap giving another document that
name (two documents so named: every later replace-by-name a 409).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from rag_server.errors import ConflictError, NotFoundError
from rag_server.infra.log_context import current_request_id
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion import locks
from rag_server.ingestion.documents import IncomingFile, sha256_hex
from rag_server.ingestion.models import TaskRef, task_message
from rag_server.ingestion.parsing import sanitize_filename

# The advisory lock class of "a file name in a collection" (two-int keys; the worker's is 0x52414757).
NAME_LOCK_CLASS = 0x5241464E


async def lock_names(conn: asyncpg.Connection, collection_id: UUID, filenames: Sequence[str]) -> None:
    """Hold, until the transaction ends, a lock on each (collection, file name): what `replace=true`
    decides by name (replace the document so named, or create it) must not interleave with another
    upload deciding the same, nor with a swap renaming a document to that name. Taken in one fixed
    order (by key), before any row lock, so two holders cannot wait for each other in a cycle. A hash
    collision only serialises two unrelated names."""
    keys = sorted({_name_lock_key(collection_id, n) for n in filenames})
    # unnest yields the array in its order and nothing sorts the rows: the locks are taken in `keys` order.
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k", NAME_LOCK_CLASS, keys
    )


def _name_lock_key(collection_id: UUID, filename: str) -> int:
    # The same in every process (Python's hash() is salted per process): 32 signed bits of a sha256.
    digest = hashlib.sha256(f"{collection_id}/{filename}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


async def lock_new_name(conn: asyncpg.Connection, document_id: UUID, filename: str) -> None:
    """At a swap, before the task and document rows are locked: the name lock of `filename` when it is
    a new name for the document. Its current name changes only by its own swap (one active task per
    document), so reading it unlocked is exact."""
    doc = await conn.fetchrow("SELECT collection_id, filename FROM documents WHERE id = $1", document_id)
    if doc is not None and doc["filename"] != filename:
        await lock_names(conn, doc["collection_id"], [filename])


async def _other_named(conn: asyncpg.Connection, document_id: UUID, filename: str) -> UUID | None:
    """Another document of the document's collection named `filename`, when that is a new name for it."""
    other: UUID | None = await conn.fetchval(
        """
        SELECT o.id FROM documents d JOIN documents o
            ON o.collection_id = d.collection_id AND o.filename = $2 AND o.id <> d.id
        WHERE d.id = $1 AND d.filename <> $2 LIMIT 1
        """,
        document_id,
        filename,
    )
    return other


async def document_named(conn: asyncpg.Connection, collection_id: UUID, filename: str) -> UUID | None:
    """The collection's document with this file name (what `replace=true` replaces), None if none; a
    ConflictError when several share the name (the caller must say which, by id)."""
    rows = await conn.fetch(
        "SELECT id FROM documents WHERE collection_id = $1 AND filename = $2 ORDER BY created_at LIMIT 2",
        collection_id,
        filename,
    )
    if len(rows) > 1:
        raise ConflictError(
            f"Several documents are named {filename!r} in this collection: replace one by id with "
            "PUT /documents/{id}/file."
        )
    return rows[0]["id"] if rows else None


def in_folder_of(current: str, new: str) -> str:
    """A new file's name for a document named `current`: a bare file name stays in the document's
    folder ("guides/README.md" replaced by "README.md" from a file picker, which sends no folder); a
    name with a folder is taken as it is."""
    folder, slash, _ = current.rpartition("/")
    return sanitize_filename(f"{folder}/{new}") if slash and "/" not in new else new


async def queue_replacement(
    conn: asyncpg.Connection, queue: IngestQueue, batch_id: UUID, document_id: UUID, f: IncomingFile
) -> TaskRef | None:
    """A task (and its message) replacing the document's file with `f`; None when `f` holds the same
    bytes as the current version, also while its own task is unfinished (the caller queues a failed
    document again, else records a no-op, a duplicate following that task). ConflictError while another
    task of the document is unfinished (other bytes, or any while a new file for it waits), when these
    bytes are another document's of the collection (dedup is per collection), or when `f` renames the
    document to another document's name (replace-by-name would then find two)."""
    async with locks.document_rows(conn, f"document {document_id}"):
        doc = await conn.fetchrow(
            "SELECT id, collection_id, filename, sha256, version, status FROM documents WHERE id = $1"
            " FOR UPDATE",
            document_id,
        )
    if doc is None:
        raise NotFoundError(f"no document {document_id}")
    active = await conn.fetchrow(
        "SELECT id, replaces_version FROM job_tasks"
        " WHERE document_id = $1 AND status IN ('queued', 'processing') LIMIT 1",
        document_id,
    )
    sha = f.sha256
    # Also before its own bytes are a no-op: those queue a failed document again under this name.
    if (named := await _other_named(conn, document_id, f.filename)) is not None:
        raise ConflictError(
            f"{f.filename!r} is the name of another document of this collection (document {named}): a new "
            f"file for {doc['filename']!r} may not take it (replace=true would find two documents so named)."
        )
    # The bytes the document holds, whatever its own task's outcome: nothing to replace (not while a new
    # file waits: these may be the old bytes that file replaces). `ingest --replace` sends a folder's
    # unchanged files too, and one whose document was still processing made the whole upload a 409.
    if sha == doc["sha256"] and (active is None or active["replaces_version"] is None):
        return None
    if active is not None:
        raise ConflictError(
            f"{doc['filename']!r} is still being processed (task {active['id']}): replace it once that task "
            "is finished."
        )
    other = await conn.fetchrow(
        "SELECT id, filename FROM documents WHERE collection_id = $1 AND sha256 = $2 AND id <> $3",
        doc["collection_id"],
        sha,
        document_id,
    )
    if other is not None:
        raise ConflictError(
            f"The new bytes for {doc['filename']!r} are already stored in this collection as "
            f"{other['filename']!r} (document {other['id']}): not replaced."
        )
    task_id = uuid4()
    request_id = current_request_id()
    msg_id = await queue.send(task_message(task_id, document_id, request_id), conn=conn)
    await conn.execute(
        """
        INSERT INTO job_tasks (id, batch_id, document_id, filename, msg_id, replaces_version, new_content,
                               new_metadata, request_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        task_id,
        batch_id,
        document_id,
        f.filename,
        msg_id,
        doc["version"],
        f.content,
        f.metadata,  # None (none given): the document keeps its metadata; {} clears it
        request_id,
    )
    return TaskRef(
        task_id=task_id,
        filename=f.filename,
        status="queued",
        document_id=document_id,
        replaces_version=doc["version"],
    )


async def unchanged_task(
    conn: asyncpg.Connection, batch_id: UUID, document_id: UUID, f: IncomingFile
) -> TaskRef:
    """The no-op of replacing a document with its own bytes: a finished 'duplicate' task saying so."""
    row = await conn.fetchrow("SELECT version, chunk_count FROM documents WHERE id = $1", document_id)
    assert row is not None  # locked by queue_replacement
    detail = f"Identical to version {row['version']} of the document: nothing to replace."
    # finished_at: the clock, as every duplicate's (batches.DUPLICATE_SOURCE reads it).
    task_id = await conn.fetchval(
        """
        INSERT INTO job_tasks (batch_id, document_id, filename, status, total_chunks, completed_chunks,
                               error, finished_at)
        VALUES ($1, $2, $3, 'duplicate', $4, $4, $5, clock_timestamp()) RETURNING id
        """,
        batch_id,
        document_id,
        f.filename,
        row["chunk_count"],
        detail,
    )
    return TaskRef(
        task_id=task_id, filename=f.filename, status="duplicate", document_id=document_id, detail=detail
    )


async def swap_in(
    conn: asyncpg.Connection,
    document_id: UUID,
    content: bytes,
    filename: str,
    file_type: str,
    content_type: str,
    metadata: dict[str, Any] | None,
) -> str | None:
    """The replacement's bytes, name, type and metadata onto the (locked) document, version + 1; the
    caller then writes the new chunks in the same transaction. Returns why not (and changes nothing)
    when the same bytes were stored as another document of the collection meanwhile, or another
    document took the new name meanwhile (the caller holds its name lock: `lock_new_name`)."""
    sha = sha256_hex(content)
    other = await conn.fetchval(
        """
        SELECT o.filename FROM documents d JOIN documents o
            ON o.collection_id = d.collection_id AND o.sha256 = $2 AND o.id <> d.id
        WHERE d.id = $1
        """,
        document_id,
        sha,
    )
    if other is not None:
        return f"The new bytes were stored as {other!r} meanwhile; the document was not replaced."
    if (named := await _other_named(conn, document_id, filename)) is not None:
        return (
            f"Another document named {filename!r} was stored meanwhile (document {named}); the document was "
            "not replaced."
        )
    await conn.execute(
        "INSERT INTO document_files (document_id, content) VALUES ($1, $2)"
        " ON CONFLICT (document_id) DO UPDATE SET content = excluded.content",
        document_id,
        content,
    )
    await conn.execute(
        """
        UPDATE documents SET filename = $2, file_type = $3, content_type = $4, size_bytes = $5, sha256 = $6,
               metadata = coalesce($7, metadata), version = version + 1, replaced_at = now(),
               updated_at = now()
        WHERE id = $1
        """,
        document_id,
        filename,
        file_type,
        content_type,
        len(content),
        sha,
        metadata,
    )
    # The new files of its failed replacements: each replaces an older version now, which a retry
    # refuses (operations._replacement_refusal), so nothing could use them again. SKIP LOCKED: the document
    # row is held, and waiting for a task row would take the locks out of order; a row skipped is one a
    # retry holds, which the version refuses.
    await conn.execute(
        """
        UPDATE job_tasks SET new_content = NULL, new_metadata = NULL
        WHERE id IN (
            SELECT id FROM job_tasks
            WHERE document_id = $1 AND status = 'failed'
              AND (new_content IS NOT NULL OR new_metadata IS NOT NULL)
            ORDER BY id FOR UPDATE SKIP LOCKED
        )
        """,
        document_id,
    )
    return None
