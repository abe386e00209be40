"""Migration 0030: `v1_responses` (stored /v1 responses), under row-level security, goes with its
collection, and its downgrade drops it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from alembic import command

from rag_server.config import Settings
from rag_server.infra.migrations import alembic_config
from tests.conftest import create_database


async def test_0030_adds_the_table_under_row_level_security_and_its_downgrade_drops_it(
    pg_server: str, tmp_path: Path
) -> None:
    url = await create_database(pg_server, "responses0030")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, "0030_stored_responses")
    conn = await asyncpg.connect(url)
    table = "SELECT relrowsecurity FROM pg_class WHERE relname = 'v1_responses'"
    try:
        assert await conn.fetchval(table) is True
        collection = await conn.fetchval("INSERT INTO collections (name) VALUES ('c') RETURNING id")
        insert = "INSERT INTO v1_responses (id, collection_id, input, response) VALUES ($1, $2, '[]', '{}')"
        await conn.execute(insert, "resp_" + "a" * 32, collection)
        for bad in ("resp_1", "msg_" + "a" * 32):  # only the ids the server gives
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(insert, bad, collection)
        await conn.execute("DELETE FROM collections WHERE id = $1", collection)
        assert await conn.fetchval("SELECT count(*) FROM v1_responses") == 0  # gone with its collection
        await asyncio.to_thread(command.downgrade, cfg, "0029_import_source")
        assert await conn.fetchval(table) is None
        await asyncio.to_thread(command.upgrade, cfg, "0030_stored_responses")
        assert await conn.fetchval(table) is True
    finally:
        await conn.close()
