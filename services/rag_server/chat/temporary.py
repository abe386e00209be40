"""Temporary sessions: answered like any other, never written to the database.

They live in this server process only, by design: a restart (or `chat_temporary_ttl_s` of idleness)
forgets them, and with several server processes each one knows only its own. `TemporarySessions` is
the in-memory `SessionStore` (chat/session_store.py); its messages have no ids. Bounded: at most
`per_key` sessions per API key, and each keeps its newest `max_messages` messages (older exchanges, a
question with its answer, are forgotten: what the history lists is what the LLM can still be shown).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from rag_server.chat.models import (
    ChatMessageOut,
    ChatSession,
    Role,
    Source,
    not_your_session,
    session_not_found,
)
from rag_server.infra.scoped_pool import request_scope
from rag_server.retrieval.models import SearchType


@dataclass
class TemporarySession:
    session: ChatSession
    # The API key that created it. Row-level security guards stored sessions; this one, in memory, is
    # shown only to its own key (and admins), like them.
    owner: UUID | None = field(default_factory=lambda: _caller()[0])
    messages: list[ChatMessageOut] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)

    def visible(self) -> bool:
        key_id, is_admin = _caller()
        return is_admin or self.owner == key_id

    def may_add_turn(self) -> bool:
        """Its own key only (one made without a key: also an admin), as stored sessions (migration 0017)."""
        key_id, is_admin = _caller()
        return self.owner == key_id or (self.owner is None and is_admin)


def _caller() -> tuple[UUID | None, bool]:
    """The current request's key and whether it sees every session (outside a request: the system)."""
    scope = request_scope()
    if scope is None:
        return None, True
    return scope.key_id, scope.role in ("admin", "system")


class TemporarySessions:
    def __init__(self, ttl_s: float, per_key: int, max_messages: int) -> None:
        self.ttl_s = ttl_s
        self.per_key = per_key
        self.max_messages = max_messages  # even (config.py): whole exchanges go, a question with its answer
        self._sessions: dict[UUID, TemporarySession] = {}

    def entry(self, session_id: UUID) -> TemporarySession | None:
        """The live session with this id (its idle clock restarts), or None (also: another key's)."""
        self._expire()
        entry = self._sessions.get(session_id)
        if entry is None or not entry.visible():
            return None
        entry.last_used = time.monotonic()
        return entry

    def holds(self, session_id: UUID) -> bool:
        return self.entry(session_id) is not None

    def _live(self, session_id: UUID) -> TemporarySession:
        entry = self.entry(session_id)
        if entry is None:
            raise session_not_found(session_id)
        return entry

    # --- SessionStore ------------------------------------------------------------------------------

    async def create(
        self, *, title: str | None, search_type: SearchType, llm_model: str | None
    ) -> ChatSession:
        self._expire()
        session = ChatSession.new(
            title=title, search_type=search_type, llm_model=llm_model, is_temporary=True
        )
        self._add(TemporarySession(session))
        return session

    async def get(self, session_id: UUID) -> ChatSession:
        return self._live(session_id).session

    async def update(
        self,
        session_id: UUID,
        *,
        title: str | None,
        is_archived: bool | None,
        search_type: SearchType | None,
    ) -> ChatSession:
        entry = self._live(session_id)
        changes = {"title": title, "is_archived": is_archived, "search_type": search_type}
        update: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        entry.session = entry.session.model_copy(update={**update, "updated_at": datetime.now(UTC)})
        return entry.session

    async def delete(self, session_id: UUID) -> None:
        self._live(session_id)
        del self._sessions[session_id]

    async def history(self, session_id: UUID) -> list[ChatMessageOut]:
        return list(self._live(session_id).messages)

    async def recent(self, session_id: UUID, *, last: int) -> tuple[ChatSession, list[ChatMessageOut]]:
        entry = self._live(session_id)
        if not entry.may_add_turn():
            raise not_your_session(session_id)
        return entry.session, entry.messages[-last:] if last else []

    async def clear(self, session_id: UUID) -> int:
        entry = self._live(session_id)
        count = len(entry.messages)
        entry.messages.clear()
        entry.session = entry.session.model_copy(update={"updated_at": datetime.now(UTC), "message_count": 0})
        return count

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
        if create is not None and session_id not in self._sessions:
            self._add(TemporarySession(create))
        entry = self._live(session_id)
        now = datetime.now(UTC)
        metadata = dict(answer_metadata)
        sources = [Source(**s) for s in metadata.pop("sources", [])]
        entry.messages.append(_message("user", question, [], {}, now))
        entry.messages.append(_message("assistant", answer, sources, metadata, now))
        # The oldest exchanges go (a client looping turns on one session cannot grow the server's memory).
        del entry.messages[: max(0, len(entry.messages) - self.max_messages)]
        update: dict[str, Any] = {
            "updated_at": now,
            "last_active_at": now,
            "message_count": len(entry.messages),
        }
        if entry.session.title is None:
            update["title"] = title_if_missing
        entry.session = entry.session.model_copy(update=update)
        return None

    def _add(self, entry: TemporarySession) -> None:
        """Keep `entry`; its key's least recently used sessions go beyond `per_key` (theirs alone: one
        key's loop never drops another's)."""
        self._sessions[entry.session.id] = entry
        own = sorted(
            (e for e in self._sessions.values() if e.owner == entry.owner), key=lambda e: e.last_used
        )
        for oldest in own[: max(0, len(own) - self.per_key)]:
            del self._sessions[oldest.session.id]

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_s
        for session_id in [k for k, v in self._sessions.items() if v.last_used < cutoff]:
            del self._sessions[session_id]


def _message(
    role: Role, content: str, sources: list[Source], metadata: dict[str, Any], at: datetime
) -> ChatMessageOut:
    return ChatMessageOut(
        id=None, role=role, content=content, sources=sources, metadata=metadata, created_at=at
    )
