"""The worker's task life cycle: start, progress, retry, release, fail, complete.

A task's chunks + task completed + message deleted are ONE transaction (`complete_task`); failing a task
archives its message in the same transaction (`fail_task`). Nothing is written to `chunks` earlier, so a
worker killed at any point leaves nothing partial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import numpy as np

from rag_server.infra.database import Executor, transaction
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.chunks import write_chunks


@dataclass(frozen=True)
class TaskWork:
    task_id: UUID
    document_id: UUID
    filename: str
    file_type: str
    content: bytes
    error: str | None  # the last transient failure, kept for when attempts run out
    title: str | None  # documents.metadata.title, the chunk context when set


MISSING_FILE_ERROR = "The stored file is missing from the database; upload it again."


async def start_task(conn: Executor, task_id: UUID, attempts: int) -> TaskWork | None:
    """Mark the task processing and load its document bytes; None if there is nothing to do any more
    (task finished, failed, or its document deleted)."""
    async with transaction(conn) as c:
        row = await c.fetchrow(
            """
            UPDATE job_tasks SET status = 'processing', attempts = $2, updated_at = now(),
                   started_at = coalesce(started_at, now())
            WHERE id = $1 AND status IN ('queued', 'processing') AND document_id IS NOT NULL
            RETURNING document_id, filename, error
            """,
            task_id,
            attempts,
        )
        if row is None:
            return None
        doc = await c.fetchrow(
            """
            UPDATE documents d SET status = 'processing', updated_at = now()
            FROM document_files f WHERE d.id = $1 AND f.document_id = d.id
            RETURNING d.file_type, d.metadata ->> 'title' AS title, f.content
            """,
            row["document_id"],
        )
        if doc is None:
            # The document row exists but its bytes do not (removed by hand, restored from a partial
            # backup): fail loudly instead of leaving the task 'processing' forever.
            await c.execute(
                """
                WITH t AS (
                    UPDATE job_tasks SET status = 'failed', error = $2, updated_at = now(),
                           finished_at = now()
                    WHERE id = $1 RETURNING document_id
                )
                UPDATE documents SET status = 'failed', error = $2, updated_at = now()
                WHERE id = (SELECT document_id FROM t)
                """,
                task_id,
                MISSING_FILE_ERROR,
            )
            return None
    return TaskWork(
        task_id,
        row["document_id"],
        row["filename"],
        doc["file_type"],
        bytes(doc["content"]),
        row["error"],
        doc["title"],
    )


async def set_task_total(conn: Executor, task_id: UUID, total_chunks: int) -> None:
    await conn.execute(
        "UPDATE job_tasks SET total_chunks = $2, completed_chunks = 0, updated_at = now() WHERE id = $1",
        task_id,
        total_chunks,
    )


async def set_task_progress(conn: Executor, task_id: UUID, completed_chunks: int) -> None:
    await conn.execute(
        "UPDATE job_tasks SET completed_chunks = $2, updated_at = now()"
        " WHERE id = $1 AND status = 'processing'",
        task_id,
        completed_chunks,
    )


async def record_retry(conn: Executor, task_id: UUID, reason: str) -> None:
    """A transient failure: the task waits for redelivery, the reason is shown meanwhile."""
    await conn.execute(
        """
        UPDATE job_tasks SET status = 'queued', error = $2, completed_chunks = 0, updated_at = now()
        WHERE id = $1 AND status = 'processing'
        """,
        task_id,
        reason,
    )


async def release_task(conn: Executor, task_id: UUID) -> None:
    """A worker shutting down gives the task back unfinished (nothing was written)."""
    await conn.execute(
        """
        UPDATE job_tasks SET status = 'queued', completed_chunks = 0, updated_at = now()
        WHERE id = $1 AND status = 'processing'
        """,
        task_id,
    )


async def fail_task(
    conn: Executor,
    queue: IngestQueue,
    task_id: UUID,
    document_id: UUID | None,
    reason: str,
    msg_id: int | None,
) -> None:
    """Fail the task and its document with a readable reason and archive its message: one transaction.
    No chunks are ever written before success, so nothing partial remains."""
    async with transaction(conn) as c:
        await c.execute(
            """
            UPDATE job_tasks SET status = 'failed', error = $2, finished_at = now(), updated_at = now()
            WHERE id = $1 AND status IN ('queued', 'processing')
            """,
            task_id,
            reason,
        )
        if document_id is not None:
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


async def complete_task(
    conn: Executor,
    queue: IngestQueue,
    work: TaskWork,
    msg_id: int,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
) -> bool:
    """Chunks + document ready + task completed + message deleted, in ONE transaction.

    Returns False when the task was cancelled meanwhile (document deleted): then only the message goes.
    """
    async with transaction(conn) as c:
        task_status = await c.fetchval("SELECT status FROM job_tasks WHERE id = $1 FOR UPDATE", work.task_id)
        doc_exists = await c.fetchval("SELECT true FROM documents WHERE id = $1 FOR UPDATE", work.document_id)
        if task_status != "processing" or not doc_exists:
            await queue.delete(msg_id, conn=c)
            return False
        await write_chunks(c, work.document_id, chunks, vectors)
        await c.execute(
            """
            UPDATE job_tasks SET status = 'completed', total_chunks = $2, completed_chunks = $2, error = NULL,
                   finished_at = now(), updated_at = now()
            WHERE id = $1
            """,
            work.task_id,
            len(chunks),
        )
        await queue.delete(msg_id, conn=c)
    return True


async def count_unfinished_tasks(conn: Executor) -> dict[str, int]:
    """Tasks still queued or processing (only the collections the caller may read: row-level security)."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM job_tasks WHERE status IN ('queued', 'processing') GROUP BY status"
    )
    counts = {"queued": 0, "processing": 0}
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts
