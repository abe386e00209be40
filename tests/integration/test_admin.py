"""infra.admin: databases on a server and app_meta keys, on a real server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from rag_server.config import Settings
from rag_server.infra import admin
from rag_server.infra.database import create_pool, with_database
from rag_server.infra.migrations import upgrade_to_head


async def test_create_exists_drop_with_a_name_that_needs_quoting(pg_server: str) -> None:
    name = f'odd "name"; DROP {uuid.uuid4().hex[:8]}'
    assert not await admin.database_exists(pg_server, name)
    url = await admin.create_database(pg_server, name)
    assert await admin.database_exists(pg_server, name)
    # The prefix is literal: '_' and '%' are not LIKE wildcards here.
    assert await admin.list_databases(pg_server, name[:12]) == [name]
    assert await admin.list_databases(pg_server, name[:4] + "%") == []
    conn = await asyncpg.connect(url)  # held open: the drop must end it (WITH (FORCE))
    try:
        assert await conn.fetchval("SELECT current_database()") == name
        await admin.drop_database(pg_server, name)
    finally:
        await conn.close()
    assert not await admin.database_exists(pg_server, name)
    await admin.drop_database(pg_server, name)  # IF EXISTS: a second drop is a no-op


def test_identifiers_postgres_would_truncate_or_reject_are_refused() -> None:
    assert admin.quote_ident('a"b') == '"a""b"'
    for bad in ("", "x\x00y", "d" * 64, "é" * 32):
        with pytest.raises(ValueError):
            admin.quote_ident(bad)


async def test_reuse_or_recreate(pg_server: str) -> None:
    name = f"t_reuse_{uuid.uuid4().hex[:8]}"
    seen: list[str] = []

    async def complete(conn: asyncpg.Connection) -> bool:
        seen.append(await conn.fetchval("SELECT current_database()"))
        return bool(await conn.fetchval("SELECT to_regclass('done') IS NOT NULL"))

    assert await admin.reuse_or_recreate(pg_server, name, complete) is False  # created
    assert seen == []
    url = with_database(pg_server, name)
    async with admin.connection(url) as conn:
        await conn.execute("CREATE TABLE partial (x int)")
    # Not complete: rebuilt empty.
    assert await admin.reuse_or_recreate(pg_server, name, complete) is False
    assert seen == [name]
    async with admin.connection(url) as conn:
        assert await conn.fetchval("SELECT to_regclass('partial')") is None
        await conn.execute("CREATE TABLE done (x int)")
    assert await admin.reuse_or_recreate(pg_server, name, complete) is True
    # fresh: rebuilt even though complete, without asking.
    assert await admin.reuse_or_recreate(pg_server, name, complete, fresh=True) is False
    assert seen == [name, name]
    async with admin.connection(url) as conn:
        assert await conn.fetchval("SELECT to_regclass('done')") is None
    await admin.drop_database(pg_server, name)


async def test_meta_round_trip_on_plain_and_pool_connections(pg_server: str, tmp_path: Path) -> None:
    # A model name with both quote kinds goes through migration 0001's bound parameters intact.
    model = 'it\'s a "quoted" model'
    url = await admin.create_database(pg_server, f"t_meta_{uuid.uuid4().hex[:8]}")
    async with admin.connection(url) as conn:
        assert not await admin.has_app_meta(conn)
    settings = Settings(database_url=url, data_dir=tmp_path, embedding_model=model)
    await asyncio.to_thread(upgrade_to_head, url, settings)

    value = {"text": 'O\'Brien said "hi"', "n": [1, 2.5, None], "ok": True}
    async with admin.connection(url) as conn:
        assert await admin.has_app_meta(conn)
        assert await admin.get_meta(conn, "embedding_model") == model
        assert await admin.get_meta(conn, "bm25_engine") == "native"
        assert await admin.get_meta(conn, "missing") is None
        assert await admin.get_meta(conn, "missing", default=7) == 7
        await admin.set_meta(conn, "probe", value)
        assert await admin.get_meta(conn, "probe") == value
        await admin.set_meta(conn, "probe", "just a string")  # upsert replaces
        assert await admin.get_meta(conn, "probe") == "just a string"

    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        # The pool's jsonb codec changes nothing: same values in and out.
        assert await admin.get_meta(pool, "probe") == "just a string"
        await admin.set_meta(pool, "probe", value)
        assert await admin.get_meta(pool, "probe") == value
        meta = await admin.all_meta(pool)
        assert meta["probe"] == value and meta["embedding_model"] == model
        assert meta["embedding_dim"] == settings.embedding_dim
        assert await admin.delete_meta(pool, "probe") is True
        assert await admin.delete_meta(pool, "probe") is False
        assert "probe" not in await admin.all_meta(pool)
    finally:
        await pool.close()
