"""A big document's final write (chunks + document + task + message, one transaction) takes minutes: 73k
chunks took over 5 minutes. Its heartbeat waits meanwhile (for the task row the write holds), so the
message's visibility runs out; the write holds the message's row, so no worker reads it again."""

from __future__ import annotations

import asyncio

import numpy as np

from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import tasks
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.recovery import WorkerLease
from tests.integration.test_task_ownership import message_state, queued_and_read, worker_lease


async def _waiting_on_a_lock(runtime: Runtime, query_start: str) -> bool:
    async with owner_connection(runtime.database_url) as owner:
        return bool(
            await owner.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                f"%{query_start}%",
            )
        )


async def test_a_message_whose_final_write_outlasts_its_visibility_is_not_read_again(
    runtime: Runtime,
) -> None:
    text = "A large document whose final write is slow."
    ref, msg = await queued_and_read(runtime, "slow-write.txt", text.encode())
    lease: WorkerLease = await worker_lease(runtime)
    try:
        read_ct, worker_id = int(msg.read_ct), lease.worker_id
        work = await tasks.start_task(runtime.pool, ref.task_id, read_ct, worker_id, msg.msg_id)
        assert work is not None
        await runtime.queue.extend(msg.msg_id, 1)  # its visibility runs out during the write
        chunk = Chunk(index=0, text=text, search_text=text, page=None, char_start=0, char_end=len(text))
        vectors = np.zeros((1, runtime.settings.embedding_dim), dtype=np.float32)
        async with owner_connection(runtime.database_url) as owner, owner.transaction():
            # The BM25 statistics row every chunk writer locks: the write waits here, as a long one runs.
            await owner.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
            write = asyncio.ensure_future(
                tasks.complete_task(runtime.pool, runtime.queue, work, msg.msg_id, [chunk], vectors)
            )
            for _ in range(600):
                if await _waiting_on_a_lock(runtime, "INSERT INTO chunks"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the final write never reached the chunks")
            for _ in range(600):
                if await message_state(runtime, msg.msg_id) == (1, True):
                    break  # visible by its timeout, still being written
                await asyncio.sleep(0.1)
            assert await runtime.queue.read(120) == []  # another slot finds nothing to take
        assert await write
        assert await message_state(runtime, msg.msg_id) is None
        status = await runtime.pool.fetchval("SELECT status FROM job_tasks WHERE id = $1", ref.task_id)
        assert status == "completed"
    finally:
        await lease.close()


async def test_a_long_final_write_finishes_its_task_when_it_ends_not_when_it_began(runtime: Runtime) -> None:
    """finished_at is when the chunks were written: the clock, not the final transaction's start."""
    text = "A document whose final write waits for the BM25 statistics."
    ref, msg = await queued_and_read(runtime, "late-finish.txt", text.encode())
    lease: WorkerLease = await worker_lease(runtime)
    try:
        work = await tasks.start_task(
            runtime.pool, ref.task_id, int(msg.read_ct), lease.worker_id, msg.msg_id
        )
        assert work is not None
        chunk = Chunk(index=0, text=text, search_text=text, page=None, char_start=0, char_end=len(text))
        vectors = np.zeros((1, runtime.settings.embedding_dim), dtype=np.float32)
        async with owner_connection(runtime.database_url) as owner:
            async with owner.transaction():
                await owner.execute("SELECT 1 FROM bm25_stats FOR UPDATE")
                write = asyncio.ensure_future(
                    tasks.complete_task(runtime.pool, runtime.queue, work, msg.msg_id, [chunk], vectors)
                )
                for _ in range(600):
                    if await _waiting_on_a_lock(runtime, "INSERT INTO chunks"):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the final write never reached the chunks")
                await asyncio.sleep(1.0)
                released_at = await owner.fetchval("SELECT clock_timestamp()")
            assert await write
            finished_at = await owner.fetchval("SELECT finished_at FROM job_tasks WHERE id = $1", ref.task_id)
        assert finished_at >= released_at
    finally:
        await lease.close()
