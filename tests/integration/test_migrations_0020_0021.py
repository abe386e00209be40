"""Migration 0020: the documents stored before it are marked `named_before_paths` (their name is the
file's name alone, decision 0013), those stored after it are not. Migration 0021: the chat sessions a
LlamaIndex chat memory wrote before it are marked `chat_store`, the chat service's are not. Each
downgrade drops its mark."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
from alembic import command

from rag_server.config import Settings
from rag_server.infra.migrations import alembic_config
from tests.conftest import create_database

REVISION, DOWN_REVISION = "0020_names_before_paths", "0019_vectors_in_row"
CHAT_STORE_REVISION = "0021_chat_store_sessions"


async def add_document(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(
        "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status)"
        " VALUES ($1, 'txt', 'text/plain', 1, md5($1) || md5($1), 'ready')",
        name,
    )


async def test_0020_marks_the_documents_stored_before_it_and_not_later_ones(
    pg_server: str, tmp_path: Path
) -> None:
    url = await create_database(pg_server, "names")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    try:
        await add_document(conn, "README.md")
        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        await add_document(conn, "setup/README.md")
        marked = await conn.fetch("SELECT filename, named_before_paths FROM documents ORDER BY filename")
        assert [tuple(r) for r in marked] == [("README.md", True), ("setup/README.md", False)]
        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)
        assert not await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'named_before_paths'"
        )
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()


async def test_0021_marks_the_sessions_a_chat_memory_wrote(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server, "chatstore")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, REVISION)
    conn = await asyncpg.connect(url)
    # A chat service's turn; a chat memory's question and answer (no answer_mode); its lone question.
    sessions = {
        "service": [("user", {}), ("assistant", {"answer_mode": "extractive"})],
        "memory": [("user", {}), ("assistant", {"n": 1})],
        "waiting": [("user", {})],
    }
    try:
        for title, messages in sessions.items():
            session = await conn.fetchval("INSERT INTO chat_sessions (title) VALUES ($1) RETURNING id", title)
            for role, metadata in messages:
                await conn.execute(
                    "INSERT INTO chat_messages (session_id, role, content, metadata)"
                    " VALUES ($1, $2, 'x', $3::jsonb)",
                    session,
                    role,
                    json.dumps(metadata),
                )
        await asyncio.to_thread(command.upgrade, cfg, CHAT_STORE_REVISION)
        marked = await conn.fetch("SELECT title, chat_store FROM chat_sessions ORDER BY title")
        assert [tuple(r) for r in marked] == [("memory", True), ("service", False), ("waiting", True)]
        await asyncio.to_thread(command.downgrade, cfg, REVISION)
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()
