"""`migrations.migrate`, which every CLI command, worker and runtime opens the database through, runs
Alembic only when a run would change something: a database at head whose runtime role has its grants
is not migrated again (no migration lock is waited for), one missing a grant is, and so is one another
process is migrating at that moment (it waits for that process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from rag_server.config import Settings
from rag_server.infra.migrations import ADVISORY_LOCK_KEY, migrate
from rag_server.infra.runtime import Runtime


async def _holding(settings: Settings, lock: str) -> AsyncIterator[asyncpg.Connection]:
    holder = await asyncpg.connect(settings.database_url)
    await holder.execute(f"SELECT {lock}($1)", ADVISORY_LOCK_KEY)
    try:
        yield holder
    finally:
        await holder.close()


@pytest.fixture
async def migration_lock(runtime: Runtime, settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """Another process migrating: it holds the migration lock until the test lets it go."""
    async for holder in _holding(settings, "pg_advisory_lock"):
        yield holder


@pytest.fixture
async def checking_lock(runtime: Runtime, settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """Another process checking whether to migrate: it holds the migration lock shared, which lets a
    check through but keeps Alembic (it takes the lock exclusively) waiting until the test lets it go."""
    async for holder in _holding(settings, "pg_advisory_lock_shared"):
        yield holder


async def holds(settings: Settings, privilege: str) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return bool(await conn.fetchval(f"SELECT {privilege.format(role=settings.runtime_db_user)}"))
    finally:
        await conn.close()


async def test_a_database_at_head_is_not_migrated_again(
    settings: Settings, checking_lock: asyncpg.Connection
) -> None:
    async with asyncio.timeout(30):  # Alembic would wait for the lock for ever
        await migrate(settings.database_url or "", settings)


async def test_a_database_being_migrated_is_waited_for(
    settings: Settings, migration_lock: asyncpg.Connection
) -> None:
    """At head, but a newer version may be changing it: what it leaves decides (here: nothing)."""
    migrating = asyncio.create_task(migrate(settings.database_url or "", settings))
    done, _ = await asyncio.wait({migrating}, timeout=2)
    assert not done, "it started on a schema another process was migrating"
    await migration_lock.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    async with asyncio.timeout(60):
        await migrating


@pytest.mark.parametrize(
    ("drift", "privilege", "held_after"),
    [
        ("REVOKE INSERT ON chunks FROM {role}", "has_table_privilege('{role}', 'chunks', 'INSERT')", True),
        (
            "GRANT INSERT ON alembic_version TO {role}",
            "has_table_privilege('{role}', 'alembic_version', 'INSERT')",
            False,
        ),
        (
            "GRANT EXECUTE ON FUNCTION rag_authenticate(bytea) TO PUBLIC",
            "has_function_privilege('public', 'rag_authenticate(bytea)', 'EXECUTE')",
            False,
        ),
        (
            "REVOKE EXECUTE ON FUNCTION rag_key_is_live() FROM {role}",
            "has_function_privilege('{role}', 'rag_key_is_live()', 'EXECUTE')",
            True,
        ),
    ],
    ids=[
        "a-grant-revoked",
        "alembic_version-granted",
        "a-definer-function-public",
        "a-definer-function-revoked",
    ],
)
async def test_grants_that_drifted_make_it_migrate(
    settings: Settings, checking_lock: asyncpg.Connection, drift: str, privilege: str, held_after: bool
) -> None:
    await checking_lock.execute(drift.format(role=settings.runtime_db_user))
    assert await holds(settings, privilege) is not held_after
    migrating = asyncio.create_task(migrate(settings.database_url or "", settings))
    done, _ = await asyncio.wait({migrating}, timeout=2)
    assert not done, "it did not wait for the migration lock: Alembic did not run"
    await checking_lock.execute("SELECT pg_advisory_unlock_shared($1)", ADVISORY_LOCK_KEY)
    async with asyncio.timeout(60):
        await migrating
    assert await holds(settings, privilege) is held_after
