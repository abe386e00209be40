"""Migration 0024: the new files (`job_tasks.new_content`, `new_metadata`) of replacements no retry can
use, kept by a database from before the delete and the swap cleared them, are cleared; a failed
replacement a retry can still queue, and a queued one, keep theirs. The same rows the code clears:
the second test runs the code's delete and swap on the same tasks."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from rag_server.config import Settings
from rag_server.infra.database import as_user, with_database
from rag_server.infra.migrations import MIGRATIONS_DIR, alembic_config, current_revision
from rag_server.ingestion.deletion import delete_documents
from rag_server.ingestion.replacement import swap_in
from tests.conftest import create_database

REVISION, DOWN_REVISION = "0024_stale_replacement_bytes", "0023_bm25_remove_by_chunk"

# name: (document, status, replaces_version, new_content, new_metadata). "live" is at version 3 (a
# replacement of version 2 swapped in), "gone" is deleted, "pending" at version 1.
TASKS: dict[str, tuple[str, str, int | None, bytes | None, dict[str, Any] | None]] = {
    "gone, failed": ("gone", "failed", 1, b"gone failed", {"a": 1}),
    "gone, completed": ("gone", "completed", 1, None, {"b": 2}),  # a swap clears new_content alone
    "gone, queued meanwhile": ("gone", "queued", 1, b"gone queued", None),  # the race fixed with the delete
    "live, failed, version 2": ("live", "failed", 2, b"superseded", {"c": 3}),
    "live, failed, version 1, metadata only": ("live", "failed", 1, None, {"d": 4}),
    "live, completed, version 1": ("live", "completed", 1, None, {"e": 5}),
    "live, failed, version 3": ("live", "failed", 3, b"retry me", {"f": 6}),  # a retry may queue it
    "live, upload failed": ("live", "failed", None, None, None),
    "pending, queued (a retry)": ("pending", "queued", 1, b"being retried", {"g": 7}),
}
# What stays of each task's new file (content, metadata) once no retry can use it.
KEPT = {
    "gone, failed": (None, None),
    "gone, completed": (None, None),
    "gone, queued meanwhile": (None, None),
    "live, failed, version 2": (None, None),
    "live, failed, version 1, metadata only": (None, None),
    "live, completed, version 1": (None, {"e": 5}),
    "live, failed, version 3": (b"retry me", {"f": 6}),
    "live, upload failed": (None, None),
    "pending, queued (a retry)": (b"being retried", {"g": 7}),
}


async def insert_document(conn: asyncpg.Connection, name: str, version: int) -> UUID:
    doc: UUID = await conn.fetchval(
        "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status, version)"
        " VALUES ($1, 'txt', 'text/plain', 1, md5($1) || md5($1), 'ready', $2) RETURNING id",
        name,
        version,
    )
    await conn.execute(
        "INSERT INTO document_files (document_id, content) VALUES ($1, $2)", doc, name.encode()
    )
    return doc


async def insert_tasks(conn: asyncpg.Connection, docs: dict[str, UUID], names: list[str]) -> dict[str, UUID]:
    batch = await conn.fetchval("INSERT INTO job_batches DEFAULT VALUES RETURNING id")
    ids = {}
    for name in names:
        doc, status, replaces, content, metadata = TASKS[name]
        ids[name] = await conn.fetchval(
            "INSERT INTO job_tasks (batch_id, document_id, filename, status, msg_id, replaces_version,"
            " new_content, new_metadata, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $6, $7::jsonb,"
            " '2026-01-02 00:00+00') RETURNING id",
            batch,
            docs[doc],
            f"{doc}.txt",
            status,
            replaces,
            content,
            None if metadata is None else json.dumps(metadata),
        )
    return ids


async def new_files(conn: asyncpg.Connection, ids: dict[str, UUID]) -> dict[str, tuple[Any, Any]]:
    rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, new_content, new_metadata::text AS metadata FROM job_tasks"
            " WHERE id = ANY($1::uuid[])",
            list(ids.values()),
        )
    }
    return {
        name: (rows[i]["new_content"], rows[i]["metadata"] and json.loads(rows[i]["metadata"]))
        for name, i in ids.items()
    }


@pytest.fixture
async def owner_url(pg_server: str) -> AsyncIterator[str]:
    """A database owned by a role that is not a superuser, as in production: migrations run as the
    tables' owner, row-level security on (0004), the extensions created by an administrator first."""
    role, database = f"owner_{uuid.uuid4().hex[:8]}", f"m0024_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw' CREATEROLE")
        conn.execute(f"CREATE DATABASE {database} OWNER {role}")
    with psycopg.connect(with_database(pg_server, database), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    try:
        yield as_user(with_database(pg_server, database), role, "pw")
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


async def test_0024_clears_the_new_files_no_retry_can_use_and_keeps_a_retrys(
    owner_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=owner_url, data_dir=tmp_path)
    cfg = alembic_config(owner_url, settings)
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(owner_url)
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert await conn.fetchval("SELECT relrowsecurity FROM pg_class WHERE oid = 'job_tasks'::regclass")
        # Rows as a server before the fix left them: "gone" deleted with its tasks' files kept, "live"
        # at version 3 with the files of its failed replacements of versions 1 and 2 kept.
        docs = {
            "live": await insert_document(conn, "live.txt", 3),
            "gone": await insert_document(conn, "gone.txt", 1),
            "pending": await insert_document(conn, "pending.txt", 1),
        }
        ids = await insert_tasks(conn, docs, list(TASKS))
        await conn.execute("DELETE FROM documents WHERE id = $1", docs["gone"])
        before = await conn.fetch("SELECT id, status, error, updated_at FROM job_tasks ORDER BY id")

        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        assert await new_files(conn, ids) == KEPT
        # Only the files: statuses and times as they were.
        assert await conn.fetch("SELECT id, status, error, updated_at FROM job_tasks ORDER BY id") == before
        assert await asyncio.to_thread(current_revision, owner_url, settings) == REVISION

        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)  # nothing to undo
        assert await new_files(conn, ids) == KEPT
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()


async def test_the_code_clears_the_same_files_and_leaves_none_for_0024(
    pg_server: str, tmp_path: Path
) -> None:
    """The same tasks through the code: the delete of "gone", then a swap making "live" version 3 (its
    retryable replacement of version 3 is queued after it)."""
    url = await create_database(pg_server, "c0024")
    await asyncio.to_thread(
        command.upgrade, alembic_config(url, Settings(database_url=url, data_dir=tmp_path)), "head"
    )
    conn = await asyncpg.connect(url)
    try:
        docs = {
            "live": await insert_document(conn, "live.txt", 2),
            "gone": await insert_document(conn, "gone.txt", 1),
            "pending": await insert_document(conn, "pending.txt", 1),
        }
        ids = await insert_tasks(conn, docs, [n for n in TASKS if n != "live, failed, version 3"])
        assert await delete_documents(conn, [docs["gone"]]) == [docs["gone"]]
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM documents WHERE id = $1 FOR UPDATE", docs["live"])
            assert (
                await swap_in(conn, docs["live"], b"version 3", "live.txt", "txt", "text/plain", None) is None
            )
        assert await conn.fetchval("SELECT version FROM documents WHERE id = $1", docs["live"]) == 3
        ids |= await insert_tasks(conn, docs, ["live, failed, version 3"])

        assert await new_files(conn, ids) == KEPT
        migration = ScriptDirectory(str(MIGRATIONS_DIR)).get_revision(REVISION).module
        assert await conn.execute(migration.UPGRADE) == "UPDATE 0"
    finally:
        await conn.close()
