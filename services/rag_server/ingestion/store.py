"""All ingestion SQL: uploads, batches, tasks, documents and the chunk write.

Transactions here are the guarantees of the issue: an upload (files + batch + tasks + messages) is
one transaction; a document's chunks + task completed + message deleted is one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID, uuid4

import asyncpg
import numpy as np

from rag_server.errors import NotFoundError
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion.chunking import Chunk


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# --- upload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingFile:
    filename: str  # already sanitised
    file_type: str
    content_type: str
    content: bytes
    metadata: dict[str, Any]

    @property
    def sha256(self) -> str:
        return sha256_hex(self.content)


@dataclass(frozen=True)
class TaskRef:
    task_id: UUID
    filename: str
    status: str
    document_id: UUID | None


async def create_upload_batch(
    pool: asyncpg.Pool, queue: IngestQueue, files: Sequence[IncomingFile]
) -> tuple[UUID, list[TaskRef]]:
    """Store every file, the batch, a task per file and one message per file to process: ONE transaction.

    Dedup by sha256: an existing document (or an earlier file of this batch) makes a 'duplicate' task
    pointing at it and sends no message; an existing *failed* document is queued again instead.
    """
    tasks: list[TaskRef] = []
    async with pool.acquire() as conn, conn.transaction():
        batch_id: UUID = await conn.fetchval("INSERT INTO job_batches DEFAULT VALUES RETURNING id")
        for f in files:
            sha = f.sha256
            while True:
                # ON CONFLICT waits for a concurrent upload of the same bytes to commit: one document wins.
                doc_id = await _insert_new_document(conn, f, sha, "queued")
                if doc_id is not None:
                    break
                existing = await conn.fetchrow(
                    "SELECT id, status, chunk_count FROM documents WHERE sha256 = $1 FOR UPDATE", sha
                )
                if existing is not None:
                    break
                # The conflicting document was deleted in between: try the insert again.
            if doc_id is not None:
                tasks.append(await _queue_task(conn, queue, batch_id, doc_id, f.filename))
                continue
            doc_id = existing["id"]
            # A failed document is queued again (once: this transaction sees it 'queued' afterwards).
            if existing["status"] == "failed":
                await conn.execute(
                    "UPDATE documents SET status = 'queued', error = NULL, updated_at = now() WHERE id = $1",
                    doc_id,
                )
                tasks.append(await _queue_task(conn, queue, batch_id, doc_id, f.filename))
                continue
            task_id = await conn.fetchval(
                """
                INSERT INTO job_tasks (batch_id, document_id, filename, status, total_chunks,
                                       completed_chunks, finished_at)
                VALUES ($1, $2, $3, 'duplicate', $4, $4, now()) RETURNING id
                """,
                batch_id,
                doc_id,
                f.filename,
                existing["chunk_count"],
            )
            tasks.append(TaskRef(task_id, f.filename, "duplicate", doc_id))
    return batch_id, tasks


async def _insert_new_document(
    conn: asyncpg.Connection, f: IncomingFile, sha: str, status: str
) -> UUID | None:
    """Insert the document and its bytes in one statement; None if this sha256 is already stored."""
    doc_id: UUID | None = await conn.fetchval(
        """
        WITH d AS (
            INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, metadata, status)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (sha256) DO NOTHING RETURNING id
        ), bytes AS (
            INSERT INTO document_files (document_id, content) SELECT id, $8 FROM d
        )
        SELECT id FROM d
        """,
        f.filename,
        f.file_type,
        f.content_type,
        len(f.content),
        sha,
        f.metadata,
        status,
        f.content,
    )
    return doc_id


async def _queue_task(
    conn: asyncpg.Connection, queue: IngestQueue, batch_id: UUID, doc_id: UUID, filename: str
) -> TaskRef:
    # The id is chosen here so the message can name it and the task row is written once, with msg_id.
    task_id = uuid4()
    msg_id = await queue.send({"task_id": str(task_id), "document_id": str(doc_id)}, conn=conn)
    await conn.execute(
        "INSERT INTO job_tasks (id, batch_id, document_id, filename, msg_id) VALUES ($1, $2, $3, $4, $5)",
        task_id,
        batch_id,
        doc_id,
        filename,
        msg_id,
    )
    return TaskRef(task_id, filename, "queued", doc_id)


async def check_duplicates(pool: asyncpg.Pool, sha256s: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Existing documents by sha256 (only the ones that exist)."""
    rows = await pool.fetch(
        "SELECT sha256, id, filename, status FROM documents WHERE sha256 = ANY($1::text[])",
        [s.lower() for s in sha256s],
    )
    return {
        r["sha256"]: {"document_id": r["id"], "filename": r["filename"], "status": r["status"]} for r in rows
    }


# --- batch status ----------------------------------------------------------------------------

TASK_STATUSES = ("queued", "processing", "completed", "failed", "duplicate")


async def batch_status(pool: asyncpg.Pool, batch_id: UUID) -> dict[str, Any]:
    async with pool.acquire() as conn:
        created_at = await conn.fetchval("SELECT created_at FROM job_batches WHERE id = $1", batch_id)
        if created_at is None:
            raise NotFoundError(f"no upload batch {batch_id}")
        rows = await conn.fetch(
            """
            SELECT id, filename, status, total_chunks, completed_chunks, attempts, error, document_id,
                   created_at, started_at, finished_at
            FROM job_tasks WHERE batch_id = $1 ORDER BY created_at, id
            """,
            batch_id,
        )
    counts = dict.fromkeys(TASK_STATUSES, 0)
    for r in rows:
        counts[r["status"]] += 1
    pending = counts["queued"] + counts["processing"]
    if pending:
        status = "queued" if counts["queued"] == len(rows) else "processing"
    elif counts["failed"] == len(rows) and rows:
        status = "failed"
    elif counts["failed"]:
        status = "completed_with_errors"
    else:
        status = "completed"
    return {
        "batch_id": batch_id,
        "status": status,
        "done": pending == 0,
        "created_at": created_at,
        "total": len(rows),
        "counts": counts,
        "total_chunks": sum(r["total_chunks"] for r in rows),
        "completed_chunks": sum(r["completed_chunks"] for r in rows),
        "tasks": [
            {
                "task_id": r["id"],
                "filename": r["filename"],
                "status": r["status"],
                "total_chunks": r["total_chunks"],
                "completed_chunks": r["completed_chunks"],
                "attempts": r["attempts"],
                "error": r["error"],
                "document_id": r["document_id"],
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
            }
            for r in rows
        ],
    }


# --- documents -------------------------------------------------------------------------------

DocumentSort = Literal["name", "uploaded", "chunks"]
_SORT_SQL = {"name": "lower(filename)", "uploaded": "created_at", "chunks": "chunk_count"}
_DOC_COLUMNS = """id, filename, file_type, content_type, size_bytes, sha256, status, error, chunk_count,
                  metadata, created_at, updated_at"""


async def list_documents(
    pool: asyncpg.Pool,
    *,
    limit: int = 50,
    offset: int = 0,
    sort: DocumentSort = "uploaded",
    descending: bool = True,
    status: str | None = None,
    file_type: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    where = "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR file_type = $2)"
    order = f"{_SORT_SQL[sort]} {'DESC' if descending else 'ASC'}, id"  # from a fixed map, not input
    async with pool.acquire() as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM documents WHERE {where}", status, file_type)
        rows = await conn.fetch(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE {where} ORDER BY {order} LIMIT $3 OFFSET $4",
            status,
            file_type,
            limit,
            offset,
        )
    return [dict(r) for r in rows], int(total)


async def get_document(pool: asyncpg.Pool, document_id: UUID) -> dict[str, Any]:
    row = await pool.fetchrow(f"SELECT {_DOC_COLUMNS} FROM documents WHERE id = $1", document_id)
    if row is None:
        raise NotFoundError(f"no document {document_id}")
    return dict(row)


async def get_document_file(pool: asyncpg.Pool, document_id: UUID) -> tuple[str, str, bytes]:
    """(filename, content_type, original bytes)."""
    row = await pool.fetchrow(
        """
        SELECT d.filename, d.content_type, f.content
        FROM documents d JOIN document_files f ON f.document_id = d.id WHERE d.id = $1
        """,
        document_id,
    )
    if row is None:
        raise NotFoundError(f"no document {document_id}")
    return row["filename"], row["content_type"], bytes(row["content"])


async def delete_document(pool: asyncpg.Pool, document_id: UUID) -> None:
    """Delete a document, its bytes and its chunks (cascade) together.

    A task still queued or processing for it is failed first, in the same transaction and in the
    same lock order as the worker's final write (task, then document), so the worker sees it and
    just drops its message instead of writing chunks for a document that is gone.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            UPDATE job_tasks
            SET status = 'failed', error = 'The document was deleted before processing finished.',
                finished_at = now(), updated_at = now()
            WHERE document_id = $1 AND status IN ('queued', 'processing')
            """,
            document_id,
        )
        deleted = await conn.fetchval("DELETE FROM documents WHERE id = $1 RETURNING id", document_id)
    if deleted is None:
        raise NotFoundError(f"no document {document_id}")


# --- worker ----------------------------------------------------------------------------------


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


async def start_task(pool: asyncpg.Pool, task_id: UUID, attempts: int) -> TaskWork | None:
    """Mark the task processing and load its document bytes; None if there is nothing to do any more
    (task finished, failed, or its document deleted)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
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
        doc = await conn.fetchrow(
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
            await conn.execute(
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


async def set_task_total(pool: asyncpg.Pool, task_id: UUID, total_chunks: int) -> None:
    await pool.execute(
        "UPDATE job_tasks SET total_chunks = $2, completed_chunks = 0, updated_at = now() WHERE id = $1",
        task_id,
        total_chunks,
    )


async def set_task_progress(pool: asyncpg.Pool, task_id: UUID, completed_chunks: int) -> None:
    await pool.execute(
        "UPDATE job_tasks SET completed_chunks = $2, updated_at = now()"
        " WHERE id = $1 AND status = 'processing'",
        task_id,
        completed_chunks,
    )


async def record_retry(pool: asyncpg.Pool, task_id: UUID, reason: str) -> None:
    """A transient failure: the task waits for redelivery, the reason is shown meanwhile."""
    await pool.execute(
        """
        UPDATE job_tasks SET status = 'queued', error = $2, completed_chunks = 0, updated_at = now()
        WHERE id = $1 AND status = 'processing'
        """,
        task_id,
        reason,
    )


async def release_task(pool: asyncpg.Pool, task_id: UUID) -> None:
    """A worker shutting down gives the task back unfinished (nothing was written)."""
    await pool.execute(
        """
        UPDATE job_tasks SET status = 'queued', completed_chunks = 0, updated_at = now()
        WHERE id = $1 AND status = 'processing'
        """,
        task_id,
    )


async def fail_task(
    pool: asyncpg.Pool,
    queue: IngestQueue,
    task_id: UUID,
    document_id: UUID | None,
    reason: str,
    msg_id: int | None,
) -> None:
    """Fail the task and its document with a readable reason and archive its message: one transaction.
    No chunks are ever written before success, so nothing partial remains."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            UPDATE job_tasks SET status = 'failed', error = $2, finished_at = now(), updated_at = now()
            WHERE id = $1 AND status IN ('queued', 'processing')
            """,
            task_id,
            reason,
        )
        if document_id is not None:
            await conn.execute(
                """
                UPDATE documents SET status = 'failed', error = $2, chunk_count = 0, updated_at = now()
                WHERE id = $1 AND status <> 'ready'
                """,
                document_id,
                reason,
            )
        if msg_id is not None:
            await queue.archive(msg_id, conn=conn)


async def complete_task(
    pool: asyncpg.Pool,
    queue: IngestQueue,
    work: TaskWork,
    msg_id: int,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
) -> bool:
    """Chunks + document ready + task completed + message deleted, in ONE transaction.

    Returns False when the task was cancelled meanwhile (document deleted): then only the message goes.
    """
    async with pool.acquire() as conn, conn.transaction():
        task_status = await conn.fetchval(
            "SELECT status FROM job_tasks WHERE id = $1 FOR UPDATE", work.task_id
        )
        doc_exists = await conn.fetchval(
            "SELECT true FROM documents WHERE id = $1 FOR UPDATE", work.document_id
        )
        if task_status != "processing" or not doc_exists:
            await queue.delete(msg_id, conn=conn)
            return False
        await write_chunks(conn, work.document_id, chunks, vectors)
        await conn.execute(
            """
            UPDATE job_tasks SET status = 'completed', total_chunks = $2, completed_chunks = $2, error = NULL,
                   finished_at = now(), updated_at = now()
            WHERE id = $1
            """,
            work.task_id,
            len(chunks),
        )
        await queue.delete(msg_id, conn=conn)
    return True


async def write_chunks(
    conn: asyncpg.Connection, document_id: UUID, chunks: Sequence[Chunk], vectors: np.ndarray
) -> None:
    """Replace the document's chunks (idempotent after a crash) and mark it ready. Caller owns the
    transaction. All chunks go in ONE INSERT: the BM25 triggers are statement-level."""
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    await conn.execute("DELETE FROM chunks WHERE document_id = $1", document_id)
    if chunks:
        await conn.execute(
            """
            INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding, page,
                                char_start, char_end)
            SELECT $1, c.idx, c.text, c.search_text, c.embedding::vector, c.page, c.char_start, c.char_end
            FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::int[])
                 AS c(idx, text, search_text, embedding, page, char_start, char_end)
            """,
            document_id,
            [c.index for c in chunks],
            [c.text for c in chunks],
            [c.search_text for c in chunks],
            [vector_literal(v) for v in vectors],
            [c.page for c in chunks],
            [c.char_start for c in chunks],
            [c.char_end for c in chunks],
        )
    await conn.execute(
        """
        UPDATE documents SET status = 'ready', error = NULL, chunk_count = $2, updated_at = now()
        WHERE id = $1
        """,
        document_id,
        len(chunks),
    )


def vector_literal(vector: np.ndarray) -> str:
    # asyncpg cannot bind an array of pgvector values; the text form casts cleanly inside unnest.
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


# --- direct ingestion (no queue) ---------------------------------------------------------------


async def insert_document(pool: asyncpg.Pool, f: IncomingFile) -> tuple[UUID, str]:
    """(id, status). An existing sha256 returns the existing document."""
    sha = f.sha256
    async with pool.acquire() as conn, conn.transaction():
        doc_id = await _insert_new_document(conn, f, sha, "processing")
        if doc_id is not None:
            return doc_id, "processing"
        row = await conn.fetchrow("SELECT id, status FROM documents WHERE sha256 = $1", sha)
        assert row is not None
        return row["id"], row["status"]


async def mark_document_failed(pool: asyncpg.Pool, document_id: UUID, reason: str) -> None:
    await pool.execute(
        "UPDATE documents SET status = 'failed', error = $2, updated_at = now() WHERE id = $1",
        document_id,
        reason,
    )
