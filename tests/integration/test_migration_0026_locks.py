"""Migration 0026 runs while a chunk write is in flight (an older worker still finishing a big document's
final write during an upgrade, which 0016's comment expects): searches must go on meanwhile.

DROP TRIGGER takes ACCESS EXCLUSIVE on `chunks`; queued behind the writer's ROW EXCLUSIVE, it blocks every
later reader of `chunks` (every search) until that write commits: minutes for a big document, the case
0026 was written for. CREATE OR REPLACE TRIGGER (PostgreSQL 14+) takes SHARE ROW EXCLUSIVE, which
readers do not wait for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command

from rag_server.config import Settings
from rag_server.infra.migrations import alembic_config
from tests.conftest import create_database

BEFORE, REVISION = "0025_bm25_cjk", "0026_bm25_deferred_write"


async def test_a_search_does_not_wait_for_0026_behind_a_chunk_write_in_flight(
    pg_server: str, tmp_path: Path
) -> None:
    url = await create_database(pg_server, "locks0026")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, BEFORE)
    writer = await asyncpg.connect(url)
    reader = await asyncpg.connect(url)
    migration = None
    try:
        # What every chunk writer holds until it commits.
        write = writer.transaction()
        await write.start()
        await writer.execute("LOCK TABLE chunks IN ROW EXCLUSIVE MODE")
        migration = asyncio.ensure_future(asyncio.to_thread(command.upgrade, cfg, REVISION))
        for _ in range(200):
            if await reader.fetchval(
                "SELECT count(*) > 0 FROM pg_locks WHERE relation = 'chunks'::regclass AND NOT granted"
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the migration never waited for the writer")
        # A search's read of chunks, bounded: with the migration's ACCESS EXCLUSIVE queued, it waits.
        await reader.execute("SET lock_timeout = '2s'")
        assert await reader.fetchval("SELECT count(*) FROM chunks") == 0
        await write.rollback()
        await migration
    finally:
        if not writer.is_closed():
            await writer.close()
        if migration is not None:
            await asyncio.wait_for(migration, 60)
        await reader.close()
