"""Chat sessions idle past a cutoff: what retention counts and deletes (ingestion/retention.py,
RAG_CHAT_RETENTION_DAYS). Idle = no activity (`last_active_at`) since then, archived or not."""

from __future__ import annotations

from datetime import datetime

from rag_server.infra.database import Executor


async def count_idle_sessions(conn: Executor, cutoff: datetime) -> tuple[int, int]:
    """Sessions with no activity since `cutoff` (any: archived or not), and their messages."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS sessions,
               coalesce(sum((SELECT count(*) FROM chat_messages m WHERE m.session_id = s.id)), 0) AS messages
        FROM chat_sessions s WHERE s.last_active_at < $1
        """,
        cutoff,
    )
    assert row is not None
    return int(row["sessions"]), int(row["messages"])


async def delete_idle_sessions(conn: Executor, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Delete at most `limit` sessions idle since `cutoff` (their messages cascade); (sessions,
    messages) deleted. SKIP LOCKED: a session a turn is writing (its row lock) is active, not waited for."""
    row = await conn.fetchrow(
        """
        WITH gone AS (
            DELETE FROM chat_sessions WHERE id IN (
                SELECT id FROM chat_sessions WHERE last_active_at < $1 ORDER BY id LIMIT $2
                FOR UPDATE SKIP LOCKED)
            RETURNING id
        )
        SELECT (SELECT count(*) FROM gone) AS sessions,
               (SELECT count(*) FROM chat_messages m WHERE m.session_id IN (SELECT id FROM gone)) AS messages
        """,
        cutoff,
        limit,
    )
    assert row is not None
    return int(row["sessions"]), int(row["messages"])
