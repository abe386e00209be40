"""Upload batches: store a batch of files in ONE transaction (bytes, documents, tasks, queue messages),
and report its status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID, uuid4

import asyncpg

from rag_server.collections.locks import share_collection
from rag_server.collections.models import DEFAULT_COLLECTION_ID
from rag_server.errors import CollectionNotFoundError, InvalidInputError, NotFoundError
from rag_server.infra.database import LONG_STATEMENT_TIMEOUT_S, Executor, connection, transaction
from rag_server.infra.log_context import current_request_id
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion import locks
from rag_server.ingestion.documents import IncomingFile, insert_new_document
from rag_server.ingestion.models import (
    TASK_STATUSES,
    BatchState,
    BatchStatus,
    BatchTask,
    TaskRef,
    TaskStatus,
    UploadResponse,
    task_message,
)
from rag_server.ingestion.replacement import (
    document_named,
    in_folder_of,
    lock_names,
    queue_replacement,
    unchanged_task,
)
from rag_server.ingestion.upload import named, repeated_names, repeated_warning


async def create_upload_batch(
    conn: Executor,
    queue: IngestQueue,
    files: Sequence[IncomingFile],
    collection_id: UUID = DEFAULT_COLLECTION_ID,
    *,
    replace: bool = False,
) -> UploadResponse:
    """Store every file, the batch, a task per file and one message per file to process: ONE transaction.

    Dedup by sha256 within the collection: an existing document (or an earlier file of this batch) makes
    a 'duplicate' task pointing at it and sends no message; an existing *failed* document is queued again,
    under this upload's name, type and metadata (its own metadata when the upload gives none), unless a
    new file for it is queued: then a task failed at once says so (one active task per document).
    `replace`: a file named like a document of the collection replaces that document's file (a
    replacement task, ingestion/replacement.py) instead of becoming a new document.
    Every task and message carries the request's id (infra/log_context.py), for the worker's log lines.

    Concurrent uploads: with `replace`, each file name is serialised by an advisory lock (name_locks), so
    two uploads of a new name make one document and the later one replaces it (or gets the 409 of a
    document still being processed). Files are stored in sha256 order, whatever the request's order:
    two uploads of the same new files wait for each other on UNIQUE (collection_id, sha256) in the same
    order, never in a cycle (a deadlock, 40P01). The tasks come back in the request's order.
    With `replace`, the new files of named documents are queued before the other files, so a file that
    holds a failed document's old bytes beside that document's new file is always the one refused
    (`_refused_task`), whichever of the two sorts first by sha256.
    """
    repeated = repeated_names(files)
    if replace and repeated:
        # A name says which document a file replaces: the same name twice, and the second file would
        # replace the first before either is processed.
        raise InvalidInputError(
            f"{named([repr(n) for n in repeated])} {'is' if len(repeated) == 1 else 'are'} given more than"
            " once in this upload: with replace=true each file name says which document it replaces, so"
            " send each name once."
        )
    async with transaction(conn) as c:
        if not await share_collection(c, collection_id):  # a delete of it waits, or it is gone
            raise CollectionNotFoundError(f"no collection {str(collection_id)!r}")
        targets: list[UUID | None] = [None] * len(files)
        if replace:
            await lock_names(c, collection_id, [f.filename for f in files])
            targets = [await document_named(c, collection_id, f.filename) for f in files]
        batch_id: UUID = await c.fetchval(
            "INSERT INTO job_batches (collection_id) VALUES ($1) RETURNING id", collection_id
        )
        order = sorted(range(len(files)), key=lambda i: (targets[i] is None, files[i].sha256, i))
        tasks: dict[int, TaskRef] = {}
        for i in order:
            tasks[i] = await _add_or_replace(c, queue, batch_id, files[i], collection_id, targets[i])
    warnings = [repeated_warning(repeated)] if repeated else []
    return UploadResponse(batch_id=batch_id, tasks=[tasks[i] for i in range(len(files))], warnings=warnings)


async def replace_document_file(
    conn: Executor, queue: IngestQueue, document_id: UUID, f: IncomingFile
) -> UploadResponse:
    """PUT /documents/{id}/file: a batch of one task, ONE transaction (like an upload): a new file for the
    document (replacement.queue_replacement); its own bytes queue a failed document again as an upload of
    them does (under this file's name, type and metadata), and are a no-op for any other."""
    async with transaction(conn) as c:
        doc = await c.fetchrow("SELECT collection_id, filename FROM documents WHERE id = $1", document_id)
        if doc is None or not await share_collection(c, doc["collection_id"]):
            raise NotFoundError(f"no document {document_id}")
        collection_id = doc["collection_id"]
        f = replace(f, filename=in_folder_of(doc["filename"], f.filename))
        if f.filename != doc["filename"]:
            # A failed document queued again takes its new name now, not at a swap: the name's lock,
            # before any row lock, as an upload takes it (replacement.lock_names).
            await lock_names(c, collection_id, [f.filename])
        batch_id: UUID = await c.fetchval(
            "INSERT INTO job_batches (collection_id) VALUES ($1) RETURNING id", collection_id
        )
        task = await _add_or_replace(c, queue, batch_id, f, collection_id, document_id)
    return UploadResponse(batch_id=batch_id, tasks=[task])


async def _add_or_replace(
    conn: asyncpg.Connection,
    queue: IngestQueue,
    batch_id: UUID,
    f: IncomingFile,
    collection_id: UUID,
    target: UUID | None,
) -> TaskRef:
    """`f` as a new file of the document `target` (replace=true found it by name), else as an upload."""
    request_id = current_request_id()
    if target is None:
        return await _add_file(conn, queue, batch_id, f, collection_id, request_id)
    task = await queue_replacement(conn, queue, batch_id, target, f)
    if task is not None:
        return task
    # The same bytes: a failed document is queued again as any upload would; else nothing to do.
    status = await conn.fetchval("SELECT status FROM documents WHERE id = $1", target)
    if status == "failed":
        return await _add_file(conn, queue, batch_id, f, collection_id, request_id)
    return await unchanged_task(conn, batch_id, target, f)


async def _add_file(
    conn: asyncpg.Connection,
    queue: IngestQueue,
    batch_id: UUID,
    f: IncomingFile,
    collection_id: UUID,
    request_id: str | None,
) -> TaskRef:
    sha = f.sha256
    while True:
        doc_id = await insert_new_document(conn, f, sha, "queued", collection_id)
        if doc_id is not None:
            return await _queue_task(conn, queue, batch_id, doc_id, f.filename, request_id)
        # Its row: held by a final write for as long as a big file's chunks take (locks.py).
        async with locks.document_rows(conn, f"the document holding {f.filename!r}'s bytes"):
            existing = await conn.fetchrow(
                "SELECT id, status, chunk_count, filename FROM documents"
                " WHERE collection_id = $1 AND sha256 = $2 FOR UPDATE",
                collection_id,
                sha,
            )
        if existing is not None:
            break
        # The conflicting document was deleted in between: try the insert again.
    doc_id = existing["id"]
    # A failed document is queued again (once: this transaction sees it 'queued' afterwards), as this
    # upload names it: the same bytes that failed as `notes.json` may be meant as `notes.txt`.
    if existing["status"] == "failed":
        # Unless a new file for it is queued (a replacement leaves the document failed until its swap):
        # a second task would process the old bytes beside it, and whichever wrote last would win, even
        # the old bytes' chunks under the new file. Tasks are queued for a document only under its row
        # lock, held here, so none can appear after this read.
        pending = await conn.fetchrow(
            "SELECT id, filename FROM job_tasks WHERE document_id = $1 AND status IN ('queued', 'processing')"
            " ORDER BY created_at LIMIT 1",
            doc_id,
        )
        if pending is not None:
            return await _refused_task(conn, batch_id, doc_id, existing["filename"], pending, f, request_id)
        await conn.execute(
            """
            UPDATE documents SET status = 'queued', error = NULL, filename = $2, file_type = $3,
                   content_type = $4, metadata = coalesce($5, metadata), updated_at = now()
            WHERE id = $1
            """,
            doc_id,
            f.filename,
            f.file_type,
            f.content_type,
            f.metadata,
        )
        return await _queue_task(conn, queue, batch_id, doc_id, f.filename, request_id)
    # finished_at: the clock, not the transaction's start, which may be before the task this duplicate
    # stands for was committed (batch_status's DUPLICATE_SOURCE).
    task_id = await conn.fetchval(
        """
        INSERT INTO job_tasks (batch_id, document_id, filename, status, total_chunks,
                               completed_chunks, finished_at, request_id)
        VALUES ($1, $2, $3, 'duplicate', $4, $4, clock_timestamp(), $5) RETURNING id
        """,
        batch_id,
        doc_id,
        f.filename,
        existing["chunk_count"],
        request_id,
    )
    return TaskRef(task_id=task_id, filename=f.filename, status="duplicate", document_id=doc_id)


async def _refused_task(
    conn: asyncpg.Connection,
    batch_id: UUID,
    doc_id: UUID,
    doc_filename: str,
    pending: asyncpg.Record,
    f: IncomingFile,
    request_id: str | None,
) -> TaskRef:
    """The bytes of a failed document a new file of which is queued: not queued again, a task failed at
    once saying so. Not a `duplicate`: once that file is swapped in, the document no longer holds these
    bytes, and a duplicate would then read as stored. Whatever that task's outcome, uploading them again
    afterwards processes them (a new document, or this one queued again)."""
    reason = (
        f"These bytes are those of {doc_filename!r} (document {doc_id}), which failed, and a new file for "
        f"that document, {pending['filename']!r} (task {pending['id']}), is waiting to replace them: they "
        f"were not processed again. Once that task is finished, upload this file again to process it as "
        f"{f.filename!r}."
    )
    # No message: never queued. finished_at: the clock, as a duplicate's.
    task_id = await conn.fetchval(
        """
        INSERT INTO job_tasks (batch_id, document_id, filename, status, error, finished_at, request_id)
        VALUES ($1, $2, $3, 'failed', $4, clock_timestamp(), $5) RETURNING id
        """,
        batch_id,
        doc_id,
        f.filename,
        reason,
        request_id,
    )
    return TaskRef(task_id=task_id, filename=f.filename, status="failed", document_id=doc_id, detail=reason)


async def _queue_task(
    conn: asyncpg.Connection,
    queue: IngestQueue,
    batch_id: UUID,
    doc_id: UUID,
    filename: str,
    request_id: str | None,
) -> TaskRef:
    # The id is chosen here so the message can name it and the task row is written once, with msg_id.
    task_id = uuid4()
    msg_id = await queue.send(task_message(task_id, doc_id, request_id), conn=conn)
    await conn.execute(
        "INSERT INTO job_tasks (id, batch_id, document_id, filename, msg_id, request_id)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        task_id,
        batch_id,
        doc_id,
        filename,
        msg_id,
        request_id,
    )
    return TaskRef(task_id=task_id, filename=filename, status="queued", document_id=doc_id)


async def batch_status(conn: Executor, batch_id: UUID) -> BatchStatus:
    async with connection(conn) as c:
        created_at = await c.fetchval("SELECT created_at FROM job_batches WHERE id = $1", batch_id)
        if created_at is None:
            # Also a batch retention removed (ingestion/retention.py: RAG_TASK_RETENTION_DAYS after its end).
            raise NotFoundError(f"no upload batch {batch_id} (finished batches are removed after a while)")
        rows = await c.fetch(
            f"""
            SELECT t.id AS task_id, t.filename, t.status, t.total_chunks, t.completed_chunks, t.attempts,
                   t.failures, t.error, t.document_id, t.replaces_version, t.started_at, t.finished_at,
                   t.request_id, s.status AS source_status, s.filename AS source_filename,
                   s.error AS source_error
            FROM job_tasks t LEFT JOIN LATERAL ({DUPLICATE_SOURCE}) s ON t.status = 'duplicate'
            WHERE t.batch_id = $1 ORDER BY t.created_at, t.id
            """,
            batch_id,
        )
    tasks = [_reported(dict(r)) for r in rows]
    counts = dict.fromkeys(TASK_STATUSES, 0)
    for t in tasks:
        counts[t.status] += 1
    return BatchStatus(
        batch_id=batch_id,
        status=_batch_state(counts, len(tasks)),
        done=counts["queued"] + counts["processing"] == 0,
        created_at=created_at,
        total=len(tasks),
        counts=counts,
        total_chunks=sum(t.total_chunks for t in tasks),
        completed_chunks=sum(t.completed_chunks for t in tasks),
        tasks=tasks,
    )


# The task a duplicate `t` stands for: its document's task that was current when `t` was recorded (the
# latest one created by then; `t.finished_at` is the clock at its insert, so a task committed while the
# upload waited for it counts). A queued, processing or failed replacement is left out: until its swap
# the document keeps the bytes `t` matched; a completed one brought those bytes. A task never queued
# (no message: refused at upload, `_refused_task`) processed nothing and is left out too. Following this
# task, not the document's current status, a duplicate's view stops changing once the task is over:
# uploading a failed document again (a new task) must not take a finished batch back to "processing".
# Retention (ingestion/retention.py) keeps every task this may name for a kept duplicate: keep in step.
DUPLICATE_SOURCE = """
    SELECT o.id, o.status, o.filename, o.error FROM job_tasks o
    WHERE o.document_id = t.document_id AND o.status <> 'duplicate' AND o.msg_id IS NOT NULL
      AND (o.replaces_version IS NULL OR o.status = 'completed') AND o.created_at <= t.finished_at
    ORDER BY o.created_at DESC, o.id DESC LIMIT 1
"""


# as_reported's status in SQL, for a list filtered on it (`s`: DUPLICATE_SOURCE): keep the two in step.
REPORTED_STATUS = "CASE WHEN s.status IN ('queued', 'processing', 'failed') THEN s.status ELSE t.status END"


def _reported(row: dict[str, object]) -> BatchTask:
    return BatchTask.model_validate(as_reported(row))


def as_reported(row: dict[str, object]) -> dict[str, object]:
    """A task's row as its batch and the task list show it, from its DUPLICATE_SOURCE columns (popped:
    source_status, source_filename, source_error). A duplicate of a document still queued or processing
    (by the task current when the duplicate was uploaded) is as unfinished as that task (its batch was
    "completed" at once); if that task then fails, so did this file (its bytes were never read under
    this file's name): failed, saying why and that uploading it again tries it under this name. A
    document no task of which came first (imported, or written without the queue) leaves the duplicate
    as it is."""
    source_status = row.pop("source_status")
    source_filename = row.pop("source_filename")
    source_error = row.pop("source_error")
    if source_status in ("queued", "processing"):
        row["status"] = source_status
    elif source_status == "failed":
        row["status"] = "failed"
        row["error"] = _failed_duplicate_error(str(source_filename), source_error, str(row["filename"]))
    return row


def _failed_duplicate_error(source_filename: str, source_error: object, filename: str) -> str:
    return (
        f"The same file was uploaded as {source_filename!r}, which failed: {source_error} "
        f"Upload this file again to process it as {filename!r}."
    )


# The duplicates of these documents ($1) that read failed by the task they stand for.
_FAILED_DUPLICATES = f"""
    FROM job_tasks t JOIN LATERAL ({DUPLICATE_SOURCE}) s ON true
    WHERE t.document_id = ANY($1::uuid[]) AND t.status = 'duplicate' AND s.status = 'failed'
"""


async def any_duplicate_of_failed_tasks(conn: asyncpg.Connection, document_ids: Sequence[UUID]) -> bool:
    """A duplicate `fail_duplicates_of_failed_tasks` would write failed: one committed after it ran (an
    upload of the same bytes holds the document's row while it writes its duplicate, and a delete waits
    for that row after failing the ones it saw)."""
    return bool(
        await conn.fetchval(
            f"SELECT EXISTS (SELECT {_FAILED_DUPLICATES})",
            list(document_ids),
            timeout=LONG_STATEMENT_TIMEOUT_S,
        )
    )


async def fail_duplicates_of_failed_tasks(conn: asyncpg.Connection, document_ids: Sequence[UUID]) -> None:
    """Before these documents are deleted (their task rows locked): each duplicate of them that reads
    failed by the task it stands for (`_reported`), also one that failed just before, deleted before
    processing finished, is written failed as it reads. Deleting the document sets the duplicate's
    `document_id` NULL (ON DELETE SET NULL), which loses that task: it read "duplicate", its batch
    "completed", for a file nothing of which was ever stored."""
    rows = await conn.fetch(
        "SELECT t.id, t.filename, s.filename AS source_filename, s.error AS source_error"
        f" {_FAILED_DUPLICATES} ORDER BY t.id",
        list(document_ids),
        timeout=LONG_STATEMENT_TIMEOUT_S,  # a delete of many documents
    )
    await conn.executemany(
        "UPDATE job_tasks SET status = 'failed', error = $2, updated_at = now() WHERE id = $1",
        [
            (r["id"], _failed_duplicate_error(r["source_filename"], r["source_error"], r["filename"]))
            for r in rows
        ],
    )


def _batch_state(counts: dict[TaskStatus, int], total: int) -> BatchState:
    if counts["queued"] + counts["processing"]:
        return "queued" if counts["queued"] == total else "processing"
    if counts["failed"] == total and total:
        return "failed"
    return "completed_with_errors" if counts["failed"] else "completed"
