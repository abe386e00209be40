"""A delete of a document whose final write is under way does not wait for the rest of that write: the
delete holds a lock on the document (ingestion/deletion.py lock_out_writes) before it waits for the
task's row, and the write, between two of its INSERT statements, sees it, rolls back and gives way
(chunks.give_way_to_delete). The worker then ends the task as when the delete comes first, or retries it
when the delete rolled back. A real worker process writes 2 rows per statement here (its
INSERT_BATCH_ROWS set at its start); the test pauses its write before the first statement (a lock on
`chunks`), and holds the writers' mutex (bm25_stats) that a write takes at its very end: a write that did
not give way cannot end before the test lets it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from rag_server.collections.models import DEFAULT_COLLECTION_ID, CreateCollection
from rag_server.collections.store import create_collection, delete_collection
from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import tasks
from rag_server.ingestion.batches import create_upload_batch, replace_document_file
from rag_server.ingestion.chunks import DELETE_LOCK_CLASS
from rag_server.ingestion.deletion import delete_documents
from rag_server.ingestion.pipeline import incoming_file
from rag_server.ingestion.recovery import WorkerLease
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_embedding_settings, fake_ollama_env
from tests.integration.test_task_ownership import queued_and_read, worker_lease
from tests.support.child_hooks import run_at_child_start
from tests.support.ingest import assert_exact_chunks, chunk_count, enqueue, query, task_row, wait_for
from tests.support.locks import until_waiting, waiting_on_a_lock
from tests.support.processes import Proc, process_env, start_worker
from tests.support.sample_files import long_text

DELETED = "The document was deleted before processing finished."
# The worker's statement just before its first chunk INSERT (write_chunks), paused by the test's lock.
FIRST_WRITE = "DELETE FROM chunks WHERE document_id"
# The delete's first row lock: its tasks' rows (deletion._delete_locked).
DELETE_LOCKS_TASKS = "WITH locked AS MATERIALIZED"
# The statement of a final write that takes the writers' mutex, after every chunk INSERT.
TAKES_THE_MUTEX = "SELECT bm25_defer_end"
# The worker's wait for the delete to end after its write gave way (tasks.end_after_giving_way).
WAITS_FOR_THE_DELETE = "SELECT pg_advisory_xact_lock_shared"
SLICE = 2


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake: FakeEmbeddingServer) -> Settings:
    return fake_embedding_settings(database_url, data_dir, fake)


@pytest.fixture(scope="module")
def worker(
    runtime: Runtime, database_url: str, data_dir: Path, fake: FakeEmbeddingServer, tmp_path_factory: Any
) -> Iterator[Proc]:
    folder = tmp_path_factory.mktemp("small-slices")
    with pytest.MonkeyPatch.context() as patch:
        run_at_child_start(
            f"import rag_server.ingestion.chunks as c; c.INSERT_BATCH_ROWS = {SLICE}", folder, patch
        )
        env = process_env(
            database_url,
            data_dir,
            **fake_ollama_env(fake),
            RAG_WORKER_POLL_INTERVAL_S="0.1",
            RAG_WORKER_RETRY_BACKOFF_S="1",
        )
    proc = start_worker(env, folder / "worker.log")
    try:
        wait_for(lambda: "worker ready" in proc.log() or proc.popen.poll() is not None, 120, "worker ready")
        assert proc.popen.poll() is None, proc.log()
        yield proc
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.kill()


async def first_done(runtime: Runtime, deleting: asyncio.Future[Any]) -> str:
    """Which comes first: the delete ends, or the write reaches its end (waits for the mutex)."""
    for _ in range(2400):
        if deleting.done():
            return "delete"
        if await waiting_on_a_lock(runtime, TAKES_THE_MUTEX):
            return "write"
        await asyncio.sleep(0.05)
    raise AssertionError("neither the delete nor the write ended")


async def ids_taken(owner: asyncpg.Connection) -> int:
    """chunks.id values handed out so far (rolled-back INSERTs keep theirs)."""
    row = await owner.fetchrow(f"SELECT last_value, is_called FROM {await owner.fetchval(SEQUENCE)}")
    return int(row["last_value"]) if row["is_called"] else int(row["last_value"]) - 1


SEQUENCE = "SELECT pg_get_serial_sequence('chunks', 'id')"


async def _paused_final_write(
    runtime: Runtime, name: str, data: bytes, collection_id: UUID = DEFAULT_COLLECTION_ID
) -> tuple[UUID, UUID]:
    """Upload the file; return once the worker's final write holds its task and document rows and waits
    before its first INSERT (the caller holds `chunks` in SHARE mode)."""
    batch = await create_upload_batch(runtime.pool, runtime.queue, [incoming_file(name, data)], collection_id)
    [task] = batch.tasks
    assert task.document_id is not None
    await until_waiting(runtime, FIRST_WRITE)
    return task.task_id, task.document_id


def _ended(database_url: str, task_id: UUID) -> dict[str, Any]:
    return wait_for(
        lambda: (r := task_row(database_url, task_id))["status"] in ("completed", "failed") and r,
        120,
        "the task to end",
    )


def _message_gone(database_url: str, msg_id: int) -> None:
    wait_for(
        lambda: not query(database_url, "SELECT 1 FROM pgmq.q_ingest WHERE msg_id = %s", msg_id),
        60,
        "the worker to drop its message",
    )


def _log_since(worker: Proc, start: int) -> str:
    return worker.log()[start:]


async def test_a_delete_of_many_documents_locks_only_the_ones_processing(runtime: Runtime) -> None:
    """20,000 documents in one delete, one of them processing: one lock of the class, not 20,001 (the
    shared lock table holds max_locks_per_transaction x max_connections; 64 x 100 by default)."""
    async with owner_connection(runtime.database_url) as owner:
        bulk = [
            r["id"]
            for r in await owner.fetch(
                """
                INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status)
                SELECT 'bulk-' || i || '.txt', 'txt', 'text/plain', 1,
                       encode(sha256(('bulk document ' || i)::bytea), 'hex'), 'ready'
                FROM generate_series(1, 20000) AS i RETURNING id
                """
            )
        ]
    ref, msg = await queued_and_read(runtime, "processing.txt", b"A document a worker is processing.")
    lease: WorkerLease = await worker_lease(runtime)
    try:
        work = await tasks.start_task(
            runtime.pool, ref.task_id, int(msg.read_ct), lease.worker_id, msg.msg_id
        )
        assert work is not None
        async with runtime.pool.acquire() as conn, conn.transaction():
            deleted = await delete_documents(conn, [*bulk, ref.document_id])
            held = await conn.fetch(
                "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                " AND classid = $1::oid AND objsubid = 2",
                DELETE_LOCK_CLASS,
            )
            key = await conn.fetchval("SELECT hashtext($1::uuid::text)::oid", ref.document_id)
        assert [r["objid"] for r in held] == [key]
        assert sorted(deleted) == sorted([*bulk, ref.document_id])
        await runtime.queue.delete(msg.msg_id)
    finally:
        await lease.close()


async def test_a_delete_stops_a_final_write_at_its_next_slice(
    runtime: Runtime, worker: Proc, database_url: str
) -> None:
    name, data = "wrong-upload.txt", long_text(1500, seed=21).encode()
    log_start = len(worker.log())
    async with (
        owner_connection(runtime.database_url) as mutex,
        owner_connection(runtime.database_url) as table,
        mutex.transaction(),
    ):
        await mutex.execute("SELECT 1 FROM bm25_stats FOR UPDATE")  # the write cannot end meanwhile
        paused = table.transaction()
        await paused.start()
        await table.execute("LOCK TABLE chunks IN SHARE MODE")
        before = await ids_taken(mutex)
        task_id, document_id = await _paused_final_write(runtime, name, data)
        deleting = asyncio.ensure_future(delete_documents(runtime.pool, [document_id]))
        await until_waiting(runtime, DELETE_LOCKS_TASKS)  # its lock taken, waiting for the task row
        await paused.commit()  # the write goes on: its first INSERT, then it sees the delete
        assert await first_done(runtime, deleting) == "delete"
        assert await deleting == [document_id]
        # One statement of SLICE rows went in, then the write gave way (rolled back).
        assert await ids_taken(mutex) - before == SLICE
    row = wait_for(lambda: (r := task_row(database_url, task_id))["msg_id"] is not None and r, 30, "task")
    msg_id = row["msg_id"]

    def message_gone() -> bool:
        return not query(database_url, "SELECT 1 FROM pgmq.q_ingest WHERE msg_id = %s", msg_id)

    wait_for(message_gone, 60, "the worker to drop its message")
    wait_for(
        lambda: "ended while its write waited (its document deleted)" in worker.log(), 60, "the worker's line"
    )
    row = task_row(database_url, task_id)
    assert (row["status"], row["error"], row["failures"], row["attempts"]) == ("failed", DELETED, 0, 1)
    assert not query(database_url, "SELECT 1 FROM pgmq.a_ingest WHERE msg_id = %s", msg_id)
    assert not query(database_url, "SELECT 1 FROM documents WHERE id = %s", document_id)
    assert chunk_count(database_url, document_id) == 0
    log = _log_since(worker, log_start)
    assert "final write gave way" in log
    assert "ERROR" not in log and "Traceback" not in log, log


async def test_a_delete_that_rolls_back_after_the_write_gave_way_leaves_the_document_ready(
    runtime: Runtime, worker: Proc, settings: Settings, database_url: str
) -> None:
    name, data = "kept-after-all.txt", long_text(1500, seed=22).encode()
    async with (
        owner_connection(runtime.database_url) as mutex,
        owner_connection(runtime.database_url) as table,
        runtime.pool.acquire() as conn,
        mutex.transaction(),
    ):
        await mutex.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
        paused = table.transaction()
        await paused.start()
        await table.execute("LOCK TABLE chunks IN SHARE MODE")
        task_id, document_id = await _paused_final_write(runtime, name, data)
        delete = conn.transaction()
        await delete.start()
        deleting = asyncio.ensure_future(delete_documents(conn, [document_id]))
        await until_waiting(runtime, DELETE_LOCKS_TASKS)
        await paused.commit()
        assert await first_done(runtime, deleting) == "delete"
        assert await deleting == [document_id]
        await until_waiting(runtime, WAITS_FOR_THE_DELETE)  # the worker waits for this delete's end
        await delete.rollback()  # e.g. the client went away: nothing deleted
    done = wait_for(
        lambda: (r := task_row(database_url, task_id))["status"] in ("completed", "failed") and r,
        120,
        "the retried task",
    )
    assert (done["status"], done["failures"], done["attempts"]) == ("completed", 0, 2)
    [doc] = query(database_url, "SELECT status, chunk_count FROM documents WHERE id = %s", document_id)
    written = assert_exact_chunks(database_url, settings, document_id, name, data)
    assert doc == {"status": "ready", "chunk_count": written}
    assert written > SLICE * 2


async def test_a_delete_stops_a_new_versions_final_write(
    runtime: Runtime, worker: Proc, database_url: str
) -> None:
    """A replacement's final write (the new bytes swapped in, the old chunks deleted, the new ones
    inserted) gives way as well: rolled back, the old version would have stayed; the delete then takes
    the document, old chunks and all. (The old chunks' BM25 removal takes the writers' mutex: the mutex is
    not held here; one statement of new chunks shows where the write stopped.)"""
    name = "replaced-then-deleted.txt"
    [first] = await enqueue(runtime, [(name, long_text(300, seed=23).encode())])
    assert first.document_id is not None
    assert _ended(database_url, first.task_id)["status"] == "completed"
    document_id = first.document_id
    async with owner_connection(runtime.database_url) as table:
        async with table.transaction():
            await table.execute("LOCK TABLE chunks IN SHARE MODE")
            before = await ids_taken(table)
            new = await replace_document_file(
                runtime.pool,
                runtime.queue,
                document_id,
                incoming_file(name, long_text(1500, seed=24).encode()),
            )
            [task] = new.tasks
            await until_waiting(runtime, FIRST_WRITE)
            deleting = asyncio.ensure_future(delete_documents(runtime.pool, [document_id]))
            await until_waiting(runtime, DELETE_LOCKS_TASKS)
        assert await deleting == [document_id]
        assert await ids_taken(table) - before == SLICE
    row = _ended(database_url, task.task_id)
    assert (row["status"], row["error"], row["failures"], row["new_content"]) == ("failed", DELETED, 0, None)
    _message_gone(database_url, row["msg_id"])
    assert not query(database_url, "SELECT 1 FROM documents WHERE id = %s", document_id)
    assert chunk_count(database_url, document_id) == 0


async def test_deleting_a_collection_stops_a_final_write_of_one_of_its_documents(
    runtime: Runtime, worker: Proc, database_url: str
) -> None:
    """delete_collection takes the same locks (deletion.lock_out_writes): the write gives way, and the
    worker, finding its task gone with the collection, drops its message."""
    collection = await create_collection(runtime.pool, CreateCollection(name="going-away"))
    log_start = len(worker.log())
    async with (
        owner_connection(runtime.database_url) as mutex,
        owner_connection(runtime.database_url) as table,
        mutex.transaction(),
    ):
        await mutex.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
        paused = table.transaction()
        await paused.start()
        await table.execute("LOCK TABLE chunks IN SHARE MODE")
        task_id, document_id = await _paused_final_write(
            runtime, "in-a-collection.txt", long_text(1500, seed=25).encode(), collection.id
        )
        [msg_id] = [
            r["msg_id"] for r in query(database_url, "SELECT msg_id FROM job_tasks WHERE id = %s", task_id)
        ]
        deleting = asyncio.ensure_future(
            delete_collection(runtime.pool, runtime.queue, str(collection.id), force=True)
        )
        await until_waiting(runtime, "FOR UPDATE OF t")  # its lock taken, waiting for the task row
        await paused.commit()
        assert await first_done(runtime, deleting) == "delete"
        await deleting
    _message_gone(database_url, msg_id)
    wait_for(
        lambda: "ended while its write waited (its document deleted)" in worker.log(), 60, "the worker's line"
    )
    assert not query(database_url, "SELECT 1 FROM job_tasks WHERE id = %s", task_id)
    assert not query(database_url, "SELECT 1 FROM documents WHERE id = %s", document_id)
    log = _log_since(worker, log_start)
    assert "ERROR" not in log and "Traceback" not in log, log
