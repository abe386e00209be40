"""The dead-message archive: pgmq's `a_<queue>` table, where the messages of failed and cancelled tasks
go (pgmq.archive). Listed newest first with the task they name; purged all at once or by age.

Not a collection table (no row-level security): only admins reach it (the admin routes, the CLI's system
scope). The runtime role may read and delete there: it is granted DML on every pgmq table
(infra/migrations/runtime_role.py). The tasks shown are those the caller's scope sees.
"""

from __future__ import annotations

from rag_server.infra.database import LONG_STATEMENT_TIMEOUT_S, Executor, connection
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion.operations_models import ArchivedMessage, ArchiveList, ArchivePurge

# The oldest age a purge may name (100 years): the API's and the CLI's bound. make_interval takes an
# int4, and no archived message is older.
MAX_AGE_DAYS = 36_500
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


async def list_archive(conn: Executor, queue: IngestQueue, limit: int = 50, offset: int = 0) -> ArchiveList:
    """Archived messages, newest first. A malformed message (archived by a worker as such) names no task."""
    table = queue.archive_table
    async with connection(conn) as c:
        total = await c.fetchval(f"SELECT count(*) FROM {table}")
        rows = await c.fetch(
            f"""
            SELECT a.msg_id, a.read_ct, a.enqueued_at, a.archived_at, a.message,
                   t.id AS task_id, t.status AS task_status, t.document_id, t.filename, t.error
            FROM {table} a
            LEFT JOIN job_tasks t ON t.id = CASE WHEN a.message ->> 'task_id' ~ $3
                                                 THEN (a.message ->> 'task_id')::uuid END
            ORDER BY a.archived_at DESC, a.msg_id DESC LIMIT $1 OFFSET $2
            """,
            limit,
            offset,
            UUID_PATTERN,
        )
    items = [ArchivedMessage.model_validate(dict(r)) for r in rows]
    return ArchiveList(items=items, total=int(total), limit=limit, offset=offset)


async def purge_archive(
    conn: Executor, queue: IngestQueue, older_than_days: int | None = None
) -> ArchivePurge:
    """Delete archived messages: all, or those archived more than `older_than_days` days ago."""
    async with connection(conn) as c:
        deleted = await c.fetchval(
            f"""
            WITH gone AS (
                DELETE FROM {queue.archive_table}
                WHERE $1::integer IS NULL OR archived_at < now() - make_interval(days => $1::integer)
                RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            older_than_days,
            timeout=LONG_STATEMENT_TIMEOUT_S,
        )
    return ArchivePurge(deleted=int(deleted))
