"""Pipeline administration (admin keys only): tasks (list, stuck, retry, cancel) and the queue's
dead-message archive. The rules and the SQL are in ingestion/operations.py and ingestion/archive.py."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from rag_server.access.models import Principal
from rag_server.api.deps import OffsetQuery, PoolDep, QueueDep, require
from rag_server.api.errors import error_responses
from rag_server.collections.models import CollectionRef
from rag_server.ingestion import archive, operations, operations_bulk
from rag_server.ingestion.models import TaskStatus
from rag_server.ingestion.operations_models import (
    AdminTask,
    AdminTaskList,
    ArchiveList,
    ArchivePurge,
    BulkTaskResult,
    CancelSelection,
    RetrySelection,
)

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[require("admin")], responses=error_responses(401, 403)
)

Admin = Annotated[Principal, require("admin")]


@router.get("/tasks", response_model=AdminTaskList, responses=error_responses(404, 503))
async def list_tasks(
    pool: PoolDep,
    queue: QueueDep,
    status: TaskStatus | None = None,
    collection: Annotated[CollectionRef | None, Query(description="A collection's name or id")] = None,
    batch_id: UUID | None = None,
    stuck: Annotated[bool, Query(description="Only tasks that do not move (see `stuck`)")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: OffsetQuery = 0,
) -> AdminTaskList:
    """Tasks, newest first; `stuck` names why a task does not move (a processing task whose worker is not
    running, a queued task whose queue message is missing). `retryable`: how many of the failed tasks listed
    (every page) a retry would queue again now (POST /admin/tasks/retry selects by batch, collection or
    all, not by these filters)."""
    return await operations.list_tasks(
        pool,
        queue,
        status=status,
        collection=collection,
        batch_id=batch_id,
        stuck=stuck,
        limit=limit,
        offset=offset,
    )


@router.post("/tasks/retry", response_model=BulkTaskResult, responses=error_responses(400, 404, 503))
async def retry_tasks(body: RetrySelection, pool: PoolDep, queue: QueueDep) -> BulkTaskResult:
    """Every failed task of a batch (`batch_id`), a collection (`collection`) or every collection
    (`"all": true`) queued again, without uploading again; those that cannot be (file missing, document
    deleted or queued again, refused at upload) are skipped. Exactly one of the three, else 422. In
    slices of a few hundred tasks, a transaction each. `done` and `skipped` list the first 1,000 each
    (`truncated`), `done_count` and `skipped_count` count them all."""
    return await operations_bulk.retry_tasks(pool, queue, body)


@router.post("/tasks/cancel", response_model=BulkTaskResult, responses=error_responses(400, 404, 503))
async def cancel_tasks(
    body: CancelSelection, pool: PoolDep, queue: QueueDep, principal: Admin
) -> BulkTaskResult:
    """Every queued task of a batch or a collection cancelled: failed with "Cancelled by <key name>"."""
    return await operations_bulk.cancel_tasks(pool, queue, body, principal.name)


@router.post("/tasks/{task_id}/retry", response_model=AdminTask, responses=error_responses(404, 409, 503))
async def retry_task(task_id: UUID, pool: PoolDep, queue: QueueDep) -> AdminTask:
    """Queue a failed task again (failures and attempts start over); its stored file is processed anew.
    409 when it is not failed, its file is missing, it was refused at upload (never queued: upload the file
    again), its document is queued again by another task or (a new file for the document) another version
    was swapped in since. A new file's retry leaves its document as it is until the swap."""
    return await operations.retry_task(pool, queue, task_id)


@router.post("/tasks/{task_id}/cancel", response_model=AdminTask, responses=error_responses(404, 409, 503))
async def cancel_task(task_id: UUID, pool: PoolDep, queue: QueueDep, principal: Admin) -> AdminTask:
    """Cancel a queued task: it and its document fail with "Cancelled by <key name>", its message is
    archived. 409 when it is not queued (a task being processed cannot be cancelled)."""
    return await operations.cancel_task(pool, queue, task_id, principal.name)


@router.get("/queue/archive", response_model=ArchiveList, responses=error_responses(503))
async def list_archive(
    pool: PoolDep,
    queue: QueueDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: OffsetQuery = 0,
) -> ArchiveList:
    """The dead-message archive (messages of failed and cancelled tasks), newest first, with their task."""
    return await archive.list_archive(pool, queue, limit=limit, offset=offset)


@router.delete("/queue/archive", response_model=ArchivePurge, responses=error_responses(503))
async def purge_archive(
    pool: PoolDep,
    queue: QueueDep,
    older_than_days: Annotated[int | None, Query(ge=0, le=archive.MAX_AGE_DAYS)] = None,
) -> ArchivePurge:
    """Delete archived messages: all, or those archived more than `older_than_days` days ago."""
    return await archive.purge_archive(pool, queue, older_than_days)
