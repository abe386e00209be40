"""Retention: removing the rows that would otherwise grow for ever (docs/operations.md "Retention").

What goes, past RAG_TASK_RETENTION_DAYS (0: nothing):
- an upload batch (`job_batches`) with ALL its tasks (`job_tasks`), never a part of one: `GET
  /tasks/{batch_id}` then answers 404, it never shows a batch with files missing. Only when every task
  of it is finished (completed, failed, duplicate: queued and processing are not) and finished before
  the cutoff (the batch was created before it too), and none of its tasks is one a document still needs:
  * a failed task of a document that is failed now: its reason, and what `rag-server tasks retry` (or
    POST /admin/tasks/{id}/retry) takes;
  * a task holding a replacement's bytes (`new_content`: a failed replacement a retry can still
    process; the swap, a later replacement's swap and the document's deletion clear them);
  * a document's current task: the latest one `batches.DUPLICATE_SOURCE` could name (queued once, not
    a duplicate, not an unfinished or failed replacement). A file uploaded again later is shown as that
    task's outcome; were it gone, an older task (a failure before the document was uploaded again) would
    speak for the document instead. So a live document keeps one task (and its batch): what goes is
    history (duplicates, superseded and refused tasks, deleted documents' tasks);
  * a task a duplicate in another batch (one still kept) stands for: a task of its document created
    before the duplicate was recorded. The duplicate's batch ages out in turn, then this one.
- the queue's dead messages (pgmq's `a_<queue>`: failed and cancelled tasks' messages) archived before
  the cutoff. A retry never needs one (it sends a new message).
- past RAG_CHAT_RETENTION_DAYS (0, the default: nothing): chat sessions, archived or not, with no
  activity since the cutoff (`last_active_at`: a session's creation and each message), with their
  messages. Once an operator sets it, a conversation left that long is gone, as such a policy means.
  Stored /v1 responses (`v1_responses`, 0030) created before the same cutoff go too: a chain continued
  since then keeps its newer responses, whose history then starts after the pruned ones.

How: in transactions of at most CHUNK_BATCHES batches (CHUNK_ROWS messages, CHUNK_SESSIONS sessions),
so a backlog holds no lock long and meets no statement timeout. Each transaction first takes the
transaction-level advisory lock RETENTION_LOCK with a try: while one process prunes, another's prune
stops at once (`busy`) instead of waiting or doing the same work. Rows are locked with SKIP LOCKED, task
rows in id order and before anything else (the lock order: task rows -> document rows; no document row
is locked here), so a delete, a retry or a worker's final transaction is never waited for: a batch any
of whose tasks is locked by one is left for the next run. The rules are evaluated again once the task
rows are locked: what they read either cannot change under those locks, or changes in a way that keeps
what a document needs (a document becomes failed only while a task of it runs; a document uploaded again
gets a new current task; a duplicate recorded meanwhile stands for its document's current task).
Runs as the system scope (every collection) on the runtime pool; the archive has no row-level security.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg

from rag_server.chat import idle_sessions
from rag_server.config import Settings
from rag_server.infra.admin import add_meta_counts
from rag_server.infra.database import Executor, connection, transaction
from rag_server.infra.queue import IngestQueue
from rag_server.openai_compat import response_store

# pg_try_advisory_xact_lock key (the generations' 7_220_011_001, the pack's 7_220_014_001; 0024 here).
RETENTION_LOCK = 7_220_024_001
# Rows per transaction: batches (with their tasks: ~10 per batch in an upload of folders), archived
# messages, chat sessions (with their messages).
CHUNK_BATCHES = 1000
CHUNK_ROWS = 10_000
CHUNK_SESSIONS = 1000

# app_meta key: rows removed per kind since the database was created, counted in the transactions that
# removed them (GET /metrics: rag_retention_pruned_rows_total{kind}).
PRUNED_META_KEY = "retention_pruned"

Kind = Literal["batches", "tasks", "archived_messages", "chat_sessions", "chat_messages", "stored_responses"]
KINDS: tuple[Kind, ...] = (
    "batches",
    "tasks",
    "archived_messages",
    "chat_sessions",
    "chat_messages",
    "stored_responses",
)

# A task `t` keeps its batch: unfinished, finished since the cutoff ($1), or one a document still needs
# (the module's docstring says why each). "Current" and "a duplicate stands for it" follow
# batches.DUPLICATE_SOURCE (which tasks it may name, newest by (created_at, id)): keep them in step.
_KEEPS_BATCH = """
    t.status NOT IN ('completed', 'failed', 'duplicate')
    OR t.finished_at IS NULL OR t.finished_at >= $1
    OR t.new_content IS NOT NULL
    OR (t.status = 'failed' AND t.document_id IS NOT NULL
        AND EXISTS (SELECT 1 FROM documents d WHERE d.id = t.document_id AND d.status = 'failed'))
    OR (t.document_id IS NOT NULL AND t.status <> 'duplicate' AND t.msg_id IS NOT NULL
        AND (t.replaces_version IS NULL OR t.status = 'completed')
        AND NOT EXISTS (
            SELECT 1 FROM job_tasks n
            WHERE n.document_id = t.document_id AND n.status <> 'duplicate' AND n.msg_id IS NOT NULL
              AND (n.replaces_version IS NULL OR n.status = 'completed')
              AND (n.created_at, n.id) > (t.created_at, t.id)))
    OR (t.document_id IS NOT NULL AND t.status <> 'duplicate'
        AND EXISTS (
            SELECT 1 FROM job_tasks dup
            WHERE dup.document_id = t.document_id AND dup.status = 'duplicate'
              AND dup.batch_id <> t.batch_id AND dup.finished_at >= t.created_at))
"""
# Of the batches $2 (created before the cutoff $1), those none of whose tasks keeps it.
_PRUNABLE = f"""
    SELECT b.id FROM job_batches b
    WHERE b.id = ANY($2::uuid[]) AND b.created_at < $1
      AND NOT EXISTS (SELECT 1 FROM job_tasks t WHERE t.batch_id = b.id AND ({_KEEPS_BATCH}))
"""


@dataclass
class PruneResult:
    """Rows removed (or, in a dry run, that would be) per kind; `busy`: another process was pruning, so
    this one stopped (the figures are what it did before that)."""

    dry_run: bool = False
    counts: dict[Kind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    busy: bool = False
    skipped: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        figures = ", ".join(f"{kind.replace('_', ' ')} {n}" for kind, n in self.counts.items())
        return f"{'would remove' if self.dry_run else 'removed'}: {figures}"


async def prune(
    conn: Executor,
    queue: IngestQueue,
    settings: Settings,
    *,
    dry_run: bool = False,
    task_days: int | None = None,
    chat_days: int | None = None,
) -> PruneResult:
    """Remove what the retention settings (or `task_days`, `chat_days`) let go; `dry_run`: only count.
    Stops at the first transaction another process's prune holds the lock of (`busy`)."""
    # A skipped kind names what kept it: the flag given, else the setting.
    task_source = "RAG_TASK_RETENTION_DAYS=0" if task_days is None else "--task-days 0"
    chat_source = "RAG_CHAT_RETENTION_DAYS=0" if chat_days is None else "--chat-days 0"
    task_days = settings.task_retention_days if task_days is None else task_days
    chat_days = settings.chat_retention_days if chat_days is None else chat_days
    result = PruneResult(dry_run=dry_run)
    if task_days:
        cutoff = await _cutoff(conn, task_days)
        if await _prune_batches(conn, cutoff, result) and not result.busy:
            await _prune_archive(conn, queue, cutoff, result)
    else:
        result.skipped.append(f"batches, tasks, archived messages: kept forever ({task_source})")
    if result.busy:
        return result
    if chat_days:
        cutoff = await _cutoff(conn, chat_days)
        if await _prune_chat(conn, cutoff, result):
            await _prune_responses(conn, cutoff, result)
    else:
        result.skipped.append(f"chat sessions, stored responses: kept forever ({chat_source})")
    return result


async def _cutoff(conn: Executor, days: int) -> datetime:
    cutoff: datetime = await conn.fetchval("SELECT now() - make_interval(days => $1::integer)", days)
    return cutoff


async def _locked(c: asyncpg.Connection, result: PruneResult) -> bool:
    """Take the retention lock for this transaction; False (and `busy`) when another prune holds it."""
    if result.dry_run or await c.fetchval("SELECT pg_try_advisory_xact_lock($1)", RETENTION_LOCK):
        return True
    result.busy = True
    return False


async def _prune_batches(conn: Executor, cutoff: datetime, result: PruneResult) -> bool:
    """Every batch created before the cutoff is looked at once, in id order (the primary key's index):
    those kept (a live document's current task: possibly many) are not read again each transaction."""
    after: UUID | None = None
    while True:
        async with transaction(conn) as c:
            if not await _locked(c, result):
                return False
            ids = await c.fetch(
                """
                SELECT id FROM job_batches
                WHERE created_at < $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3
                """,
                cutoff,
                after,
                CHUNK_BATCHES,
            )
            if not ids:
                return True
            after = ids[-1]["id"]
            batch_ids = [r["id"] for r in ids]
            await _prune_chunk(c, cutoff, batch_ids, result)


async def _prune_chunk(
    c: asyncpg.Connection, cutoff: datetime, batch_ids: list[UUID], result: PruneResult
) -> None:
    prunable = [r["id"] for r in await c.fetch(_PRUNABLE, cutoff, batch_ids)]
    if not prunable:
        return
    if result.dry_run:
        tasks = await c.fetchval("SELECT count(*) FROM job_tasks WHERE batch_id = ANY($1::uuid[])", prunable)
        result.counts["batches"] += len(prunable)
        result.counts["tasks"] += int(tasks)
        return
    # Their task rows first, in id order, skipping any another transaction holds (a retry, a delete, a
    # worker): that batch waits for the next run. Then the rules again, on rows that cannot change now.
    locked = await c.fetch(
        "SELECT id FROM job_tasks WHERE batch_id = ANY($1::uuid[]) ORDER BY id FOR UPDATE SKIP LOCKED",
        prunable,
    )
    locked_ids = [r["id"] for r in locked]
    still = await c.fetch(
        f"""
        SELECT p.id FROM ({_PRUNABLE}) p
        WHERE NOT EXISTS (SELECT 1 FROM job_tasks t WHERE t.batch_id = p.id AND t.id <> ALL($3::uuid[]))
        """,
        cutoff,
        prunable,
        locked_ids,
    )
    gone = [r["id"] for r in still]
    if not gone:
        return
    tasks = await c.execute("DELETE FROM job_tasks WHERE batch_id = ANY($1::uuid[])", gone)
    batches = await c.execute("DELETE FROM job_batches WHERE id = ANY($1::uuid[])", gone)
    removed = {"tasks": _rows(tasks), "batches": _rows(batches)}
    await add_meta_counts(c, PRUNED_META_KEY, removed)
    result.counts["tasks"] += removed["tasks"]
    result.counts["batches"] += removed["batches"]


async def _prune_archive(conn: Executor, queue: IngestQueue, cutoff: datetime, result: PruneResult) -> None:
    table = queue.archive_table
    if result.dry_run:
        async with connection(conn) as c:
            n = await c.fetchval(f"SELECT count(*) FROM {table} WHERE archived_at < $1", cutoff)
        result.counts["archived_messages"] += int(n)
        return
    while True:
        async with transaction(conn) as c:
            if not await _locked(c, result):
                return
            status = await c.execute(
                f"""
                DELETE FROM {table} WHERE msg_id IN (
                    SELECT msg_id FROM {table} WHERE archived_at < $1 ORDER BY msg_id LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                """,
                cutoff,
                CHUNK_ROWS,
            )
            n = _rows(status)
            if n:
                await add_meta_counts(c, PRUNED_META_KEY, {"archived_messages": n})
        result.counts["archived_messages"] += n
        if n < CHUNK_ROWS:
            return


async def _prune_chat(conn: Executor, cutoff: datetime, result: PruneResult) -> bool:
    """False when another prune holds the lock (`busy`)."""
    if result.dry_run:
        sessions, messages = await idle_sessions.count_idle_sessions(conn, cutoff)
        result.counts["chat_sessions"] += sessions
        result.counts["chat_messages"] += messages
        return True
    while True:
        async with transaction(conn) as c:
            if not await _locked(c, result):
                return False
            sessions, messages = await idle_sessions.delete_idle_sessions(c, cutoff, CHUNK_SESSIONS)
            if sessions:
                await add_meta_counts(
                    c, PRUNED_META_KEY, {"chat_sessions": sessions, "chat_messages": messages}
                )
        result.counts["chat_sessions"] += sessions
        result.counts["chat_messages"] += messages
        if sessions < CHUNK_SESSIONS:
            return True


async def _prune_responses(conn: Executor, cutoff: datetime, result: PruneResult) -> None:
    if result.dry_run:
        result.counts["stored_responses"] += await response_store.count_old(conn, cutoff)
        return
    while True:
        async with transaction(conn) as c:
            if not await _locked(c, result):
                return
            n = await response_store.delete_old(c, cutoff, CHUNK_ROWS)
            if n:
                await add_meta_counts(c, PRUNED_META_KEY, {"stored_responses": n})
        result.counts["stored_responses"] += n
        if n < CHUNK_ROWS:
            return


def _rows(status: str) -> int:
    """The row count of a command tag (`DELETE 12`)."""
    return int(status.rsplit(" ", 1)[-1])
