"""A LlamaIndex chat store over our chat_sessions / chat_messages tables (asyncpg, async-native).

The key is a chat session id (UUID string); adding a message under an unknown key creates a bare
session, so `ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key=str(uuid4()))` just works.
Roles are limited to system / user / assistant (the table's CHECK); other roles raise ValueError.

The sync methods exist because LlamaIndex calls them (ChatMemoryBuffer.aget runs `get` in a worker
thread): they hand the coroutine to the event loop that owns the pool and wait for it. Calling them
ON that loop would deadlock, so that raises a RuntimeError naming the async method to use.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.storage.chat_store.base import BaseChatStore
from pydantic import PrivateAttr

from rag_server.chat import sessions
from rag_server.infra.database import transaction
from rag_server.infra.scoped_pool import ScopedPool

T = TypeVar("T")

_ROLES = {MessageRole.SYSTEM, MessageRole.USER, MessageRole.ASSISTANT}


def _session_id(key: str) -> UUID:
    try:
        return UUID(str(key))
    except ValueError as exc:
        raise ValueError(f"chat store keys are chat session ids (UUIDs), got {key!r}") from exc


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """additional_kwargs may hold arbitrary objects; keep what survives a JSON round trip."""
    safe: dict[str, Any] = {}
    for name, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        safe[name] = value
    return safe


def _to_row(message: ChatMessage) -> tuple[str, str, dict[str, Any]]:
    role = MessageRole(message.role)
    if role not in _ROLES:
        raise ValueError(f"chat_messages stores system/user/assistant messages only, not {role.value!r}")
    return role.value, message.content or "", _json_safe(dict(message.additional_kwargs))


def _from_row(row: asyncpg.Record) -> ChatMessage:
    return ChatMessage(
        role=MessageRole(row["role"]), content=row["content"], additional_kwargs=dict(row["metadata"] or {})
    )


class PostgresChatStore(BaseChatStore):
    """Async chat store on the application's asyncpg pool. Create it inside the running loop."""

    _pool: ScopedPool = PrivateAttr()
    _loop: asyncio.AbstractEventLoop = PrivateAttr()

    def __init__(self, pool: ScopedPool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool = pool
        self._loop = asyncio.get_running_loop()

    @classmethod
    def class_name(cls) -> str:
        return "PostgresChatStore"

    # --- async (native) ---------------------------------------------------------------------------

    async def aget_messages(self, key: str, **kwargs: Any) -> list[ChatMessage]:
        rows = await sessions.raw_messages(self._pool, _session_id(key))
        return [_from_row(r) for r in rows]

    async def async_add_message(self, key: str, message: ChatMessage, **kwargs: Any) -> None:
        session_id = _session_id(key)
        role, content, metadata = _to_row(message)
        async with transaction(self._pool) as conn:
            await sessions.ensure_session(conn, session_id)
            await sessions.insert_message(conn, session_id, role, content, metadata)  # type: ignore[arg-type]
            await sessions.touch_session(conn, session_id, activity=True)

    async def aset_messages(self, key: str, messages: list[ChatMessage], **kwargs: Any) -> None:
        session_id = _session_id(key)
        rows = [_to_row(m) for m in messages]  # validate all before deleting anything
        async with transaction(self._pool) as conn:
            await sessions.ensure_session(conn, session_id)
            await sessions.lock_session(conn, session_id)
            await sessions.delete_messages(conn, session_id)
            for role, content, metadata in rows:
                await sessions.insert_message(conn, session_id, role, content, metadata)  # type: ignore[arg-type]
            await sessions.touch_session(conn, session_id, activity=bool(rows))

    async def adelete_messages(self, key: str, **kwargs: Any) -> list[ChatMessage] | None:
        """Delete every message of the session (the session itself stays); returns them."""
        return await self._delete(key, lambda rows: rows)

    async def adelete_message(self, key: str, idx: int, **kwargs: Any) -> ChatMessage | None:
        deleted = await self._delete(key, lambda rows: rows[idx : idx + 1] if 0 <= idx < len(rows) else [])
        return deleted[0] if deleted else None

    async def adelete_last_message(self, key: str, **kwargs: Any) -> ChatMessage | None:
        deleted = await self._delete(key, lambda rows: rows[-1:])
        return deleted[0] if deleted else None

    async def aget_keys(self, **kwargs: Any) -> list[str]:
        return [str(i) for i in await sessions.session_ids(self._pool)]

    async def _delete(self, key: str, pick: Any) -> list[ChatMessage] | None:
        session_id = _session_id(key)
        async with transaction(self._pool) as conn:
            rows = await sessions.raw_messages(conn, session_id)
            chosen = pick(list(rows))
            if not chosen:
                return None
            await sessions.delete_message_ids(conn, [r["id"] for r in chosen])
            await sessions.touch_session(conn, session_id, activity=False)
        return [_from_row(r) for r in chosen]

    # --- sync (delegates to the pool's loop) ------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], async_name: str) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError(
                f"PostgresChatStore: a sync call inside its own event loop would block it; "
                f"use `await store.{async_name}(...)`"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def get_messages(self, key: str, **kwargs: Any) -> list[ChatMessage]:
        return self._run(self.aget_messages(key), "aget_messages")

    def add_message(self, key: str, message: ChatMessage, **kwargs: Any) -> None:
        self._run(self.async_add_message(key, message), "async_add_message")

    def set_messages(self, key: str, messages: list[ChatMessage], **kwargs: Any) -> None:
        self._run(self.aset_messages(key, messages), "aset_messages")

    def delete_messages(self, key: str, **kwargs: Any) -> list[ChatMessage] | None:
        return self._run(self.adelete_messages(key), "adelete_messages")

    def delete_message(self, key: str, idx: int, **kwargs: Any) -> ChatMessage | None:
        return self._run(self.adelete_message(key, idx), "adelete_message")

    def delete_last_message(self, key: str, **kwargs: Any) -> ChatMessage | None:
        return self._run(self.adelete_last_message(key), "adelete_last_message")

    def get_keys(self, **kwargs: Any) -> list[str]:
        return self._run(self.aget_keys(), "aget_keys")
