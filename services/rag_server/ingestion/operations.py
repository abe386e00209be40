"""Pipeline administration: list tasks (and the stuck ones), retry failed tasks, cancel queued ones.

What operators need when documents sit in `queued` or `processing` with no visible reason. Every change
keeps the ingestion invariants: a retry resets the task and its document, sends the new pgmq message and
takes the old one out of the archive in ONE transaction (the bytes are still in `document_files`: nothing
is uploaded again); a cancel fails the task and its document and archives its message in ONE transaction.
Locks: task rows (by id), then their documents' rows, the worker's order (ingestion/tasks.py). Those of a
batch, a collection or all at once: operations_bulk.py.

A replacement's task (ingestion/replacement.py) is retried and cancelled alone: its document keeps its
current version, status, chunks and error until the swap. Its retry needs that version to be the one it
replaces, and its bytes are on the task row. A task refused at upload (never queued: no message) holds
no bytes to retry: its file is uploaded again (`_refused_at_upload`).

A retry starts the task afresh: `failures` 0 (the document gets RAG_WORKER_MAX_ATTEMPTS again) and
`attempts` 0 (attempts are the deliveries of the task's message, and the new message has none yet).
A retry queues the task under the retry request's id (X-Request-Id, job_tasks.request_id and the new
message): the worker's lines for the new delivery carry it, and the retry logs one line naming the
request that queued the task before (both ids and the task id are on the lines: the link).
A cancel is a failure with the reason "Cancelled by <key name>": no new task status (the batch states and
the web app's badges stay as they are), and a cancelled task can be retried like any failed one. A task
being processed cannot be cancelled (its worker would finish it anyway): delete the document instead.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import asyncpg

from rag_server.collections.store import get_collection
from rag_server.errors import ConflictError, NotFoundError
from rag_server.infra.database import Executor, connection, transaction
from rag_server.infra.log_context import current_request_id
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion.batches import DUPLICATE_SOURCE, REPORTED_STATUS, as_reported
from rag_server.ingestion.models import TaskStatus, task_message
from rag_server.ingestion.operations_models import (
    STUCK_DEAD_WORKER,
    STUCK_NO_MESSAGE,
    AdminTask,
    AdminTaskList,
)
from rag_server.ingestion.recovery import worker_alive_sql

logger = logging.getLogger(__name__)


def _tasks_sql(queue: IngestQueue) -> str:
    """Tasks with their collection and why they are stuck; $1 status, $2 collection id, $3 batch id,
    $4 task id (each NULL: any). A duplicate's status is the one its batch shows (batches.as_reported):
    one whose original failed is listed, and filtered, as failed. The source is looked up for duplicates
    only (the WHERE on `t` alone is a one-time filter of the lateral query)."""
    return f"""
    SELECT t.id AS task_id, t.batch_id, b.collection_id, c.name AS collection, t.document_id, t.filename,
           t.status, t.attempts, t.failures, t.error, t.worker_id, t.msg_id, t.created_at, t.updated_at,
           t.started_at, t.finished_at, t.request_id,
           s.status AS source_status, s.filename AS source_filename, s.error AS source_error,
           CASE WHEN t.status = 'processing' AND t.worker_id IS NOT NULL
                     AND NOT {worker_alive_sql("t.worker_id")} THEN 'dead_worker'
                WHEN t.status = 'queued'
                     AND NOT EXISTS (SELECT 1 FROM {queue.table} q WHERE q.msg_id = t.msg_id)
                     THEN 'no_message'
           END AS stuck_kind
    FROM job_tasks t JOIN job_batches b ON b.id = t.batch_id JOIN collections c ON c.id = b.collection_id
    LEFT JOIN LATERAL (SELECT * FROM ({DUPLICATE_SOURCE}) d WHERE t.status = 'duplicate') s ON true
    WHERE ($1::text IS NULL OR {REPORTED_STATUS} = $1) AND ($2::uuid IS NULL OR b.collection_id = $2)
      AND ($3::uuid IS NULL OR t.batch_id = $3) AND ($4::uuid IS NULL OR t.id = $4)
    """


def _admin_task(row: asyncpg.Record) -> AdminTask:
    values = dict(row)
    kind = values.pop("stuck_kind")
    values.pop("total", None)
    stuck = {
        "dead_worker": STUCK_DEAD_WORKER.format(worker_id=values["worker_id"]),
        "no_message": STUCK_NO_MESSAGE,
    }.get(kind)
    return AdminTask.model_validate(as_reported(values) | {"stuck": stuck})


async def list_tasks(
    conn: Executor,
    queue: IngestQueue,
    *,
    status: TaskStatus | None = None,
    collection: str | None = None,
    batch_id: UUID | None = None,
    stuck: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> AdminTaskList:
    """Newest first. `stuck`: only tasks that do not move (see AdminTask.stuck). An unknown collection
    or batch is a NotFoundError; the tasks are those of the collections the caller may read (row-level
    security)."""
    async with connection(conn) as c:
        collection_id = (await get_collection(c, collection)).id if collection is not None else None
        if batch_id is not None and not await c.fetchval(
            "SELECT true FROM job_batches WHERE id = $1", batch_id
        ):
            raise NotFoundError(f"no upload batch {batch_id} (finished batches are removed after a while)")
        filtered = f"SELECT * FROM ({_tasks_sql(queue)}) x WHERE (NOT $5::boolean OR stuck_kind IS NOT NULL)"
        args: list[Any] = [status, collection_id, batch_id, None, stuck]
        total = await c.fetchval(f"SELECT count(*) FROM ({filtered}) y", *args)
        retryable = await c.fetchval(
            f"SELECT count(DISTINCT t.document_id) {_RETRYABLE.format(filtered)}", *args
        )
        rows = await c.fetch(
            f"{filtered} ORDER BY created_at DESC, task_id LIMIT $6 OFFSET $7", *args, limit, offset
        )
    items = [_admin_task(r) for r in rows]
    return AdminTaskList(items=items, total=int(total), retryable=int(retryable), limit=limit, offset=offset)


# The failed tasks of a listing ({} its query) that retry_locked would queue again now: keep the two in
# step (a listing's count of them is what the web app's "Retry all failed" asks about). One per document:
# once one of its tasks is queued again, the document's other failed tasks are refused ("already queued
# again"); a duplicate listed failed is never retried itself.
_RETRYABLE = """
    FROM ({}) x JOIN job_tasks t ON t.id = x.task_id JOIN documents d ON d.id = t.document_id
    WHERE t.status = 'failed' AND t.msg_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM job_tasks o WHERE o.document_id = d.id AND o.id <> t.id
                      AND o.status IN ('queued', 'processing'))
      AND CASE WHEN t.replaces_version IS NULL
               THEN d.status <> 'ready' AND EXISTS (SELECT 1 FROM document_files f WHERE f.document_id = d.id)
               ELSE d.version = t.replaces_version AND t.new_content IS NOT NULL END
"""


async def get_task(conn: Executor, queue: IngestQueue, task_id: UUID) -> AdminTask:
    row = await conn.fetchrow(_tasks_sql(queue), None, None, None, task_id)
    if row is None:
        raise NotFoundError(f"no task {task_id}")
    return _admin_task(row)


async def _message_exists(c: asyncpg.Connection, queue: IngestQueue, msg_id: int | None) -> bool:
    if msg_id is None:
        return False
    return bool(await c.fetchval(f"SELECT true FROM {queue.table} WHERE msg_id = $1", msg_id))


async def lock_tasks(
    c: asyncpg.Connection, where: str, *args: Any, limit: int | None = None
) -> list[asyncpg.Record]:
    """The tasks `where` names, locked in id order (the first `limit` of them)."""
    return await c.fetch(
        f"""
        SELECT t.id, t.status, t.document_id, t.filename, t.msg_id, t.worker_id, t.request_id,
               t.replaces_version, t.new_content IS NOT NULL AS has_new_content
        FROM job_tasks t JOIN job_batches b ON b.id = t.batch_id
        WHERE {where} ORDER BY t.id {f"LIMIT {int(limit)}" if limit is not None else ""} FOR UPDATE OF t
        """,
        *args,
    )


async def retry_locked(c: asyncpg.Connection, queue: IngestQueue, task: asyncpg.Record) -> str | None:
    """Queue the (locked) task again with a new message; None, or the sentence saying why not."""
    task_id, status = task["id"], task["status"]
    if status == "duplicate":
        return await duplicate_refusal(c, task, "retry")
    orphan = status == "queued" and not await _message_exists(c, queue, task["msg_id"])
    if status != "failed" and not orphan:
        return f"task {task_id} is {status}, not failed: only a failed task can be retried"
    if status == "failed" and task["msg_id"] is None:
        return _refused_at_upload(task)
    if task["document_id"] is None:
        return f"the document of task {task_id} was deleted: upload the file again"
    doc = await c.fetchrow(
        """
        SELECT d.id, d.status, d.filename, d.version,
               EXISTS (SELECT 1 FROM document_files f WHERE f.document_id = d.id) AS has_bytes,
               (SELECT o.id FROM job_tasks o WHERE o.document_id = d.id AND o.id <> $2
                  AND o.status IN ('queued', 'processing') LIMIT 1) AS other_task
        FROM documents d WHERE d.id = $1 FOR UPDATE
        """,
        task["document_id"],
        task_id,
    )
    if doc is None:
        return f"the document of task {task_id} was deleted: upload the file again"
    if doc["other_task"] is not None:
        return f"document {doc['filename']!r} is already queued again, by task {doc['other_task']}"
    replacement = task["replaces_version"] is not None
    if replacement:
        refused = _replacement_refusal(task, doc)
        if refused is not None:
            return refused
    elif doc["status"] == "ready":
        return f"document {doc['filename']!r} is ready (a later upload processed it): nothing to retry"
    elif not doc["has_bytes"]:
        return f"the stored file of {doc['filename']!r} is missing from the database: upload it again"
    if task["msg_id"] is not None:
        # One message per task, never two; and the archive lists dead messages, which this one no
        # longer is once its task is queued again.
        await queue.delete(int(task["msg_id"]), conn=c)
        await queue.delete_archived(int(task["msg_id"]), conn=c)
    # The retry's own request id replaces the upload's: the new delivery's log lines carry it, and the
    # line below links the two (the older lines keep the task id).
    request_id = current_request_id()
    msg_id = await queue.send(task_message(task_id, doc["id"], request_id), conn=c)
    await c.execute(
        """
        UPDATE job_tasks SET status = 'queued', attempts = 0, failures = 0, error = NULL, worker_id = NULL,
               msg_id = $2, total_chunks = 0, completed_chunks = 0, started_at = NULL, finished_at = NULL,
               request_id = $3, updated_at = now()
        WHERE id = $1
        """,
        task_id,
        msg_id,
        request_id,
    )
    logger.info("task %s queued again (queued before by request %s)", task_id, task["request_id"] or "-")
    if not replacement:
        await c.execute(
            "UPDATE documents SET status = 'queued', error = NULL, chunk_count = 0, updated_at = now()"
            " WHERE id = $1",
            doc["id"],
        )
    return None


async def duplicate_refusal(c: asyncpg.Connection, task: asyncpg.Record, action: str) -> str:
    """A duplicate is listed as the task it follows reads (batches.as_reported), and is never retried or
    cancelled itself: that task, named, is the one to act on when it can be (failed, queued)."""
    source = await c.fetchrow(
        f"SELECT s.id, s.status FROM job_tasks t JOIN LATERAL ({DUPLICATE_SOURCE}) s ON true WHERE t.id = $1",
        task["id"],
    )
    head = f"task {task['id']} is a duplicate of an earlier upload of the same bytes"
    if source is None:  # a document imported or written without the queue
        return f"{head}: nothing to {action}"
    follows = f"{head}; it follows task {source['id']}, which is {source['status']}"
    if source["status"] != {"retry": "failed", "cancel": "queued"}[action]:
        return f"{follows}: nothing to {action}"
    upload = f", or upload {task['filename']!r} again" if action == "retry" else ""
    return f"{follows}: {action} task {source['id']}{upload}"


def _refused_at_upload(task: asyncpg.Record) -> str:
    """A failed task that never had a message was refused at upload (batches._refused_task): the bytes
    were a failed document's while a new file of it waited. Not retried, as it holds nothing to retry:
    its bytes were never stored as its own, only as the document's, which may hold a new version since
    (a retry would process that in this task's name); and while it still holds them, the upload's name,
    type and metadata were not kept, so the document would be processed as it failed before (a .pptx
    again, not the .txt uploaded). Uploading the file again does what that upload asked, as its
    refusal already says; telling when a retry would be the same is not worth a second path."""
    name = task["filename"]
    return (
        f"task {task['id']} was refused when {name!r} was uploaded and holds no file of its own: upload"
        f" {name!r} again to process it"
    )


def _replacement_refusal(task: asyncpg.Record, doc: asyncpg.Record) -> str | None:
    """Why a failed replacement cannot be queued again, or None. Its document's status does not matter:
    until the swap the document keeps its current version, ready or failed, and the retry leaves it so
    (replacement.py). But a version swapped in since is newer than these bytes."""
    if doc["version"] != task["replaces_version"]:
        return (
            f"task {task['id']} replaces version {task['replaces_version']} of {doc['filename']!r}, which is"
            f" at version {doc['version']} now: upload the file again to replace it"
        )
    if not task["has_new_content"]:
        return f"the new file of task {task['id']} is missing from the database: upload it again"
    return None


def cancel_reason(by: str | None) -> str:
    return f"Cancelled by {by or 'an operator'}."


async def cancel_locked(
    c: asyncpg.Connection, queue: IngestQueue, task: asyncpg.Record, reason: str
) -> str | None:
    """Fail the (locked) queued task and its document, archive its message; None, or why not."""
    task_id, status = task["id"], task["status"]
    if status == "duplicate":
        return await duplicate_refusal(c, task, "cancel")
    if status == "processing":
        return (
            f"task {task_id} is being processed (worker {task['worker_id']}): only a queued task can be "
            "cancelled; delete its document to drop the result"
        )
    if status != "queued":
        return f"task {task_id} is {status}: only a queued task can be cancelled"
    await c.execute(
        """
        UPDATE job_tasks SET status = 'failed', error = $2, worker_id = NULL, completed_chunks = 0,
               finished_at = clock_timestamp(), updated_at = now()
        WHERE id = $1
        """,
        task_id,
        reason,
    )
    # A replacement's document still holds its current version: the cancel is the task's alone.
    if task["document_id"] is not None and task["replaces_version"] is None:
        await c.execute(
            "UPDATE documents SET status = 'failed', error = $2, chunk_count = 0, updated_at = now()"
            " WHERE id = $1 AND status <> 'ready'",
            task["document_id"],
            reason,
        )
    if task["msg_id"] is not None:
        await queue.archive(int(task["msg_id"]), conn=c)
    return None


async def retry_task(conn: Executor, queue: IngestQueue, task_id: UUID) -> AdminTask:
    """Queue a failed task again (or a queued one whose message is missing): ONE transaction.
    NotFoundError for an unknown task; ConflictError saying why when it cannot be retried."""
    async with transaction(conn) as c:
        tasks = await lock_tasks(c, "t.id = $1", task_id)
        if not tasks:
            raise NotFoundError(f"no task {task_id}")
        refused = await retry_locked(c, queue, tasks[0])
        if refused is not None:
            raise ConflictError(refused)
    return await get_task(conn, queue, task_id)


async def cancel_task(conn: Executor, queue: IngestQueue, task_id: UUID, by: str | None) -> AdminTask:
    """Cancel a queued task (failed, "Cancelled by <by>"): ONE transaction. NotFoundError, ConflictError."""
    async with transaction(conn) as c:
        tasks = await lock_tasks(c, "t.id = $1", task_id)
        if not tasks:
            raise NotFoundError(f"no task {task_id}")
        refused = await cancel_locked(c, queue, tasks[0], cancel_reason(by))
        if refused is not None:
            raise ConflictError(refused)
    return await get_task(conn, queue, task_id)
