"""The chunk counts are the current attempt's (test_task_counts.py): an attempt handed back counts nothing.
A worker whose task was re-queued meanwhile (its liveness lock lost while it parsed a big file) then wrote
its total all the same: `set_task_total` checked no ownership, unlike set_task_progress, so a queued task
showed `0 / <the lost attempt's chunks>` again, and the next attempt's total was replaced by the stale
one's (its embedded count reset to 0 with it)."""

from __future__ import annotations

from rag_server.infra.database import runtime_url
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import tasks
from rag_server.ingestion.recovery import WorkerLease, requeue_dead_workers_tasks
from tests.integration.test_task_ownership import queued_and_read, worker_lease


async def test_a_worker_that_lost_its_task_cannot_set_its_chunk_count(runtime: Runtime) -> None:
    ref, msg = await queued_and_read(runtime, "recounted.txt", b"A task whose worker loses it mid-parse.")
    lease = await worker_lease(runtime)
    worker_id = lease.worker_id
    assert worker_id is not None
    assert await tasks.start_task(runtime.pool, ref.task_id, int(msg.read_ct), worker_id, msg.msg_id)
    await lease.close()
    assert await requeue_dead_workers_tasks(runtime.pool, runtime.queue) == [ref.task_id]

    async def counts() -> tuple[int, int]:
        row = await runtime.pool.fetchrow(
            "SELECT total_chunks, completed_chunks FROM job_tasks WHERE id = $1", ref.task_id
        )
        assert row is not None
        return row["total_chunks"], row["completed_chunks"]

    # Its parse ends after the task was queued again.
    assert not await tasks.set_task_total(runtime.pool, ref.task_id, 5_689, worker_id)
    assert await counts() == (0, 0)

    [again] = await runtime.queue.read(120)
    other = WorkerLease(runtime_url(runtime.database_url, runtime.settings))
    other_id = await other.acquire()
    try:
        assert await tasks.start_task(runtime.pool, ref.task_id, int(again.read_ct), other_id, again.msg_id)
        assert await tasks.set_task_total(runtime.pool, ref.task_id, 5_674, other_id)
        assert await tasks.set_task_progress(runtime.pool, ref.task_id, 100, other_id)
        assert not await tasks.set_task_total(runtime.pool, ref.task_id, 5_689, worker_id)
        assert await counts() == (5_674, 100)
    finally:
        await other.close()
