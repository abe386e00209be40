"""Temporary sessions: answered like any other, never written to the database.

They live in this server process only, by design: a restart (or `chat_temporary_ttl_s` of idleness)
forgets them, and with several server processes each one knows only its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from rag_server.chat.models import ChatMessageOut, ChatSession, Role, Source
from rag_server.retrieval.models import SearchType


@dataclass
class TemporarySession:
    session: ChatSession
    messages: list[ChatMessageOut] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)


class TemporarySessions:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[UUID, TemporarySession] = {}

    def create(self, *, title: str | None, search_type: SearchType, llm_model: str | None) -> ChatSession:
        self._expire()
        session = ChatSession.new(
            title=title, search_type=search_type, llm_model=llm_model, is_temporary=True
        )
        self._sessions[session.id] = TemporarySession(session)
        return session

    def get(self, session_id: UUID) -> TemporarySession | None:
        self._expire()
        entry = self._sessions.get(session_id)
        if entry is not None:
            entry.last_used = time.monotonic()
        return entry

    def delete(self, session_id: UUID) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def append(
        self,
        entry: TemporarySession,
        *,
        question: str,
        answer: str,
        answer_metadata: dict[str, Any],
        title_if_missing: str | None,
    ) -> None:
        now = datetime.now(UTC)
        metadata = dict(answer_metadata)
        sources = [Source(**s) for s in metadata.pop("sources", [])]
        entry.messages.append(_message("user", question, [], {}, now))
        entry.messages.append(_message("assistant", answer, sources, metadata, now))
        update: dict[str, Any] = {"updated_at": now, "message_count": len(entry.messages)}
        if entry.session.title is None:
            update["title"] = title_if_missing
        entry.session = entry.session.model_copy(update=update)

    def clear(self, entry: TemporarySession) -> int:
        """Forget the session's messages (the session stays); returns how many there were."""
        count = len(entry.messages)
        entry.messages.clear()
        entry.session = entry.session.model_copy(update={"updated_at": datetime.now(UTC), "message_count": 0})
        return count

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
