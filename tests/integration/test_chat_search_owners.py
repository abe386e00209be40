"""Below GET /chat/sessions?q= (migration 0032), in raw SQL: the SECURITY DEFINER search reads only
the owners the caller may list, its index holds each owner's words apart, messages carry their
session's owner, and no role but the runtime role (and the owner) may call any of our SECURITY
DEFINER functions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.config import Settings
from rag_server.infra.database import as_user, owner_connection
from rag_server.infra.migrations import DEFINER_FUNCTIONS_WHERE
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import DbScope


@pytest.fixture(scope="module")
async def chats(runtime: Runtime) -> dict[str, Any]:
    """Three owners' sessions holding 'budget': two keys' and one made in open mode (no owner)."""
    made: dict[str, Any] = {
        "reader": await keys.create_key(runtime.pool, CreateKey(name="search-reader", role="reader")),
        "other": await keys.create_key(runtime.pool, CreateKey(name="search-other", role="reader")),
        "admin": await keys.create_key(runtime.pool, CreateKey(name="search-admin", role="admin")),
    }
    async with owner_connection(runtime.database_url) as owner:
        for name, key_id in (("reader", made["reader"].id), ("other", made["other"].id), ("open", None)):
            session = await owner.fetchval(
                "INSERT INTO chat_sessions (title, owner_key_id) VALUES ($1, $2) RETURNING id", name, key_id
            )
            await owner.execute(
                "INSERT INTO chat_messages (session_id, role, content) VALUES ($1, 'user', $2)",
                session,
                f"the {name} budget for Zürich",
            )
            made[f"{name}_session"] = session
    return made


@pytest.fixture
async def as_runtime(runtime: Runtime, settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(as_user(runtime.database_url, settings.runtime_db_user))
    try:
        yield conn
    finally:
        await conn.close()


async def holding(conn: asyncpg.Connection, scope: DbScope, word: str, every_owner: bool) -> set[UUID]:
    """What the function alone returns (no row-level security after it), in the scope's settings."""
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('rag.collections', $1, true), set_config('rag.role', $2, true),"
            " set_config('rag.key_id', $3, true)",
            *scope.settings(),
        )
        rows = await conn.fetch("SELECT rag_chat_sessions_holding($1, $2) AS id", word, every_owner)
    return {r["id"] for r in rows}


async def test_the_search_reads_only_the_owners_the_caller_may_list(
    chats: dict[str, Any], as_runtime: asyncpg.Connection
) -> None:
    reader = DbScope(collections=None, role="reader", key_id=chats["reader"].id)
    admin = DbScope(collections=None, role="admin", key_id=chats["admin"].id)
    everyone = {chats["reader_session"], chats["other_session"], chats["open_session"]}
    # A key: its own, even asking for every owner (only an admin may; row-level security would agree).
    assert await holding(as_runtime, reader, "budg", False) == {chats["reader_session"]}
    assert await holding(as_runtime, reader, "budg", True) == {chats["reader_session"]}
    assert await holding(as_runtime, reader, "zurich", False) == {chats["reader_session"]}  # folded
    # An admin: open mode's sessions with its own; every key's on request.
    assert await holding(as_runtime, admin, "budget", False) == {chats["open_session"]}
    assert await holding(as_runtime, admin, "budget", True) == everyone
    # A title is searched like a message; no key and no role: nothing.
    assert await holding(as_runtime, reader, "reader", False) == {chats["reader_session"]}
    nobody = DbScope(collections=(), role="none", key_id=None)
    assert await holding(as_runtime, nobody, "budget", True) == set()


async def test_a_message_carries_its_sessions_owner_and_the_index_its_tag(
    runtime: Runtime, chats: dict[str, Any]
) -> None:
    async with owner_connection(runtime.database_url) as owner:
        rows = await owner.fetch(
            """SELECT m.owner_key_id, s.owner_key_id AS session_owner,
                      rag_chat_words(m.owner_key_id, m.content)::text AS words
               FROM chat_messages m JOIN chat_sessions s ON s.id = m.session_id
               WHERE m.content LIKE '%budget%'"""
        )
    assert len(rows) == 3
    async with owner_connection(runtime.database_url) as owner:  # an INSERT naming another owner
        owner_id = await owner.fetchval(
            "INSERT INTO chat_messages (session_id, role, content, owner_key_id) VALUES ($1, 'user', 'x', $2)"
            " RETURNING owner_key_id",
            chats["reader_session"],
            chats["other"].id,
        )
    assert owner_id == chats["reader"].id
    for row in rows:
        assert row["owner_key_id"] == row["session_owner"]
        tag = "open0000" if row["owner_key_id"] is None else str(row["owner_key_id"])[:8]
        assert f"'{tag}budget'" in row["words"] and f"'{tag}zurich'" in row["words"]


async def test_only_the_runtime_role_may_call_our_security_definer_functions(
    runtime: Runtime, settings: Settings, chats: dict[str, Any], as_runtime: asyncpg.Connection
) -> None:
    """PostgreSQL gives a new function to PUBLIC: any role of a shared cluster could have read every
    key's session ids, or checked key hashes, through them."""
    stranger = f"stranger_{uuid.uuid4().hex[:8]}"
    async with owner_connection(runtime.database_url) as owner:
        functions = await owner.fetch(
            f"""SELECT p.oid::regprocedure::text AS name,
                       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
                       has_function_privilege($1, p.oid, 'EXECUTE') AS runtime
                FROM pg_proc p WHERE {DEFINER_FUNCTIONS_WHERE}""",
            settings.runtime_db_user,
        )
        await owner.execute(f"CREATE ROLE {stranger} LOGIN")
    assert {"rag_authenticate(bytea)", "rag_chat_sessions_holding(text,boolean)"} <= {
        f["name"] for f in functions
    }
    assert [f["name"] for f in functions if f["public"] or not f["runtime"]] == []
    conn = await asyncpg.connect(as_user(runtime.database_url, stranger))
    try:
        for call in ("SELECT rag_chat_sessions_holding('budget', true)", "SELECT rag_keys_exist()"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(call)
    finally:
        await conn.close()
        async with owner_connection(runtime.database_url) as owner:
            await owner.execute(f"DROP ROLE {stranger}")
    assert await as_runtime.fetchval("SELECT rag_keys_exist()") is True
