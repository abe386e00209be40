"""One interface for where a chat session lives: PostgreSQL (stored) or process memory (temporary).

ChatService picks the store once per call and then speaks only this protocol. Both implementations
raise NotFoundError for an unknown session id and keep history in message order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar
from uuid import UUID

from rag_server.chat import session_listing, sessions
from rag_server.chat.models import ChatMessageOut, ChatSession, external_session_uuid, not_your_session
from rag_server.infra.scoped_pool import ScopedPool, request_scope
from rag_server.retrieval.models import SearchType

T = TypeVar("T")


class SessionStore(Protocol):
    async def create(
        self, *, title: str | None, search_type: SearchType, llm_model: str | None
    ) -> ChatSession:
        """A new empty session."""
        ...

    async def get(self, session_id: UUID) -> ChatSession: ...

    async def update(
        self,
        session_id: UUID,
        *,
        title: str | None,
        is_archived: bool | None,
        search_type: SearchType | None,
    ) -> ChatSession:
        """Change the given fields (None leaves a field as is)."""
        ...

    async def delete(self, session_id: UUID) -> None:
        """The session and its messages."""
        ...

    async def history(self, session_id: UUID) -> list[ChatMessageOut]:
        """Every message in order, sources of deleted documents marked where the store can tell."""
        ...

    async def recent(self, session_id: UUID, *, last: int) -> tuple[ChatSession, list[ChatMessageOut]]:
        """The session and its `last` messages in order (0: none), what an answer needs. ForbiddenError
        when the caller may see the session but not answer in it (another key's, seen by an admin)."""
        ...

    async def clear(self, session_id: UUID) -> int:
        """Delete the messages, keep the session; returns how many there were."""
        ...

    async def append_exchange(
        self,
        session_id: UUID,
        *,
        question: str,
        answer: str,
        answer_metadata: dict[str, Any],
        title_if_missing: str | None,
        create: ChatSession | None = None,
    ) -> int | None:
        """Add a question and its answer together; returns the answer's message id (None: no ids).

        `create`: the session does not exist yet and is created with them (POST /query without id).
        """
        ...


class PostgresSessionStore:
    """Stored sessions (chat/sessions.py SQL on the runtime's pool)."""

    def __init__(self, pool: ScopedPool) -> None:
        self.pool = pool
        # Shielded writes still running after their request was cancelled (kept from the GC).
        self._pending_writes: set[asyncio.Task[Any]] = set()

    async def drain(self) -> None:
        """Wait for answer writes that outlived their request, so shutdown loses none of them."""
        if self._pending_writes:
            await asyncio.gather(*self._pending_writes, return_exceptions=True)

    async def create(
        self,
        *,
        title: str | None,
        search_type: SearchType,
        llm_model: str | None,
        session_id: UUID | None = None,
        external_id: str | None = None,
    ) -> ChatSession:
        return await sessions.create_session(
            self.pool,
            title=title,
            search_type=search_type,
            llm_model=llm_model,
            session_id=session_id,
            external_id=external_id,
        )

    async def find_external(self, external_id: str) -> UUID:
        """Client-chosen ids name stored sessions only (temporary ones take none)."""
        return await sessions.find_external(self.pool, external_id)

    async def get(self, session_id: UUID) -> ChatSession:
        return await sessions.get_session(self.pool, session_id)

    async def list_sessions(
        self,
        *,
        limit: int,
        offset: int,
        include_archived: bool,
        every_owner: bool,
        only_archived: bool = False,
        words: str | None = None,
    ) -> tuple[list[ChatSession], int]:
        """Only stored sessions can be listed (temporary ones belong to one client)."""
        return await session_listing.list_sessions(
            self.pool,
            limit=limit,
            offset=offset,
            include_archived=include_archived,
            every_owner=every_owner,
            only_archived=only_archived,
            words=words,
        )

    async def update(
        self,
        session_id: UUID,
        *,
        title: str | None,
        is_archived: bool | None,
        search_type: SearchType | None,
    ) -> ChatSession:
        return await sessions.update_session(
            self.pool, session_id, title=title, is_archived=is_archived, search_type=search_type
        )

    async def delete(self, session_id: UUID) -> None:
        await sessions.delete_session(self.pool, session_id)

    async def history(self, session_id: UUID) -> list[ChatMessageOut]:
        return await sessions.list_messages(self.pool, session_id)

    async def recent(self, session_id: UUID, *, last: int) -> tuple[ChatSession, list[ChatMessageOut]]:
        session = await sessions.get_session(self.pool, session_id)
        if not await sessions.may_add_turn(self.pool, session_id):
            raise not_your_session(session_id)
        history = await sessions.recent_messages(self.pool, session.id, last=last) if last else []
        return session, history

    async def clear(self, session_id: UUID) -> int:
        return await sessions.clear_messages(self.pool, session_id)

    async def append_exchange(
        self,
        session_id: UUID,
        *,
        question: str,
        answer: str,
        answer_metadata: dict[str, Any],
        title_if_missing: str | None,
        create: ChatSession | None = None,
    ) -> int | None:
        """One transaction under the session row lock, shielded: a cancelled request still completes it."""
        _, assistant_id = await self.shielded(
            sessions.append_exchange(
                self.pool,
                session_id,
                question=question,
                answer=answer,
                answer_metadata=answer_metadata,
                title_if_missing=title_if_missing,
                create=create,
            )
        )
        return assistant_id

    async def shielded(self, write: Coroutine[Any, Any, T]) -> T:
        """Run `write` to its end even when the caller is cancelled (`drain` waits for it): a complete
        answer is stored whole or not at all (also a stored /v1 response's)."""
        task = asyncio.create_task(write)
        self._pending_writes.add(task)
        task.add_done_callback(self._pending_writes.discard)
        return await asyncio.shield(task)


def external_session_id(external_id: str | None) -> UUID | None:
    """The id the calling key's session with this external id has (None: no external id, a random id)."""
    if external_id is None:
        return None
    scope = request_scope()
    return external_session_uuid(scope.key_id if scope is not None else None, external_id)
