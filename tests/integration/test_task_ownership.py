"""Dead-worker recovery at the store level, as the runtime role (row-level security, system scope):
a task is re-queued only when no session holds its worker's liveness lock, and a worker that lost its
lock (its task re-queued meanwhile) can no longer complete, extend, retry or release that task."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from rag_server.infra.database import runtime_url
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import batches, tasks
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.pipeline import incoming_file
from rag_server.ingestion.recovery import WorkerLease, requeue_dead_workers_tasks
from rag_server.ingestion.worker import Worker


async def queued_and_read(runtime: Runtime, name: str, text: bytes) -> tuple[Any, Any]:
    """One uploaded file's task ref and its message, read (hidden for 120 s) as a worker reads it."""
    batch = await batches.create_upload_batch(runtime.pool, runtime.queue, [incoming_file(name, text)])
    [ref] = batch.tasks
    [msg] = await runtime.queue.read(120)
    return ref, msg


async def worker_lease(runtime: Runtime) -> WorkerLease:
    """A worker's liveness lock, held until `close()` (what kill -9 ends)."""
    lease = WorkerLease(runtime_url(runtime.database_url, runtime.settings))
    await lease.acquire()
    return lease


async def message_state(runtime: Runtime, msg_id: int) -> tuple[int, bool] | None:
    row = await runtime.pool.fetchrow(
        f"SELECT read_ct, vt <= now() AS visible FROM pgmq.q_{runtime.queue.name} WHERE msg_id = $1", msg_id
    )
    return None if row is None else (row["read_ct"], row["visible"])


async def test_only_a_dead_workers_task_is_queued_again_and_the_dead_worker_cannot_finish_it(
    runtime: Runtime,
) -> None:
    ref, msg = await queued_and_read(runtime, "owned.txt", b"A task whose worker dies.")
    lease = await worker_lease(runtime)
    worker_id = lease.worker_id
    assert worker_id is not None
    work = await tasks.start_task(runtime.pool, ref.task_id, int(msg.read_ct), worker_id, msg.msg_id)
    assert work is not None and work.worker_id == worker_id and work.failures == 0

    # Alive (its lock held): nothing to recover, and the worker still owns its task.
    assert ref.task_id not in await requeue_dead_workers_tasks(runtime.pool, runtime.queue)
    kept = await tasks.keep_invisible(runtime.pool, runtime.queue, ref.task_id, worker_id, msg.msg_id, 120, 1)
    assert kept == "owned"
    assert await message_state(runtime, msg.msg_id) == (1, False)

    # Its session ends (what kill -9 does): the next check queues the task again, message visible now.
    await lease.close()
    assert await requeue_dead_workers_tasks(runtime.pool, runtime.queue) == [ref.task_id]
    row = await runtime.pool.fetchrow("SELECT status, worker_id FROM job_tasks WHERE id = $1", ref.task_id)
    assert row is not None and (row["status"], row["worker_id"]) == ("queued", None)
    assert await message_state(runtime, msg.msg_id) == (1, True)
    assert await requeue_dead_workers_tasks(runtime.pool, runtime.queue) == []  # once

    # Were it still running somewhere, its writes are refused and the message is left alone.
    kept = await tasks.keep_invisible(runtime.pool, runtime.queue, ref.task_id, worker_id, msg.msg_id, 120, 1)
    assert kept == "lost"
    assert await tasks.record_retry(runtime.pool, ref.task_id, worker_id, "boom", count_failure=True) is None
    text = "A task whose worker dies."
    chunk = Chunk(index=0, text=text, search_text=text, page=None, char_start=0, char_end=len(text))
    vectors = np.zeros((1, runtime.settings.embedding_dim), dtype=np.float32)
    assert not await tasks.complete_task(runtime.pool, runtime.queue, work, msg.msg_id, [chunk], vectors)
    assert await message_state(runtime, msg.msg_id) == (1, True)
    n = await runtime.pool.fetchval("SELECT count(*) FROM chunks WHERE document_id = $1", work.document_id)
    assert n == 0

    # Another worker takes it: the first one still cannot release it (that would unhide its message).
    [again] = await runtime.queue.read(120)
    other = WorkerLease(runtime_url(runtime.database_url, runtime.settings))
    other_id = await other.acquire()
    try:
        assert other_id != worker_id
        assert await tasks.start_task(runtime.pool, ref.task_id, int(again.read_ct), other_id, again.msg_id)
        assert not await tasks.release_task(runtime.pool, runtime.queue, ref.task_id, worker_id, again.msg_id)
        assert await message_state(runtime, again.msg_id) == (2, False)
        # Nor fail it: its verdict (a give-up, an error of its own attempt) would end the other's attempt,
        # fail the document and archive the message the other one holds.
        failed = tasks.fail_task(
            runtime.pool, runtime.queue, ref.task_id, worker_id, work.document_id, "late", again.msg_id
        )
        assert not await failed
        row = await runtime.pool.fetchrow(
            "SELECT status, worker_id FROM job_tasks WHERE id = $1", ref.task_id
        )
        assert row is not None and (row["status"], row["worker_id"]) == ("processing", other_id)
        status = await runtime.pool.fetchval("SELECT status FROM documents WHERE id = $1", work.document_id)
        assert status == "processing"
        assert await message_state(runtime, again.msg_id) == (2, False)
        assert await tasks.release_task(runtime.pool, runtime.queue, ref.task_id, other_id, again.msg_id)
        assert await message_state(runtime, again.msg_id) == (2, True)
    finally:
        await other.close()


async def test_a_dead_workers_message_read_again_meanwhile_is_left_to_its_reader(runtime: Runtime) -> None:
    """The visibility timeout ran out before the dead worker was noticed, and a live worker read the
    message: recovery made it visible again, a third read took it, and the file was processed twice
    (seen in CI: attempts 2 and 3 started 30 ms apart)."""
    await runtime.pool.execute(f"DELETE FROM {runtime.queue.table}")  # the test before left its message
    ref, msg = await queued_and_read(runtime, "raced.txt", b"A task read again before recovery.")
    dead = await worker_lease(runtime)
    assert dead.worker_id is not None
    assert await tasks.start_task(runtime.pool, ref.task_id, int(msg.read_ct), dead.worker_id, msg.msg_id)
    await runtime.queue.extend(msg.msg_id, 0)  # its heartbeats stopped: the timeout runs out
    [again] = await runtime.queue.read(120)  # a live worker reads it, not started yet
    await dead.close()

    assert await requeue_dead_workers_tasks(runtime.pool, runtime.queue) == [ref.task_id]
    assert await message_state(runtime, msg.msg_id) == (2, False)  # still its reader's
    assert await runtime.queue.read(120) == []
    live = await worker_lease(runtime)
    try:
        assert live.worker_id is not None
        work = await tasks.start_task(
            runtime.pool, ref.task_id, int(again.read_ct), live.worker_id, again.msg_id
        )
        assert work is not None and work.worker_id == live.worker_id
    finally:
        await live.close()


async def test_a_heartbeat_after_its_workers_own_final_write_stays_quiet(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A task's heartbeat runs until its message's handling ends: after the final write and the pack
    that may follow it. Woken after the write committed (or waiting on the task row while it wrote) it
    found the task no longer its worker's, and warned that the result just written "will be dropped". A
    task taken over by another worker still says so."""
    await runtime.pool.execute(f"DELETE FROM {runtime.queue.table}")  # a test before left its message
    ref, msg = await queued_and_read(runtime, "written.txt", b"A task its own worker completes.")
    lease = await worker_lease(runtime)
    try:
        assert lease.worker_id is not None
        work = await tasks.start_task(
            runtime.pool, ref.task_id, int(msg.read_ct), lease.worker_id, msg.msg_id
        )
        assert work is not None
        text = "A task its own worker completes."
        chunk = Chunk(index=0, text=text, search_text=text, page=None, char_start=0, char_end=len(text))
        vectors = np.full((1, runtime.settings.embedding_dim), 0.05, dtype=np.float32)
        assert await tasks.complete_task(runtime.pool, runtime.queue, work, msg.msg_id, [chunk], vectors)

        worker = Worker(runtime, lease)
        worker.settings = runtime.settings.model_copy(update={"worker_visibility_timeout_s": 1})
        caplog.set_level(logging.INFO, logger="rag_server.ingestion.worker")
        await asyncio.wait_for(
            worker._keep_invisible(ref.task_id, msg.msg_id, int(msg.read_ct)), 30
        )  # its first beat ends it
        assert "no longer this worker's" not in caplog.text, caplog.text

        # Taken over (its worker presumed dead, another one completed it): the heartbeat says so.
        ref, msg = await queued_and_read(runtime, "taken.txt", b"A task another worker completes.")
        assert await tasks.start_task(
            runtime.pool, ref.task_id, int(msg.read_ct), lease.worker_id, msg.msg_id
        )
        await runtime.pool.execute(
            "UPDATE job_tasks SET status = 'queued', worker_id = NULL WHERE id = $1", ref.task_id
        )  # recovery's requeue
        await runtime.queue.extend(msg.msg_id, 0)
        [again] = await runtime.queue.read(120)
        other = await worker_lease(runtime)
        try:
            taken = await tasks.start_task(
                runtime.pool, ref.task_id, int(again.read_ct), other.worker_id, again.msg_id
            )
            assert taken is not None
            assert await tasks.complete_task(
                runtime.pool, runtime.queue, taken, again.msg_id, [chunk], vectors
            )
        finally:
            await other.close()
        caplog.clear()
        await asyncio.wait_for(worker._keep_invisible(ref.task_id, msg.msg_id, int(msg.read_ct)), 30)
        assert f"task {ref.task_id} is no longer this worker's" in caplog.text, caplog.text
    finally:
        await lease.close()
