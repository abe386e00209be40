"""One question being answered, carried from resolve through generate to persist (chat/service.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from rag_server.chat.models import (
    AnswerMode,
    ChatMessageOut,
    ChatSession,
    FinishReason,
    QueryRequest,
    Source,
)
from rag_server.chat.session_store import SessionStore
from rag_server.chat.usage import TokenUsage
from rag_server.infra.scoped_pool import ScopedPool
from rag_server.retrieval.models import SearchHit, SearchType


@dataclass
class Turn:
    """One question being answered, from resolve to persist."""

    session: ChatSession
    question: str
    request: QueryRequest
    store: SessionStore
    new_session: bool = False
    history: list[ChatMessageOut] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    condensed_query: str | None = None
    hits: list[SearchHit] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    answer: str = ""
    mode: AnswerMode = "extractive"
    llm_error: str | None = None
    finish_reason: FinishReason = "stop"  # an extractive answer (no LLM, or its fallback): "stop"
    title_task: asyncio.Task[str] | None = None
    message_id: int | None = None
    collection_ids: list[UUID] = field(default_factory=list)  # the retrieval scope, resolved up front
    # A turn of a caller-held conversation (the OpenAI-compatible API): no session is read, titled or
    # written; `persist` must not be called for it.
    unstored: bool = False
    # The caller's system prompt for the answer (chat/prompts.py CALLER_INSTRUCTIONS), cut to fit.
    instructions: str = ""
    # Per-call LLM options (temperature, max_tokens, stop) for the answer, where the LLM accepts them.
    llm_options: dict[str, Any] = field(default_factory=dict)
    # Tokens the LLM reported for this answer (condense + answer calls); empty when it reported none.
    usage: TokenUsage = field(default_factory=TokenUsage)
    # Where its retrieval reads (None: the primary). An unstored turn writes nothing: a read replica may.
    reads: ScopedPool | None = None

    @property
    def search_type(self) -> SearchType:
        return self.request.search_type or self.session.search_type


def elapsed_ms(since: float) -> float:
    """Milliseconds since `since` (a `time.perf_counter()`), as timings_ms reports them."""
    return round((time.perf_counter() - since) * 1000, 3)
