"""The worker's task life cycle: start, progress, retry, release, fail, complete.

A task's chunks + task completed + message deleted are ONE transaction (`complete_task`); failing a task
archives its message in the same transaction (`fail_task`). Nothing is written to `chunks` earlier, so a
worker killed at any point leaves nothing partial.

`attempts` counts deliveries (pgmq read_ct), `failures` the errors the document caused; `worker_id` is
the worker processing it. A worker acts on its task (heartbeat, retry, release, complete) only while
the row still names it: a dead worker's task re-queued by another (ingestion/recovery.py) is no longer
its own, and the task row lock (taken first, then the document's) orders the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import asyncpg
import numpy as np

from rag_server.infra.database import Executor, transaction
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.chunks import DELETE_LOCK_CLASS, write_chunks
from rag_server.ingestion.parsing import file_type_for
from rag_server.ingestion.replacement import lock_new_name, swap_in


@dataclass(frozen=True)
class TaskWork:
    task_id: UUID
    document_id: UUID
    filename: str
    file_type: str
    content: bytes
    error: str | None  # the last failure, kept for when attempts run out
    title: str | None  # documents.metadata.title, the chunk context when set
    failures: int = 0  # errors this document caused so far (not deliveries lost to dead workers)
    worker_id: int | None = None  # the worker that started it (None: no liveness tracking)
    # A replacement (ingestion/replacement.py): the version it supersedes; `content` is then the new
    # bytes. `new_metadata` as queued gives the chunks their title; the swap applies the task row's
    # (read again under its lock: a PATCH meanwhile edits it).
    replaces_version: int | None = None
    new_metadata: dict[str, Any] | None = None


MISSING_FILE_ERROR = "The stored file is missing from the database; upload it again."


async def start_task(
    conn: Executor, task_id: UUID, attempts: int, worker_id: int | None = None, msg_id: int | None = None
) -> TaskWork | None:
    """Mark the task processing by `worker_id` (delivery number `attempts`) and load its document bytes;
    None if there is nothing to do any more (task finished, failed, or its document deleted)."""
    async with transaction(conn) as c:
        row = await c.fetchrow(
            """
            UPDATE job_tasks SET status = 'processing', attempts = $2, worker_id = $3, total_chunks = 0,
                   completed_chunks = 0, msg_id = coalesce($4, msg_id), updated_at = now(),
                   started_at = coalesce(started_at, now())
            WHERE id = $1 AND status IN ('queued', 'processing') AND document_id IS NOT NULL
            RETURNING document_id, filename, error, failures, replaces_version, new_metadata
            """,
            task_id,
            attempts,
            worker_id,
            msg_id,
        )
        if row is None:
            return None
        if row["replaces_version"] is not None:
            doc = await _replacement_source(
                c, task_id, row["document_id"], row["filename"], row["new_metadata"]
            )
        else:
            doc = await c.fetchrow(
                """
                UPDATE documents d SET status = 'processing', updated_at = now()
                FROM document_files f WHERE d.id = $1 AND f.document_id = d.id
                RETURNING d.file_type, d.metadata ->> 'title' AS title, f.content
                """,
                row["document_id"],
            )
        if doc is None or doc["content"] is None:
            await _fail_missing_file(c, task_id)
            return None
    return TaskWork(
        task_id,
        row["document_id"],
        row["filename"],
        doc["file_type"],
        bytes(doc["content"]),
        row["error"],
        doc["title"],
        row["failures"],
        worker_id,
        replaces_version=row["replaces_version"],
        new_metadata=row["new_metadata"],
    )


async def _fail_missing_file(c: asyncpg.Connection, task_id: UUID) -> None:
    """The document row exists but its bytes do not (removed by hand, restored from a partial backup):
    fail loudly instead of leaving the task 'processing' forever. A replacement's missing bytes are its
    task's: the document keeps its current version (as `fail_task`)."""
    await c.execute(
        """
        WITH t AS (
            UPDATE job_tasks SET status = 'failed', error = $2, updated_at = now(),
                   finished_at = clock_timestamp()
            WHERE id = $1 RETURNING document_id, replaces_version
        )
        UPDATE documents SET status = 'failed', error = $2, updated_at = now()
        WHERE id = (SELECT document_id FROM t WHERE replaces_version IS NULL)
        """,
        task_id,
        MISSING_FILE_ERROR,
    )


async def _replacement_source(
    c: asyncpg.Connection, task_id: UUID, document_id: UUID, filename: str, new_metadata: Any
) -> asyncpg.Record | None:
    """A replacement's bytes (on its task row), type (by its name) and title. The document is left as
    it is: its current version stays live until the swap."""
    file_type = file_type_for(filename)
    return await c.fetchrow(
        """
        SELECT $3::text AS file_type, coalesce($4::jsonb, d.metadata) ->> 'title' AS title,
               t.new_content AS content
        FROM documents d JOIN job_tasks t ON t.id = $2 WHERE d.id = $1
        """,
        document_id,
        task_id,
        file_type.name if file_type else "txt",
        new_metadata,
    )


# The task is still this worker's: not finished, not re-queued by recovery, not taken by another.
OWNED = "id = $1 AND status = 'processing' AND worker_id IS NOT DISTINCT FROM $2"


async def set_task_total(conn: Executor, task_id: UUID, total_chunks: int, worker_id: int | None) -> bool:
    """This attempt's chunk count, once its file is chunked; False once the task is no longer this
    worker's (its counts are then another attempt's, or none)."""
    owned = await conn.fetchval(
        f"UPDATE job_tasks SET total_chunks = $3, completed_chunks = 0, updated_at = now() WHERE {OWNED}"
        " RETURNING true",
        task_id,
        worker_id,
        total_chunks,
    )
    return bool(owned)


class TaskDropped(Exception):
    """The task stopped being this worker's while it worked on it (its document deleted, the task
    cancelled, re-queued or taken over): its final write would be dropped, so the work stops."""


async def set_task_progress(
    conn: Executor, task_id: UUID, completed_chunks: int, worker_id: int | None
) -> bool:
    """Record how many chunks are embedded; False once the task is no longer this worker's."""
    owned = await conn.fetchval(
        f"UPDATE job_tasks SET completed_chunks = $3, updated_at = now() WHERE {OWNED} RETURNING true",
        task_id,
        worker_id,
        completed_chunks,
    )
    return bool(owned)


async def drop_stale_message(conn: Executor, queue: IngestQueue, task_id: UUID, msg_id: int) -> None:
    """After TaskDropped, as complete_task would have: the message goes when the task has ended (failed,
    cancelled, its document deleted); a task re-queued or taken over keeps it (that delivery's)."""
    async with transaction(conn) as c:
        status = await c.fetchval("SELECT status FROM job_tasks WHERE id = $1 FOR UPDATE", task_id)
        if status not in ("processing", "queued"):
            await queue.delete(msg_id, conn=c)


async def end_after_giving_way(conn: Executor, queue: IngestQueue, work: TaskWork, msg_id: int) -> bool:
    """After the final write gave way to a delete (DeleteWaitingError, rolled back): waits for that
    delete to end (its lock on the document, shared), then as drop_stale_message: True, the message gone,
    when the task has ended (the delete committed); False when the delete rolled back (or the lock was
    another document's, a hash collision): the task is still there to retry, its message kept."""
    async with transaction(conn) as c:
        await c.execute(
            "SELECT pg_advisory_xact_lock_shared($1, hashtext($2::uuid::text))",
            DELETE_LOCK_CLASS,
            work.document_id,
        )
        status = await c.fetchval("SELECT status FROM job_tasks WHERE id = $1 FOR UPDATE", work.task_id)
        if status in ("processing", "queued"):
            return False
        await queue.delete(msg_id, conn=c)
    return True


async def record_retry(
    conn: Executor, task_id: UUID, worker_id: int | None, reason: str, count_failure: bool
) -> int | None:
    """A failure worth retrying: the task waits for redelivery, the reason is shown meanwhile.
    `count_failure`: the document caused it (counts towards worker_max_attempts). Returns the task's
    failures, or None when the task is no longer this worker's."""
    failures: int | None = await conn.fetchval(
        f"""
        UPDATE job_tasks SET status = 'queued', error = $3, total_chunks = 0, completed_chunks = 0,
               worker_id = NULL, failures = failures + $4, updated_at = now()
        WHERE {OWNED}
        RETURNING failures
        """,
        task_id,
        worker_id,
        reason,
        int(count_failure),
    )
    return failures


async def keep_invisible(
    conn: Executor,
    queue: IngestQueue,
    task_id: UUID,
    worker_id: int | None,
    msg_id: int,
    vt: int,
    attempt: int,
) -> Literal["owned", "ended", "lost"]:
    """Extend the message's visibility while the task is this worker's ('owned'); else nothing: 'ended'
    when this delivery (`msg_id`, `attempt`) completed or failed it (a heartbeat racing its own final
    write; `msg_id` too: an operator's retry sends a new message, its first delivery attempt 1 again),
    else 'lost' (re-queued by recovery, taken by another, retried, cancelled, deleted)."""
    async with transaction(conn) as c:
        row = await c.fetchrow(
            "SELECT status, worker_id, attempts, msg_id FROM job_tasks WHERE id = $1 FOR NO KEY UPDATE",
            task_id,
        )
        if row is not None and row["status"] == "processing" and row["worker_id"] == worker_id:
            await queue.extend(msg_id, vt, conn=c)
            return "owned"
    if row is None or row["status"] not in ("completed", "failed"):
        return "lost"
    return "ended" if (row["attempts"], row["msg_id"]) == (attempt, msg_id) else "lost"


async def release_task(
    conn: Executor, queue: IngestQueue, task_id: UUID, worker_id: int | None, msg_id: int
) -> bool:
    """A worker shutting down gives the task back unfinished (nothing was written) and makes its
    message visible now: one transaction, only while the task is still its own (or still `queued`:
    stopped before `start_task` committed, the message it read is still its own)."""
    async with transaction(conn) as c:
        released = await c.fetchval(
            f"""
            UPDATE job_tasks SET status = 'queued', total_chunks = 0, completed_chunks = 0, worker_id = NULL,
                   updated_at = now()
            WHERE ({OWNED}) OR (id = $1 AND status = 'queued')
            RETURNING true
            """,
            task_id,
            worker_id,
        )
        if released:
            await queue.extend(msg_id, 0, conn=c)
    return bool(released)


async def fail_task(
    conn: Executor,
    queue: IngestQueue,
    task_id: UUID,
    worker_id: int | None,
    document_id: UUID | None,
    reason: str,
    msg_id: int | None,
    count_failure: bool = False,
) -> bool:
    """Fail the task and its document with a readable reason and archive its message: one transaction.
    No chunks are ever written before success, so nothing partial remains. `count_failure`: the document
    caused this failure itself (not a give-up decision on earlier ones). False, and nothing written, when
    the task is no longer this worker's: re-queued after it lost its liveness lock, another worker's
    attempt, and its message, are not this one's to end.

    A replacement's failure is its task's alone: the document still holds its current version, whose
    status, chunk count and error (a failed document's, about its own bytes) stay as they are."""
    async with transaction(conn) as c:
        failed = await c.fetchrow(
            f"""
            UPDATE job_tasks SET status = 'failed', error = $3, finished_at = clock_timestamp(),
                   updated_at = now(), failures = failures + $4
            WHERE {OWNED}
            RETURNING replaces_version
            """,
            task_id,
            worker_id,
            reason,
            int(count_failure),
        )
        if failed is None:
            return False
        if document_id is not None and failed["replaces_version"] is None:
            await c.execute(
                """
                UPDATE documents SET status = 'failed', error = $2, chunk_count = 0, updated_at = now()
                WHERE id = $1 AND status <> 'ready'
                """,
                document_id,
                reason,
            )
        if msg_id is not None:
            await queue.archive(msg_id, conn=c)
    return True


async def complete_task(
    conn: Executor,
    queue: IngestQueue,
    work: TaskWork,
    msg_id: int,
    chunks: Sequence[Chunk],
    vectors: np.ndarray | None,
    generations: Mapping[int, np.ndarray] | None = None,
) -> bool:
    """Chunks (+ their vectors of later embedding generations: chunks.write_chunks) + document ready +
    task completed + message deleted, in ONE transaction.

    A replacement (`work.replaces_version`) first swaps its bytes, name and metadata onto the document
    and bumps its version (replacement.swap_in); `write_chunks` then deletes the old chunks: until this
    commits, search finds the old version. Locks, in this order: a new name's (replacement.lock_new_name),
    task row, document row, the queue message's row, then (write_chunks) the generations lock and
    `bm25_stats`.

    Returns False when the task was cancelled meanwhile (document deleted): then only the message goes;
    or when it is no longer this worker's (re-queued after this worker lost its liveness lock, or taken
    by another): then the message is left to whoever has it now.
    """
    async with transaction(conn) as c:
        swap = work.replaces_version is not None
        if swap:
            # A new name's lock first, as uploads take theirs before any row (replacement.lock_names).
            await lock_new_name(c, work.document_id, work.filename)
        task = await c.fetchrow(
            "SELECT status, worker_id, new_metadata FROM job_tasks WHERE id = $1 FOR UPDATE", work.task_id
        )
        doc_exists = await c.fetchval("SELECT true FROM documents WHERE id = $1 FOR UPDATE", work.document_id)
        if task is None or not doc_exists or task["status"] not in ("processing", "queued"):
            await queue.delete(msg_id, conn=c)  # finished, failed or deleted meanwhile: a stale message
            return False
        if task["status"] == "queued" or task["worker_id"] != work.worker_id:
            return False  # re-queued or taken over: the message is no longer this worker's to delete
        # The message row locked until this commits (after the task row, as the heartbeat and recovery
        # take them): pgmq's read skips locked rows. A big document's write takes minutes (73k chunks:
        # over 5 min), while the heartbeat waits for the task row this holds; the message's visibility
        # ran out and another slot read it, its start then waiting on the task row too.
        await c.execute(f"SELECT 1 FROM {queue.table} WHERE msg_id = $1 FOR UPDATE", msg_id)
        # The metadata as the task row holds it now, not as it was read at the start: a PATCH meanwhile
        # edited it too (documents.update_metadata), and the later edit wins.
        if swap and (reason := await _swap_in(c, work, task["new_metadata"])) is not None:
            await fail_task(
                c, queue, work.task_id, work.worker_id, work.document_id, reason, msg_id, count_failure=True
            )
            return False
        await write_chunks(c, work.document_id, chunks, vectors, generations, give_way=True)
        # finished_at: the clock, not now() (the transaction's start): a big write runs for minutes, and
        # the task finished when its chunks were written. Every other finish takes the clock too.
        await c.execute(
            """
            UPDATE job_tasks SET status = 'completed', total_chunks = $2, completed_chunks = $2, error = NULL,
                   worker_id = NULL, new_content = NULL, finished_at = clock_timestamp(),
                   updated_at = clock_timestamp()
            WHERE id = $1
            """,
            work.task_id,
            len(chunks),
        )
        await queue.delete(msg_id, conn=c)
    return True


async def _swap_in(c: asyncpg.Connection, work: TaskWork, new_metadata: dict[str, Any] | None) -> str | None:
    file_type = file_type_for(work.filename)
    content_type = file_type.content_type if file_type else "application/octet-stream"
    return await swap_in(
        c, work.document_id, work.content, work.filename, work.file_type, content_type, new_metadata
    )


async def count_unfinished_tasks(conn: Executor) -> dict[str, int]:
    """Tasks still queued or processing (only the collections the caller may read: row-level security)."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM job_tasks WHERE status IN ('queued', 'processing') GROUP BY status"
    )
    counts = {"queued": 0, "processing": 0}
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts
