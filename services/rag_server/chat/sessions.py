"""SQL for chat sessions and messages (tables from migration 0001). History is ordered by message id.

A question and its answer are written together, in one transaction holding the session row lock
(SELECT ... FOR UPDATE): concurrent answers on one session land as adjacent user/assistant pairs, and
an answer that never completed leaves nothing behind.

Every function takes `conn: Executor` first: a pool runs it on a pooled connection (its own transaction
where it needs one), a connection joins the caller's transaction.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from rag_server.chat.models import ChatMessageOut, ChatSession, Role, Source, session_not_found
from rag_server.errors import ConflictError, ForbiddenError
from rag_server.infra.database import Executor, connection, transaction
from rag_server.retrieval.models import SearchType

SESSION_COLUMNS = """
    s.id, s.external_id, s.title, s.llm_model, s.search_type, s.is_archived, s.is_temporary, s.created_at,
    s.updated_at, s.last_active_at,
    (SELECT count(*) FROM chat_messages m WHERE m.session_id = s.id) AS message_count
"""


def as_session(row: asyncpg.Record) -> ChatSession:
    return ChatSession(**dict(row))


async def create_session(
    conn: Executor,
    *,
    title: str | None,
    search_type: SearchType,
    llm_model: str | None,
    session_id: UUID | None = None,
    external_id: str | None = None,
) -> ChatSession:
    """A new empty session (id: given or generated). ConflictError if the owner already has one with
    this external id (an untargeted ON CONFLICT: the id and the (owner, external_id) index alike)."""
    row = await conn.fetchrow(
        f"""
        WITH s AS (
            INSERT INTO chat_sessions (id, title, search_type, llm_model, external_id)
            VALUES (coalesce($1, gen_random_uuid()), $2, $3, $4, $5)
            ON CONFLICT DO NOTHING
            RETURNING *
        )
        SELECT {SESSION_COLUMNS} FROM s
        """,
        session_id,
        title,
        search_type,
        llm_model,
        external_id,
    )
    if row is None:
        raise ConflictError(f"a chat session with external_id {external_id!r} already exists")
    return as_session(row)


# The caller's own sessions: its key's, and for an admin those made in open mode (no owner, before the
# first key: an admin may continue them, decision 0010), so they do not vanish when keys arrive.
OWN = "(s.owner_key_id IS NOT DISTINCT FROM rag_key_id() OR (s.owner_key_id IS NULL AND rag_is_admin()))"


async def find_external(conn: Executor, external_id: str) -> UUID:
    """The id of the caller's own session with this external id (an admin's too: never another key's,
    though row-level security would show it), else, for an admin, the one made under it in open mode
    (before the first key; an admin may continue those, decision 0010), so a client that keeps its
    session id across the switch to keys keeps its history. NotFoundError if there is none."""
    session_id = await conn.fetchval(
        f"""
        SELECT id FROM chat_sessions s
        WHERE external_id = $1 AND {OWN}
        ORDER BY owner_key_id IS NULL
        LIMIT 1
        """,
        external_id,
    )
    if session_id is None:
        raise session_not_found(external_id)
    return session_id


async def get_session(conn: Executor, session_id: UUID) -> ChatSession:
    row = await conn.fetchrow(f"SELECT {SESSION_COLUMNS} FROM chat_sessions s WHERE s.id = $1", session_id)
    if row is None:
        raise session_not_found(session_id)
    return as_session(row)


async def update_session(
    conn: Executor,
    session_id: UUID,
    *,
    title: str | None = None,
    is_archived: bool | None = None,
    search_type: SearchType | None = None,
) -> ChatSession:
    """Rename / archive / unarchive / change the default search type; None leaves a field as is.
    `updated_at` moves, `last_active_at` (the order of recent chats) does not: an edit is no activity."""
    row = await conn.fetchrow(
        f"""
        WITH s AS (
            UPDATE chat_sessions
            SET title = coalesce($2, title),
                is_archived = coalesce($3, is_archived),
                search_type = coalesce($4, search_type),
                updated_at = now()
            WHERE id = $1
            RETURNING *
        )
        SELECT {SESSION_COLUMNS} FROM s
        """,
        session_id,
        title,
        is_archived,
        search_type,
    )
    if row is None:
        raise session_not_found(session_id)
    return as_session(row)


async def delete_session(conn: Executor, session_id: UUID) -> None:
    """Messages go with it (ON DELETE CASCADE)."""
    status = await conn.execute("DELETE FROM chat_sessions WHERE id = $1", session_id)
    if status == "DELETE 0":
        raise session_not_found(session_id)


async def clear_messages(conn: Executor, session_id: UUID) -> int:
    """Delete every message of a session, keep the session. Returns how many were deleted. An edit, no
    activity: `updated_at` moves, `last_active_at` does not."""
    async with transaction(conn) as c:
        await lock_session(c, session_id)
        deleted = await delete_messages(c, session_id)
        await c.execute("UPDATE chat_sessions SET updated_at = now() WHERE id = $1", session_id)
    return deleted


async def delete_messages(conn: Executor, session_id: UUID) -> int:
    status = await conn.execute("DELETE FROM chat_messages WHERE session_id = $1", session_id)
    return int(status.split()[-1])


async def lock_session(conn: Executor, session_id: UUID) -> None:
    """SELECT ... FOR UPDATE of the session row (orders writers of one session); NotFoundError if none.

    Only meaningful inside a transaction: the lock is held until it ends.
    """
    found = await conn.fetchval("SELECT true FROM chat_sessions WHERE id = $1 FOR UPDATE", session_id)
    if not found:
        raise session_not_found(session_id)


def _message(row: asyncpg.Record) -> ChatMessageOut:
    metadata: dict[str, Any] = dict(row["metadata"] or {})
    sources = [Source(**s) for s in metadata.pop("sources", [])]
    return ChatMessageOut(
        id=row["id"],
        role=row["role"],
        content=row["content"],
        sources=sources,
        metadata=metadata,
        created_at=row["created_at"],
    )


async def list_messages(conn: Executor, session_id: UUID) -> list[ChatMessageOut]:
    """A session's messages in order. Raises NotFoundError for an unknown session.

    Sources whose document no longer exists get `document_deleted=True`, those whose document has been
    replaced since `stale=True` (and its `current_version`); the persisted excerpt keeps old answers
    readable.
    """
    async with connection(conn) as c:
        await get_session(c, session_id)
        messages = await recent_messages(c, session_id, last=None)
        await _mark_cited_documents(c, messages)
    return messages


async def recent_messages(conn: Executor, session_id: UUID, *, last: int | None) -> list[ChatMessageOut]:
    """The `last` n messages (None: all) in order; no existence check (the caller has the session)."""
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT id, role, content, metadata, created_at FROM chat_messages
            WHERE session_id = $1 ORDER BY id DESC LIMIT $2
        ) m ORDER BY id
        """,
        session_id,
        last,
    )
    return [_message(r) for r in rows]


async def _mark_cited_documents(conn: Executor, messages: list[ChatMessageOut]) -> None:
    cited = {s.document_id for m in messages for s in m.sources}
    if not cited:
        return
    rows = await conn.fetch("SELECT id, version FROM documents WHERE id = ANY($1::uuid[])", list(cited))
    versions = {r["id"]: r["version"] for r in rows}
    for message in messages:
        for source in message.sources:
            current = versions.get(source.document_id)
            source.document_deleted = current is None
            source.current_version = current
            cited_version = source.document_version
            source.stale = current is not None and cited_version is not None and cited_version != current


async def may_add_turn(conn: Executor, session_id: UUID) -> bool:
    """Whether the caller may add messages to this session: its own key's, and that key not revoked
    (migration 0017's function, which the INSERT policy on chat_messages applies too)."""
    return bool(await conn.fetchval("SELECT rag_may_add_turn($1)", session_id))


async def append_exchange(
    conn: Executor,
    session_id: UUID,
    *,
    question: str,
    answer: str,
    answer_metadata: dict[str, Any],
    title_if_missing: str | None,
    create: ChatSession | None = None,
) -> tuple[int, int]:
    """Persist a question and its answer atomically; returns (user message id, assistant message id).

    `create`: the session is new (POST /query without a session id) and is inserted in the same
    transaction, so an answer that never completes leaves no empty session behind either.
    The session row lock orders concurrent writers: the later one waits and gets the higher ids.
    ForbiddenError: the key was revoked since the answer started (the policy refuses its messages).
    """
    try:
        async with transaction(conn) as c:
            if create is not None:
                await c.execute(
                    """
                    INSERT INTO chat_sessions (id, title, search_type, llm_model, external_id)
                    VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT DO NOTHING
                    """,
                    session_id,
                    create.title,
                    create.search_type,
                    create.llm_model,
                    create.external_id,
                )
            await lock_session(c, session_id)
            user_id = await insert_message(c, session_id, "user", question, {})
            assistant_id = await insert_message(c, session_id, "assistant", answer, answer_metadata)
            await c.execute(
                """
                UPDATE chat_sessions
                SET updated_at = now(), last_active_at = now(), title = coalesce(title, $2)
                WHERE id = $1
                """,
                session_id,
                title_if_missing,
            )
    except asyncpg.InsufficientPrivilegeError:
        raise ForbiddenError(
            "the answer was not saved: its API key was revoked, or may not write to this session"
        ) from None
    return user_id, assistant_id


async def insert_message(
    conn: Executor,
    session_id: UUID,
    role: Role,
    content: str,
    metadata: dict[str, Any],
) -> int:
    message_id = await conn.fetchval(
        """
        INSERT INTO chat_messages (session_id, role, content, metadata)
        VALUES ($1, $2, $3, $4) RETURNING id
        """,
        session_id,
        role,
        content,
        metadata,
    )
    return int(message_id)


async def ensure_session(conn: Executor, session_id: UUID) -> None:
    """Create a bare session with this id when missing (the LlamaIndex chat store adds by key), and mark
    it a chat memory's, also one the chat service made: a memory writes a message at a time (`rag-server
    check` allows it a lone question)."""
    await conn.execute(
        """
        INSERT INTO chat_sessions (id, chat_store) VALUES ($1, true)
        ON CONFLICT (id) DO UPDATE SET chat_store = true WHERE NOT chat_sessions.chat_store
        """,
        session_id,
    )


async def touch_session(conn: Executor, session_id: UUID, *, activity: bool) -> None:
    """A chat memory changed the session's messages: `updated_at` moves; with `activity` (a message
    written, not only deleted) `last_active_at` too, so the session rises in the recent chats."""
    await conn.execute(
        "UPDATE chat_sessions SET updated_at = now(),"
        " last_active_at = CASE WHEN $2 THEN now() ELSE last_active_at END WHERE id = $1",
        session_id,
        activity,
    )


async def session_ids(conn: Executor) -> list[UUID]:
    rows = await conn.fetch("SELECT id FROM chat_sessions ORDER BY created_at, id")
    return [r["id"] for r in rows]


async def raw_messages(conn: Executor, session_id: UUID) -> list[asyncpg.Record]:
    """id, role, content, metadata of a session's messages in order (no existence check)."""
    return await conn.fetch(
        "SELECT id, role, content, metadata FROM chat_messages WHERE session_id = $1 ORDER BY id",
        session_id,
    )


async def delete_message_ids(conn: Executor, ids: list[int]) -> None:
    await conn.execute("DELETE FROM chat_messages WHERE id = ANY($1::bigint[])", ids)
