"""A replacement that renames its document and `replace=true` uploads of that name, at the store level
as the runtime role: the swap takes the name lock uploads take (ingestion/replacement.py), so the two
are ordered one way or the other and never leave two documents with the name.

Deterministic: a test transaction holds a lock and each step waits until the other side is seen
waiting for a lock (pg_locks), never for a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import pytest

from rag_server.collections.models import DEFAULT_COLLECTION_ID
from rag_server.errors import ConflictError
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import batches, replacement, tasks
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.pipeline import incoming_file


def one_chunk(text: str) -> list[Chunk]:
    return [Chunk(index=0, text=text, search_text=text, page=None, char_start=0, char_end=len(text))]


async def start(runtime: Runtime, task_id: UUID) -> tuple[tasks.TaskWork, int]:
    """What a worker does before its final write: the task started (no liveness lock: worker None)."""
    msg_id = await runtime.pool.fetchval("SELECT msg_id FROM job_tasks WHERE id = $1", task_id)
    work = await tasks.start_task(runtime.pool, task_id, 1)
    assert work is not None
    return work, msg_id


async def complete(runtime: Runtime, work: tasks.TaskWork, msg_id: int) -> bool:
    vectors = np.zeros((1, runtime.settings.embedding_dim), dtype=np.float32)
    text = work.content.decode()
    return await tasks.complete_task(runtime.pool, runtime.queue, work, msg_id, one_chunk(text), vectors)


async def ready_document(runtime: Runtime, name: str, text: str) -> UUID:
    batch = await batches.create_upload_batch(
        runtime.pool, runtime.queue, [incoming_file(name, text.encode())]
    )
    [ref] = batch.tasks
    assert await complete(runtime, *await start(runtime, ref.task_id))
    assert ref.document_id is not None
    return ref.document_id


async def rename_pending(runtime: Runtime, name: str, new_name: str) -> tuple[UUID, tasks.TaskWork, int]:
    """A ready document `name` and a started replacement of it named `new_name`, before its final write."""
    doc_id = await ready_document(runtime, name, f"The first text of {name}.")
    queued = await batches.replace_document_file(
        runtime.pool, runtime.queue, doc_id, incoming_file(new_name, f"The new text of {name}.".encode())
    )
    [ref] = queued.tasks
    work, msg_id = await start(runtime, ref.task_id)
    assert work.filename == new_name
    return doc_id, work, msg_id


async def named(runtime: Runtime, name: str) -> list[UUID]:
    rows = await runtime.pool.fetch(
        "SELECT id FROM documents WHERE collection_id = $1 AND filename = $2", DEFAULT_COLLECTION_ID, name
    )
    return [r["id"] for r in rows]


async def until_waiting(conn: asyncpg.Connection, waiters: int, *running: asyncio.Task[Any]) -> None:
    """Until `waiters` sessions of this database wait for a lock. A running task that ends first did not
    wait: that is the failure, said at once."""
    while True:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if n >= waiters:
            return
        for t in running:
            if t.done():
                raise AssertionError(f"{t.get_name()} ended without waiting for a lock: {t.result()!r}")
        await asyncio.sleep(0.02)


def in_background(name: str, work: Awaitable[Any]) -> asyncio.Task[Any]:
    async def run() -> Any:
        return await work

    return asyncio.create_task(run(), name=name)


async def test_a_swap_waits_for_an_upload_deciding_the_new_name_then_refuses_it(runtime: Runtime) -> None:
    doc_id, work, msg_id = await rename_pending(runtime, "first-a.md", "first-b.md")
    watcher = await asyncpg.connect(runtime.database_url)
    try:
        async with runtime.pool.acquire() as upload_conn:  # a transaction (the system scope)
            # An upload with replace=true, not yet committed: it found no document named first-b.md
            # and made one, under that name's lock.
            made = await batches.create_upload_batch(
                upload_conn,
                runtime.queue,
                [incoming_file("first-b.md", b"An upload of the name.")],
                replace=True,
            )
            assert made.tasks[0].document_id != doc_id
            swap = in_background("the swap", complete(runtime, work, msg_id))
            await until_waiting(watcher, 1, swap)  # the swap waits for the name
        assert not await swap  # the name is the upload's now: the task fails, the old version stays
    finally:
        await watcher.close()
    assert await named(runtime, "first-b.md") == [made.tasks[0].document_id]
    doc = await runtime.pool.fetchrow("SELECT filename, version FROM documents WHERE id = $1", doc_id)
    assert (doc["filename"], doc["version"]) == ("first-a.md", 1)
    task = await runtime.pool.fetchrow("SELECT status, error FROM job_tasks WHERE id = $1", work.task_id)
    assert task["status"] == "failed" and "Another document named 'first-b.md'" in task["error"], task
    # Replace-by-name still knows which document the name means (two so named: a ConflictError).
    async with runtime.pool.acquire() as conn:
        found = await replacement.document_named(conn, DEFAULT_COLLECTION_ID, "first-b.md")
    assert found == made.tasks[0].document_id


async def test_an_upload_waits_for_a_swap_taking_the_name_then_replaces_that_document(
    runtime: Runtime,
) -> None:
    doc_id, work, msg_id = await rename_pending(runtime, "second-a.md", "second-b.md")
    watcher = await asyncpg.connect(runtime.database_url)
    try:
        async with runtime.pool.acquire() as hold:
            # The document row held (as a DELETE or PATCH of it would): the swap holds the new name's
            # lock and waits for the row.
            await hold.execute("SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", doc_id)
            swap = in_background("the swap", complete(runtime, work, msg_id))
            await until_waiting(watcher, 1, swap)
            upload = in_background(
                "the upload",
                batches.create_upload_batch(
                    runtime.pool,
                    runtime.queue,
                    [incoming_file("second-b.md", b"An upload of the second name.")],
                    replace=True,
                ),
            )
            await until_waiting(watcher, 2, swap, upload)  # the upload waits for the name
        assert await swap
        made = await upload
    finally:
        await watcher.close()
    # The upload found the renamed document: it queued a replacement of it, no second document.
    assert await named(runtime, "second-b.md") == [doc_id]
    assert (made.tasks[0].document_id, made.tasks[0].status) == (doc_id, "queued")


async def test_a_new_file_may_not_take_another_documents_name(runtime: Runtime) -> None:
    first = await ready_document(runtime, "third-a.md", "The text of third-a.")
    await ready_document(runtime, "third-b.md", "The text of third-b.")
    with pytest.raises(ConflictError, match=r"'third-b\.md' is the name of another document"):
        await batches.replace_document_file(
            runtime.pool, runtime.queue, first, incoming_file("third-b.md", b"A new text for third-a.")
        )
