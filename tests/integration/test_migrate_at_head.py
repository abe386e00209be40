"""`migrations.migrate`, which every CLI command, worker and runtime opens the database through, runs
Alembic only when a run would change something: a database at head whose runtime role has its grants
is not migrated again (no migration lock is waited for), one missing a grant is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from rag_server.config import Settings
from rag_server.infra.migrations import ADVISORY_LOCK_KEY, migrate
from rag_server.infra.runtime import Runtime


@pytest.fixture
async def migration_lock(runtime: Runtime, settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """Another process migrating: it holds the migration lock until the test lets it go."""
    holder = await asyncpg.connect(settings.database_url)
    await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        yield holder
    finally:
        await holder.close()


async def can_insert(settings: Settings, table: str) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT has_table_privilege($1, $2, 'INSERT')", settings.runtime_db_user, table
            )
        )
    finally:
        await conn.close()


async def test_a_database_at_head_is_not_migrated_again(
    settings: Settings, migration_lock: asyncpg.Connection
) -> None:
    async with asyncio.timeout(30):  # Alembic would wait for the lock for ever
        await migrate(settings.database_url or "", settings)


@pytest.mark.parametrize(
    ("drift", "table", "runtime_may_insert"),
    [
        ("REVOKE INSERT ON chunks FROM {role}", "chunks", True),
        ("GRANT INSERT ON alembic_version TO {role}", "alembic_version", False),
    ],
    ids=["a-grant-revoked", "alembic_version-granted"],
)
async def test_grants_that_drifted_make_it_migrate(
    settings: Settings, migration_lock: asyncpg.Connection, drift: str, table: str, runtime_may_insert: bool
) -> None:
    await migration_lock.execute(drift.format(role=settings.runtime_db_user))
    assert await can_insert(settings, table) is not runtime_may_insert
    migrating = asyncio.create_task(migrate(settings.database_url or "", settings))
    done, _ = await asyncio.wait({migrating}, timeout=2)
    assert not done, "it did not wait for the migration lock: Alembic did not run"
    await migration_lock.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    async with asyncio.timeout(60):
        await migrating
    assert await can_insert(settings, table) is runtime_may_insert
