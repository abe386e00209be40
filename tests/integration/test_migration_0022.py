"""Migration 0022: chat sessions get `last_active_at`, backfilled from their last message (else their
creation), whatever their `updated_at` says (a rename moved it); documents get `name_key`, their name in
natural order, the ones stored before it too. The downgrade drops both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from alembic import command

from rag_server.config import Settings
from rag_server.infra.migrations import alembic_config
from tests.conftest import create_database

REVISION, DOWN_REVISION = "0022_activity_and_name_order", "0021_chat_store_sessions"


def at(day: int) -> datetime:
    return datetime(2026, 1, day, tzinfo=UTC)


async def test_0022_backfills_last_active_at_from_the_messages(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server, "activity")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    try:
        # (title, created, updated: renamed later, its messages' times)
        sessions = [("talked", 1, 9, [2, 3]), ("empty", 4, 8, [])]
        for title, created, updated, messages in sessions:
            session = await conn.fetchval(
                "INSERT INTO chat_sessions (title, created_at, updated_at) VALUES ($1, $2, $3) RETURNING id",
                title,
                at(created),
                at(updated),
            )
            for day in messages:
                await conn.execute(
                    "INSERT INTO chat_messages (session_id, role, content, created_at)"
                    " VALUES ($1, 'user', 'x', $2)",
                    session,
                    at(day),
                )
        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        rows = await conn.fetch("SELECT title, last_active_at, updated_at FROM chat_sessions ORDER BY title")
        assert [tuple(r) for r in rows] == [("empty", at(4), at(8)), ("talked", at(3), at(9))]
        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)
        assert not await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'last_active_at'"
        )
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()


async def test_0022_keys_the_names_stored_before_it_in_natural_order(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server, "namekey")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    try:
        for name in ("v10.txt", "V9.txt", "v009b.txt"):
            await conn.execute(
                "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status)"
                " VALUES ($1, 'txt', 'text/plain', 1, md5($1) || md5($1), 'ready')",
                name,
            )
        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        rows = await conn.fetch("SELECT filename, name_key FROM documents ORDER BY name_key, id")
        assert [tuple(r) for r in rows] == [
            ("V9.txt", "v119.txt"),
            ("v009b.txt", "v119b.txt"),
            ("v10.txt", "v1210.txt"),
        ]
        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)
        assert await conn.fetchval("SELECT to_regclass('documents_filename_idx') IS NOT NULL")
        assert not await conn.fetchval("SELECT to_regproc('rag_name_key') IS NOT NULL")
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()
