"""Store-level edge cases of the ingestion transactions, against the real database."""

from __future__ import annotations

import numpy as np
import pytest

from rag_server.errors import NotFoundError
from rag_server.infra.database import transaction
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import batches, chunks, deletion, documents, tasks
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.models import BatchStatus, FileDigest, UploadResponse
from rag_server.ingestion.pipeline import incoming_file


class Rollback(Exception):
    """Raised inside a caller's transaction to roll it back."""


async def test_a_task_whose_file_bytes_are_gone_fails_with_a_reason(runtime: Runtime) -> None:
    batch = await batches.create_upload_batch(
        runtime.pool, runtime.queue, [incoming_file("lost.txt", b"bytes that will vanish")]
    )
    [task] = batch.tasks
    assert task.status == "queued" and task.document_id is not None
    await runtime.pool.execute("DELETE FROM document_files WHERE document_id = $1", task.document_id)

    assert await tasks.start_task(runtime.pool, task.task_id, attempts=1) is None

    row = await runtime.pool.fetchrow("SELECT status, error FROM job_tasks WHERE id = $1", task.task_id)
    assert row is not None
    assert (row["status"], row["error"]) == ("failed", tasks.MISSING_FILE_ERROR)
    doc_status = await runtime.pool.fetchval("SELECT status FROM documents WHERE id = $1", task.document_id)
    assert doc_status == "failed"


async def test_an_upload_joins_the_callers_transaction_and_rolls_back_with_it(runtime: Runtime) -> None:
    content = b"an upload that the caller rolls back"
    queued_before = await runtime.pool.fetchval("SELECT count(*) FROM job_tasks WHERE status = 'queued'")
    async with runtime.pool.acquire() as conn:
        with pytest.raises(Rollback):
            async with conn.transaction():
                batch = await batches.create_upload_batch(
                    conn, runtime.queue, [incoming_file("rolled-back.txt", content)]
                )
                assert isinstance(batch, UploadResponse)
                # Visible inside the caller's transaction...
                assert (await batches.batch_status(conn, batch.batch_id)).total == 1
                raise Rollback
    # ...and gone with it: no batch, no document, no task, no message.
    with pytest.raises(NotFoundError):
        await batches.batch_status(runtime.pool, batch.batch_id)
    sha = documents.sha256_hex(content)
    assert await runtime.pool.fetchval("SELECT count(*) FROM documents WHERE sha256 = $1", sha) == 0
    assert (
        await runtime.pool.fetchval("SELECT count(*) FROM job_tasks WHERE status = 'queued'") == queued_before
    )
    messages = await runtime.pool.fetchval(
        f"SELECT count(*) FROM pgmq.q_{runtime.settings.queue_name} WHERE message->>'task_id' = $1",
        str(batch.tasks[0].task_id),
    )
    assert messages == 0


async def test_a_delete_and_a_chunk_write_join_the_callers_transaction(runtime: Runtime) -> None:
    doc_id, status = await documents.insert_document(
        runtime.pool, incoming_file("kept.txt", b"kept after all")
    )
    assert status == "processing"
    chunk = Chunk(0, "kept text", "kept text", None, 0, 9)
    vectors = np.ones((1, runtime.settings.embedding_dim), dtype=np.float32)
    async with runtime.pool.acquire() as conn:
        with pytest.raises(Rollback):
            async with transaction(conn) as c:
                await chunks.write_chunks(c, doc_id, [chunk], vectors)
                assert (await documents.get_document(c, doc_id)).status == "ready"
                await deletion.delete_document(c, doc_id)
                with pytest.raises(NotFoundError):
                    await documents.get_document(c, doc_id)
                raise Rollback
    doc = await documents.get_document(runtime.pool, doc_id)
    assert (doc.status, doc.chunk_count) == ("processing", 0)
    assert await runtime.pool.fetchval("SELECT count(*) FROM chunks WHERE document_id = $1", doc_id) == 0

    await chunks.write_chunks(runtime.pool, doc_id, [chunk], vectors)
    doc = await documents.get_document(runtime.pool, doc_id)
    assert (doc.status, doc.chunk_count) == ("ready", 1)


async def test_store_results_are_typed(runtime: Runtime) -> None:
    content = b"a typed result"
    batch = await batches.create_upload_batch(
        runtime.pool, runtime.queue, [incoming_file("typed.txt", content)]
    )
    status = await batches.batch_status(runtime.pool, batch.batch_id)
    assert isinstance(status, BatchStatus)
    assert (status.status, status.done, status.total, status.counts["queued"]) == ("queued", False, 1, 1)
    assert status.tasks[0].task_id == batch.tasks[0].task_id

    check = await documents.check_duplicates(
        runtime.pool,
        [
            FileDigest(filename="a.txt", sha256=documents.sha256_hex(content).upper()),
            FileDigest(filename="b.txt", sha256="0" * 64),
        ],
    )
    assert [(r.duplicate, r.document_id, r.status) for r in check.results] == [
        (False, batch.tasks[0].document_id, "queued"),
        (False, None, None),
    ]
    listed = await documents.list_documents(runtime.pool, limit=1, offset=0, sort="name", descending=False)
    assert listed.limit == 1 and len(listed.items) == 1 and listed.total >= 1


async def test_missing_documents_raise_not_found(runtime: Runtime) -> None:
    from uuid import uuid4

    missing = uuid4()
    for call in (documents.get_document, documents.get_document_file, deletion.delete_document):
        with pytest.raises(NotFoundError):
            await call(runtime.pool, missing)
