"""Pipeline administration of many tasks at once: every failed task of a batch, a collection or (`all`)
every collection the caller reaches retried, every queued one of a batch or a collection cancelled. Each
task as operations.py retries or cancels one (its rules, its lock order: task rows by id, then their
documents'); `all` is the tasks row-level security shows the caller, never filtered here."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from rag_server.collections.store import get_collection
from rag_server.errors import NotFoundError
from rag_server.infra.database import Executor, connection, transaction
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion.batches import DUPLICATE_SOURCE
from rag_server.ingestion.operations import (
    cancel_locked,
    cancel_reason,
    duplicate_refusal,
    lock_tasks,
    retry_locked,
)
from rag_server.ingestion.operations_models import (
    BulkTaskResult,
    Listed,
    RetrySelection,
    SkippedTask,
    TaskSelection,
)

# Failed tasks retried per transaction (retry_tasks): the locks held and the rows read at once stay
# bounded however many tasks failed.
RETRY_SLICE = 200


async def _selected(c: asyncpg.Connection, selection: TaskSelection) -> tuple[str, list[Any]]:
    """The WHERE of the selection's tasks (`t`, their batch `b`) and its arguments ($1..). Every task
    (`all`): those row-level security shows the caller, never filtered here."""
    if selection.batch_id is not None:
        if not await c.fetchval("SELECT true FROM job_batches WHERE id = $1", selection.batch_id):
            raise NotFoundError(f"no upload batch {selection.batch_id}")
        return "t.batch_id = $1", [selection.batch_id]
    if selection.collection is None:
        assert isinstance(selection, RetrySelection) and selection.all
        return "true", []
    return "b.collection_id = $1", [(await get_collection(c, selection.collection)).id]


async def _select(c: asyncpg.Connection, selection: TaskSelection, status: str) -> list[asyncpg.Record]:
    where, args = await _selected(c, selection)
    return await lock_tasks(c, f"{where} AND t.status = ${len(args) + 1}", *args, status)


async def _lock_documents(c: asyncpg.Connection, tasks: list[asyncpg.Record]) -> None:
    """The tasks' documents locked in id order, after the task rows (the lock order): one at a time, as
    each task is retried or cancelled, they would be locked in task order, and a metadata edit or a
    delete locking them in id order could deadlock with it."""
    ids = sorted({t["document_id"] for t in tasks if t["document_id"] is not None})
    await c.execute("SELECT FROM documents WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", ids)


async def retry_tasks(conn: Executor, queue: IngestQueue, selection: RetrySelection) -> BulkTaskResult:
    """Every failed task of a batch, a collection or (`all`) every collection queued again; those that
    cannot be (file missing, document deleted or queued again, refused at upload) are skipped with the
    reason, as are the duplicates listed failed (the task they follow failed, and was not retried here;
    read, not locked: nothing changes them, and a lock after the documents' would break the lock order).

    In slices of RETRY_SLICE tasks in id order, ONE transaction each (each task's retry is whole in its
    slice's): the locks held and the rows read at once stay bounded however many tasks failed. A slice
    that fails (a 503) leaves the earlier ones done; calling again retries the rest (those are queued)."""
    async with connection(conn) as c:
        where, args = await _selected(c, selection)
    done: Listed[UUID] = Listed()  # the answer's lists are bounded, its counts exact
    skipped: Listed[SkippedTask] = Listed()
    after, n = UUID(int=0), len(args)
    while True:
        async with transaction(conn) as c:
            tasks = await lock_tasks(
                c, f"{where} AND t.status = 'failed' AND t.id > ${n + 1}", *args, after, limit=RETRY_SLICE
            )
            await _lock_documents(c, tasks)
            for task in tasks:
                refused = await retry_locked(c, queue, task)
                if refused is None:
                    done.add(task["id"])
                else:
                    skipped.add(SkippedTask(task_id=task["id"], reason=refused))
        if len(tasks) < RETRY_SLICE:
            break
        after = tasks[-1]["id"]
    after = UUID(int=0)
    while True:
        async with connection(conn) as c:
            duplicates = await c.fetch(
                f"""
                SELECT t.id, t.filename FROM job_tasks t JOIN job_batches b ON b.id = t.batch_id
                WHERE {where} AND t.status = 'duplicate' AND t.id > ${n + 1}
                  AND (SELECT s.status FROM ({DUPLICATE_SOURCE}) s) = 'failed'
                ORDER BY t.id LIMIT {RETRY_SLICE}
                """,
                *args,
                after,
            )
            for task in duplicates:
                reason = await duplicate_refusal(c, task, "retry")
                skipped.add(SkippedTask(task_id=task["id"], reason=reason))
        if len(duplicates) < RETRY_SLICE:
            break
        after = duplicates[-1]["id"]
    return BulkTaskResult.of(done, skipped)


async def cancel_tasks(
    conn: Executor, queue: IngestQueue, selection: TaskSelection, by: str | None
) -> BulkTaskResult:
    """Every queued task of a batch or a collection cancelled, ONE transaction."""
    async with transaction(conn) as c:
        tasks = await _select(c, selection, "queued")
        await _lock_documents(c, tasks)
        for task in tasks:
            await cancel_locked(c, queue, task, cancel_reason(by))
    done: Listed[UUID] = Listed()
    for task in tasks:
        done.add(task["id"])
    return BulkTaskResult.of(done, Listed())
