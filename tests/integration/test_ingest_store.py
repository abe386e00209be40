"""Store-level edge cases of the ingestion transactions, against the real database."""

from __future__ import annotations

from rag_server.infra.runtime import Runtime
from rag_server.ingestion import store
from rag_server.ingestion.pipeline import incoming_file


async def test_a_task_whose_file_bytes_are_gone_fails_with_a_reason(runtime: Runtime) -> None:
    _, [task] = await store.create_upload_batch(
        runtime.pool, runtime.queue, [incoming_file("lost.txt", b"bytes that will vanish")]
    )
    assert task.status == "queued" and task.document_id is not None
    await runtime.pool.execute("DELETE FROM document_files WHERE document_id = $1", task.document_id)

    assert await store.start_task(runtime.pool, task.task_id, attempts=1) is None

    row = await runtime.pool.fetchrow("SELECT status, error FROM job_tasks WHERE id = $1", task.task_id)
    assert row is not None
    assert (row["status"], row["error"]) == ("failed", store.MISSING_FILE_ERROR)
    doc_status = await runtime.pool.fetchval("SELECT status FROM documents WHERE id = $1", task.document_id)
    assert doc_status == "failed"
