"""A delete of a document an import is writing does not make the import fail. The import writes no
task's final write: nothing of it gives way to a delete (there is no task to end or retry afterwards),
so DeleteWaitingError must not reach it. Here the document also has a replacement processing, so the
delete takes its lock on the document (deletion.lock_out_writes) while the import holds the document's
row: the import's chunk write, between two INSERT statements, found that lock and raised
DeleteWaitingError out of write_documents (`rag-server import` then ends on a traceback, every batch
still to come unwritten). The import writes 2 rows per statement here (INSERT_BATCH_ROWS); the test
pauses it before its first INSERT (a lock on `chunks`)."""

from __future__ import annotations

import asyncio

import pytest

import rag_server.ingestion.chunks as chunks_module
from rag_server.collections.models import DEFAULT_COLLECTION_ID
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import tasks
from rag_server.ingestion.batches import replace_document_file
from rag_server.ingestion.deletion import delete_documents
from rag_server.ingestion.pipeline import incoming_file
from rag_server.porting.models import ImportChunk, ImportDocument
from rag_server.porting.writer import document_id, write_documents
from tests.integration.test_task_ownership import worker_lease
from tests.support.locks import until_waiting

ORIGIN = "jsonl"
# The import's statement just before its first chunk INSERT (write_chunks), paused by the test's lock.
FIRST_WRITE = "DELETE FROM chunks WHERE document_id"
# The delete's wait for the document rows (deletion._delete_locked), which the import holds.
DELETE_LOCKS_DOCUMENTS = "SELECT id FROM documents WHERE id = ANY"


def document(key: str, texts: list[str]) -> ImportDocument:
    return ImportDocument(
        key=key, filename=f"{key}.txt", metadata={}, chunks=[ImportChunk(t, t, {}) for t in texts]
    )


async def test_an_import_is_not_stopped_by_a_delete_of_a_document_it_writes(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunks_module, "INSERT_BATCH_ROWS", 2)
    key = "imported-replaced-deleted"
    first = document(key, [f"Herons stand still in the shallows, part {i}." for i in range(3)])
    await write_documents(runtime, DEFAULT_COLLECTION_ID, ORIGIN, [first], reuse_for=None)
    doc_id = document_id(DEFAULT_COLLECTION_ID, ORIGIN, key)
    # A user's new file for the imported document, its task started as a worker starts it: 'processing'.
    replaced = await replace_document_file(
        runtime.pool, runtime.queue, doc_id, incoming_file(f"{key}.txt", b"Egrets follow grazing cattle.")
    )
    [ref] = replaced.tasks
    [msg] = await runtime.queue.read(120)
    lease = await worker_lease(runtime)
    try:
        work = await tasks.start_task(
            runtime.pool, ref.task_id, int(msg.read_ct), lease.worker_id, msg.msg_id
        )
        assert work is not None
        # The source changed since the first import: the import writes the document again.
        second = document(key, [f"Herons hunt at dusk along the river, part {i}." for i in range(6)])
        async with owner_connection(runtime.database_url) as table:
            paused = table.transaction()
            await paused.start()
            await table.execute("LOCK TABLE chunks IN SHARE MODE")
            importing = asyncio.ensure_future(
                write_documents(runtime, DEFAULT_COLLECTION_ID, ORIGIN, [second], reuse_for=None)
            )
            await until_waiting(runtime, FIRST_WRITE)  # the import holds the document's row
            deleting = asyncio.ensure_future(delete_documents(runtime.pool, [doc_id]))
            await until_waiting(runtime, DELETE_LOCKS_DOCUMENTS)  # its lock on the document taken
            await paused.commit()
        counts = await importing  # DeleteWaitingError before the fix
        assert (counts.updated, counts.unusable) == (1, [])
        assert await deleting == [doc_id]  # then the delete goes through
    finally:
        await lease.close()
