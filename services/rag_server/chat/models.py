"""Chat types shared by the API, the service and the chat store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from rag_server.collections.models import CollectionRef
from rag_server.errors import NotFoundError
from rag_server.retrieval.models import SearchFilters, SearchType
from rag_server.text import CleanText

Role = Literal["system", "user", "assistant"]
AnswerMode = Literal["llm", "extractive"]


class Source(BaseModel):
    """One retrieved passage an answer may cite as [n]. Persisted in chat_messages.metadata."""

    n: int
    chunk_id: int
    document_id: UUID
    document_name: str
    page: int | None = None
    excerpt: str
    score: float
    # Set when history is read: the cited document has since been deleted (the excerpt stays).
    document_deleted: bool = False


class ChatSession(BaseModel):
    id: UUID
    title: str | None
    llm_model: str | None
    search_type: SearchType
    is_archived: bool
    is_temporary: bool
    created_at: datetime
    updated_at: datetime
    message_count: int = 0

    @classmethod
    def new(
        cls, *, title: str | None, search_type: SearchType, llm_model: str | None, is_temporary: bool
    ) -> ChatSession:
        """A session not yet written anywhere: fresh id, no messages, created now."""
        now = datetime.now(UTC)
        return cls(
            id=uuid.uuid4(),
            title=title,
            llm_model=llm_model,
            search_type=search_type,
            is_archived=False,
            is_temporary=is_temporary,
            created_at=now,
            updated_at=now,
        )


class ChatMessageOut(BaseModel):
    id: int | None  # None for messages of a temporary session (never stored)
    role: Role
    content: str
    sources: list[Source] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class QueryRequest(BaseModel):
    query: CleanText = Field(min_length=1, max_length=20_000)
    session_id: UUID | None = None
    # None: the session's search type.
    search_type: SearchType | None = None
    top_k: int = Field(default=5, ge=1, le=50)
    filters: SearchFilters | None = None
    # Scopes this question's retrieval only; the session stores nothing about it.
    collections: list[CollectionRef] | None = Field(
        default=None, min_length=1, max_length=100, description="Names or ids; default: ['default']."
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must not be blank")
        return value


class QueryResponse(BaseModel):
    answer: str
    answer_mode: AnswerMode
    sources: list[Source]
    session_id: UUID
    message_id: int | None  # the persisted assistant message; None for temporary sessions
    timings_ms: dict[str, float]
    # Present when an LLM is configured but failed: the answer is the extractive fallback.
    llm_error: str | None = None
    # The standalone question used for retrieval when a follow-up was condensed.
    condensed_query: str | None = None


def session_not_found(session_id: UUID | str) -> NotFoundError:
    """The one 404 of both session stores (stored and temporary): same text whichever store looked."""
    return NotFoundError(f"chat session {session_id} not found")
