"""Retention (ingestion/retention.py) on a real database: what goes past the cutoff, and each rule that keeps
what a document still needs. Outcomes are written by the worker's own functions (tasks.start_task,
complete_task, fail_task); only the clock is moved back, by shifting a batch's and its tasks' timestamps
(all by the same amount, so their order stays as it was)."""

from __future__ import annotations

import asyncio
import os
import re
from uuid import UUID

import httpx
import numpy as np
import psycopg
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.api.routes.metrics import pipeline_families
from rag_server.chat import sessions
from rag_server.config import Settings
from rag_server.errors import NotFoundError
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import DbScope, bind_scope, reset_scope
from rag_server.ingestion import retention, tasks
from rag_server.ingestion.batches import batch_status, create_upload_batch, replace_document_file
from rag_server.ingestion.deletion import delete_document
from rag_server.ingestion.integrity import check_integrity
from rag_server.ingestion.models import UploadResponse
from rag_server.ingestion.pipeline import incoming_file
from rag_server.ingestion.pipeline_stats import read_pipeline_stats
from rag_server.openai_compat import response_store
from tests.support.ingest import query
from tests.support.processes import rag_server_cli

OLD = 40  # days back: past the default retention of 30


def unique(label: str) -> bytes:
    return f"{label} {os.urandom(8).hex()}".encode()


async def upload(runtime: Runtime, *files: tuple[str, bytes]) -> UploadResponse:
    return await create_upload_batch(runtime.pool, runtime.queue, [incoming_file(n, d) for n, d in files])


async def finish(runtime: Runtime, task_id: UUID, ok: bool = True, reason: str = "It broke.") -> None:
    """The task's outcome as a worker writes it (no chunks: a document of zero chunks)."""
    msg_id = await runtime.pool.fetchval("SELECT msg_id FROM job_tasks WHERE id = $1", task_id)
    work = await tasks.start_task(runtime.pool, task_id, 1, None, msg_id)
    assert work is not None
    if ok:
        vectors = np.zeros((0, runtime.settings.embedding_dim), np.float32)
        assert await tasks.complete_task(runtime.pool, runtime.queue, work, msg_id, [], vectors)
    else:
        assert await tasks.fail_task(
            runtime.pool, runtime.queue, task_id, None, work.document_id, reason, msg_id, count_failure=True
        )


def age(database_url: str, batch_ids: list[UUID], days: int = OLD, *, finished_only: bool = False) -> None:
    """Move the batches (and their tasks) `days` back in time; `finished_only`: only their tasks' ends."""
    shift = "- make_interval(days => %s)"
    with psycopg.connect(database_url) as conn:
        if not finished_only:
            conn.execute(
                f"UPDATE job_batches SET created_at = created_at {shift} WHERE id = ANY(%s)",
                (days, batch_ids),
            )
            conn.execute(
                f"UPDATE job_tasks SET created_at = created_at {shift}, updated_at = updated_at {shift},"
                f" started_at = started_at {shift} WHERE batch_id = ANY(%s)",
                (days, days, days, batch_ids),
            )
        conn.execute(
            f"UPDATE job_tasks SET finished_at = finished_at {shift} WHERE batch_id = ANY(%s)",
            (days, batch_ids),
        )


async def exists(runtime: Runtime, batch_id: UUID) -> bool:
    try:
        await batch_status(runtime.pool, batch_id)
    except NotFoundError:
        return False
    return True


async def prune(runtime: Runtime, **kwargs: object) -> retention.PruneResult:
    result = await retention.prune(runtime.pool, runtime.queue, runtime.settings, **kwargs)  # type: ignore[arg-type]
    assert not result.busy
    return result


async def deleted_document_batch(runtime: Runtime, database_url: str, files: int = 2) -> UUID:
    """A finished batch whose documents were deleted since: nothing keeps it once it is old enough."""
    batch = await upload(runtime, *((f"gone-{i}.txt", unique("gone")) for i in range(files)))
    for t in batch.tasks:
        await finish(runtime, t.task_id)
        assert t.document_id is not None
        await delete_document(runtime.pool, t.document_id)
    return batch.batch_id


async def test_an_old_finished_batch_goes_whole_and_then_reads_as_not_found(
    runtime: Runtime, database_url: str, app_client: httpx.AsyncClient
) -> None:
    batch_id = await deleted_document_batch(runtime, database_url, files=3)
    recent = await deleted_document_batch(runtime, database_url)
    age(database_url, [batch_id])
    assert (await app_client.get(f"/tasks/{batch_id}/status")).status_code == 200
    result = await prune(runtime)
    assert result.counts["batches"] >= 1 and result.counts["tasks"] >= 3
    with pytest.raises(NotFoundError, match="finished batches are removed after a while"):
        await batch_status(runtime.pool, batch_id)
    gone = await app_client.get(f"/tasks/{batch_id}/status")
    assert gone.status_code == 404
    assert "finished batches are removed after a while" in gone.json()["detail"]
    assert not query(database_url, "SELECT 1 FROM job_tasks WHERE batch_id = %s", batch_id)
    assert await exists(runtime, recent)  # finished, but within the retention


async def test_removal_follows_the_cutoff_and_a_batch_with_a_recent_end_stays(
    runtime: Runtime, database_url: str
) -> None:
    batch_id = await deleted_document_batch(runtime, database_url, files=2)
    age(database_url, [batch_id], 20)
    await prune(runtime)  # 20 days < 30
    assert await exists(runtime, batch_id)
    # One task ended 20 days ago, the other 4: with a retention of 10 days the batch is not done yet.
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE job_tasks SET finished_at = now() - interval '4 days'"
            " WHERE id = (SELECT id FROM job_tasks WHERE batch_id = %s ORDER BY id LIMIT 1)",
            (batch_id,),
        )
    await prune(runtime, task_days=10)
    assert await exists(runtime, batch_id)
    await prune(runtime, task_days=3)
    assert not await exists(runtime, batch_id)


async def test_a_batch_with_an_unfinished_task_stays(runtime: Runtime, database_url: str) -> None:
    batch = await upload(
        runtime,
        ("done.txt", unique("done")),
        ("waiting.txt", unique("waiting")),
        ("running.txt", unique("run")),
    )
    running = batch.tasks[2].task_id
    msg_id = await runtime.pool.fetchval("SELECT msg_id FROM job_tasks WHERE id = $1", running)
    assert await tasks.start_task(runtime.pool, running, 1, None, msg_id) is not None  # now processing
    await finish(runtime, batch.tasks[0].task_id)
    assert batch.tasks[0].document_id is not None
    await delete_document(runtime.pool, batch.tasks[0].document_id)
    age(database_url, [batch.batch_id])
    # Even with an end recorded long ago (a retry resets it; an operator's hand might not).
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE job_tasks SET finished_at = now() - interval '90 days' WHERE id = ANY(%s)",
            ([batch.tasks[1].task_id, running],),
        )
    await prune(runtime)
    status = await batch_status(runtime.pool, batch.batch_id)
    assert status.total == 3 and status.counts["queued"] == 1 and status.counts["processing"] == 1
    # Handed back as a stopping worker does (no worker holds it: `check` would call it stuck).
    assert await tasks.release_task(runtime.pool, runtime.queue, running, None, msg_id)


async def test_a_failed_documents_tasks_stay(runtime: Runtime, database_url: str) -> None:
    data = unique("fails")
    first = await upload(runtime, ("fails.txt", data))
    await finish(runtime, first.tasks[0].task_id, ok=False, reason="First reason.")
    again = await upload(runtime, ("fails.txt", data))  # the failed document, queued again
    assert again.tasks[0].status == "queued"
    await finish(runtime, again.tasks[0].task_id, ok=False, reason="Second reason.")
    age(database_url, [first.batch_id, again.batch_id])
    await prune(runtime)
    assert (await batch_status(runtime.pool, first.batch_id)).tasks[0].error == "First reason."
    assert (await batch_status(runtime.pool, again.batch_id)).tasks[0].error == "Second reason."


async def test_a_failed_replacements_bytes_stay_and_the_current_task_too(
    runtime: Runtime, database_url: str
) -> None:
    original = await upload(runtime, ("kept.txt", unique("v1")))
    await finish(runtime, original.tasks[0].task_id)
    doc_id = original.tasks[0].document_id
    assert doc_id is not None
    replaced = await replace_document_file(
        runtime.pool, runtime.queue, doc_id, incoming_file("kept.txt", unique("v2"))
    )
    await finish(runtime, replaced.tasks[0].task_id, ok=False, reason="The new file broke.")
    age(database_url, [original.batch_id, replaced.batch_id])
    await prune(runtime)
    # The replacement's bytes: what a retry processes.
    row = query(database_url, "SELECT new_content FROM job_tasks WHERE id = %s", replaced.tasks[0].task_id)
    assert row and row[0]["new_content"] is not None
    # The document's current task (its version 1): kept while the document lives.
    assert await exists(runtime, original.batch_id)


async def test_a_superseded_task_goes_its_replacement_stays_and_check_stays_clean(
    runtime: Runtime, database_url: str
) -> None:
    original = await upload(runtime, ("swapped.txt", unique("v1")))
    await finish(runtime, original.tasks[0].task_id)
    doc_id = original.tasks[0].document_id
    assert doc_id is not None
    replaced = await replace_document_file(
        runtime.pool, runtime.queue, doc_id, incoming_file("swapped.txt", unique("v2"))
    )
    await finish(runtime, replaced.tasks[0].task_id)
    age(database_url, [original.batch_id, replaced.batch_id])
    before = await check_integrity(runtime.pool, runtime.settings.queue_name)
    assert before.ok, before.lines()
    await prune(runtime)
    assert not await exists(runtime, original.batch_id)
    assert await exists(runtime, replaced.batch_id)
    after = await check_integrity(runtime.pool, runtime.settings.queue_name)
    assert after.ok, after.lines()


async def test_a_task_a_kept_duplicate_stands_for_stays(runtime: Runtime, database_url: str) -> None:
    """The duplicate shows what became of the task current when it was uploaded (failed, here): that task
    is kept while the duplicate is, even once a later upload processed the document."""
    data = unique("dup")
    first = await upload(runtime, ("dup.txt", data))
    # The same bytes again while the first is queued, beside a file still waiting (keeps that batch).
    second = await upload(runtime, ("dup-again.txt", data), ("other.txt", unique("other")))
    assert second.tasks[0].status == "duplicate"
    await finish(runtime, first.tasks[0].task_id, ok=False, reason="Broken.")
    third = await upload(runtime, ("dup.txt", data))  # the failed document queued again, then ready
    await finish(runtime, third.tasks[0].task_id)
    age(database_url, [first.batch_id, second.batch_id, third.batch_id])
    shown = await batch_status(runtime.pool, second.batch_id)
    assert [t.status for t in shown.tasks if t.filename == "dup-again.txt"] == ["failed"]
    await prune(runtime)
    assert await exists(runtime, first.batch_id)
    assert await batch_status(runtime.pool, second.batch_id) == shown


async def test_dry_run_removes_nothing_and_counts_what_a_prune_removes(
    runtime: Runtime, database_url: str
) -> None:
    batch_ids = [await deleted_document_batch(runtime, database_url) for _ in range(3)]
    age(database_url, batch_ids)
    dry = await retention.prune(runtime.pool, runtime.queue, runtime.settings, dry_run=True)
    assert dry.counts["batches"] >= 3 and dry.counts["tasks"] >= 6
    assert all([await exists(runtime, b) for b in batch_ids])
    counted = (await read_pipeline_stats(runtime.pool, runtime.queue)).pruned
    done = await prune(runtime)
    assert done.counts == dry.counts
    assert not any([await exists(runtime, b) for b in batch_ids])
    # GET /metrics: rag_retention_pruned_rows_total{kind}, counted with the rows' removal.
    stats = await read_pipeline_stats(runtime.pool, runtime.queue)
    assert {k: stats.pruned[k] - counted[k] for k in retention.KINDS} == done.counts
    rendered = [f for f in pipeline_families(stats) if f.name == "rag_retention_pruned_rows"]
    assert {s.labels["kind"]: s.value for s in rendered[0].samples} == stats.pruned


async def test_the_dead_message_archive_is_pruned_by_age(runtime: Runtime, database_url: str) -> None:
    batch = await upload(runtime, ("dead.txt", unique("dead")), ("dead2.txt", unique("dead")))
    for t in batch.tasks:
        await finish(runtime, t.task_id, ok=False)
    msg_ids = [
        r["msg_id"]
        for r in query(database_url, "SELECT msg_id FROM job_tasks WHERE batch_id = %s", batch.batch_id)
    ]
    archive = runtime.queue.archive_table
    with psycopg.connect(database_url) as conn:
        conn.execute(
            f"UPDATE {archive} SET archived_at = archived_at - interval '40 days' WHERE msg_id = %s",
            (msg_ids[0],),
        )
    await prune(runtime)
    left = {
        r["msg_id"]
        for r in query(database_url, f"SELECT msg_id FROM {archive} WHERE msg_id = ANY(%s)", msg_ids)
    }
    assert left == {msg_ids[1]}


async def test_chat_sessions_idle_past_the_chat_retention_go(runtime: Runtime, database_url: str) -> None:
    # A key's own session: the system scope prunes every key's (row-level security shows a key only its own).
    key = await keys.create_key(runtime.pool, CreateKey(name="chat-retention", role="editor"))
    token = bind_scope(DbScope(collections=None, role="editor", key_id=key.id))
    try:
        idle = await sessions.create_session(runtime.pool, title="idle", search_type="hybrid", llm_model=None)
    finally:
        reset_scope(token)
    assert query(database_url, "SELECT owner_key_id FROM chat_sessions WHERE id = %s", idle.id)[0][
        "owner_key_id"
    ]
    archived = await sessions.create_session(
        runtime.pool, title="archived", search_type="hybrid", llm_model=None
    )
    recent = await sessions.create_session(runtime.pool, title="recent", search_type="hybrid", llm_model=None)
    for s in (idle, archived, recent):
        with psycopg.connect(database_url) as conn:  # as the owner: any key's session
            conn.execute(
                "INSERT INTO chat_messages (session_id, role, content)"
                " VALUES (%s, 'user', 'q?'), (%s, 'assistant', 'a.')",
                (s.id, s.id),
            )
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE chat_sessions SET last_active_at = now() - interval '100 days',"
            " is_archived = (id = %s) WHERE id = ANY(%s)",
            (archived.id, [idle.id, archived.id]),
        )
    off = await prune(runtime)  # RAG_CHAT_RETENTION_DAYS=0: kept forever
    assert off.counts["chat_sessions"] == 0
    done = await prune(runtime, chat_days=90)
    assert done.counts["chat_sessions"] == 2 and done.counts["chat_messages"] == 4
    left = {
        r["id"]
        for r in query(
            database_url, "SELECT id FROM chat_sessions WHERE id = ANY(%s)", [idle.id, archived.id, recent.id]
        )
    }
    assert left == {recent.id}


async def test_stored_responses_older_than_the_chat_retention_go(runtime: Runtime, database_url: str) -> None:
    """Every key's (the system scope prunes all), by creation: a newer response of an old chain stays."""
    key = await keys.create_key(runtime.pool, CreateKey(name="responses-retention", role="reader"))
    collection = await runtime.pool.fetchval("SELECT id FROM collections WHERE name = 'default'")
    ids = [f"resp_{i:032x}" for i in range(3)]
    token = bind_scope(DbScope(collections=None, role="reader", key_id=key.id))
    try:
        for previous, response_id in zip([None, *ids], ids, strict=False):
            await response_store.save(
                runtime.pool,
                response_id,
                collection_id=collection,
                previous_id=previous,
                input_items=[],
                response={"id": response_id},
            )
    finally:
        reset_scope(token)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE v1_responses SET created_at = now() - interval '100 days' WHERE id = ANY(%s)", (ids[:2],)
        )
    assert (await prune(runtime)).counts["stored_responses"] == 0  # RAG_CHAT_RETENTION_DAYS=0: kept
    assert (await prune(runtime, chat_days=90, dry_run=True)).counts["stored_responses"] == 2
    assert (await prune(runtime, chat_days=90)).counts["stored_responses"] == 2
    left = query(database_url, "SELECT id, owner_key_id FROM v1_responses WHERE id = ANY(%s)", ids)
    assert [(r["id"], r["owner_key_id"]) for r in left] == [(ids[2], key.id)]


async def test_one_prune_at_a_time(runtime: Runtime, database_url: str) -> None:
    batch_ids = [await deleted_document_batch(runtime, database_url) for _ in range(2)]
    age(database_url, batch_ids)
    # Another process holds the lock (in a transaction of its own): this prune stops, having done nothing.
    with psycopg.connect(database_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (retention.RETENTION_LOCK,))
        busy = await retention.prune(runtime.pool, runtime.queue, runtime.settings)
        assert busy.busy and busy.total == 0
        assert all([await exists(runtime, b) for b in batch_ids])
    # Two at once: no error, and each row is removed once.
    expected = await retention.prune(runtime.pool, runtime.queue, runtime.settings, dry_run=True)
    both = await asyncio.gather(
        *(retention.prune(runtime.pool, runtime.queue, runtime.settings) for _ in range(2))
    )
    assert sum(r.counts["tasks"] for r in both) == expected.counts["tasks"]
    assert sum(r.counts["batches"] for r in both) == expected.counts["batches"]
    assert not any([await exists(runtime, b) for b in batch_ids])


async def test_the_prune_command(runtime: Runtime, database_url: str, settings: Settings) -> None:
    batch_id = await deleted_document_batch(runtime, database_url, files=2)
    age(database_url, [batch_id])
    dry = rag_server_cli(settings, "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert "skipped: chat sessions, stored responses: kept forever (RAG_CHAT_RETENTION_DAYS=0)" in lines
    assert re.fullmatch(
        r"would remove: batches \d+, tasks \d+, archived messages \d+, chat sessions 0, chat messages 0,"
        r" stored responses 0",
        lines[-1],
    )
    assert await exists(runtime, batch_id)
    done = rag_server_cli(settings, "prune")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == lines[-1].replace("would remove", "removed")
    assert not await exists(runtime, batch_id)
    # A kind kept by the flag names the flag, not the setting.
    flag = rag_server_cli(settings, "prune", "--dry-run", "--task-days", "0", "--chat-days", "0")
    assert flag.returncode == 0, flag.stderr
    assert flag.stdout.splitlines()[:2] == [
        "skipped: batches, tasks, archived messages: kept forever (--task-days 0)",
        "skipped: chat sessions, stored responses: kept forever (--chat-days 0)",
    ]
    check = rag_server_cli(settings, "check")
    assert check.returncode == 0, check.stdout
    bad = rag_server_cli(settings, "prune", "--chat-days", "-1")
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1] == (
        "rag-server prune: error: argument --chat-days: takes a whole number from 0 to 36500, got '-1'"
    )


async def test_a_batch_whose_task_another_transaction_holds_is_left_without_waiting(
    runtime: Runtime, database_url: str
) -> None:
    """A retry, a delete or a worker's final write holding one task row (in id order, before the
    document's): the prune neither waits for it (SKIP LOCKED) nor takes that batch in part."""
    held = await deleted_document_batch(runtime, database_url, files=3)
    free = await deleted_document_batch(runtime, database_url, files=2)
    age(database_url, [held, free])
    with psycopg.connect(database_url) as other:
        other.execute(
            "SELECT id FROM job_tasks WHERE batch_id = %s ORDER BY id LIMIT 1 OFFSET 1 FOR UPDATE", (held,)
        )
        async with asyncio.timeout(30):  # a correctness bound: waiting for the lock would hang here
            await prune(runtime)
        assert not await exists(runtime, free)
        assert (await batch_status(runtime.pool, held)).total == 3
    await prune(runtime)
    assert not await exists(runtime, held)
