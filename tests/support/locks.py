"""Waiting, in a test, until another session's statement waits for a lock (pg_stat_activity)."""

from __future__ import annotations

import asyncio

from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime


async def waiting_on_a_lock(runtime: Runtime, query_start: str) -> bool:
    """Whether a statement containing `query_start` waits for a lock now."""
    async with owner_connection(runtime.database_url) as owner:
        return bool(
            await owner.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                f"%{query_start}%",
            )
        )


async def until_waiting(runtime: Runtime, query_start: str) -> None:
    """Until a statement containing `query_start` waits for a lock (at most two minutes: a worker process
    on two loaded cores may take that long to get there)."""
    for _ in range(2400):
        if await waiting_on_a_lock(runtime, query_start):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no statement {query_start!r} waited for a lock")
