"""Chat: sessions, history and grounded answers (retrieval always; the LLM is optional).

One answer goes through three steps, shared by POST /query and POST /query/stream:
  resolve  - find the session (404 before any streaming starts) and read recent history
  generate - condense a follow-up (LLM only), retrieve, then stream the answer: LLM tokens, or the
             extractive answer; an LLM failure at any point falls back to extractive + `llm_error`
  persist  - only once the answer is complete: question + answer in ONE transaction. A client that
             disconnects earlier cancels the generator, so nothing is written at all. Once the answer is
             complete the write is shielded from cancellation: it is either fully stored or not at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any
from uuid import UUID

from llama_index.core.llms import LLM

from rag_server.chat.answer import (
    EXTRACTIVE_HEADER,
    FALLBACK_HEADER,
    LLMFailure,
    condense_question,
    extractive_answer,
    fallback_title,
    llm_title,
)
from rag_server.chat.citations import CitationFilter
from rag_server.chat.llm_stream import StreamEnd, stream
from rag_server.chat.models import (
    ChatMessageOut,
    ChatSession,
    QueryRequest,
    QueryResponse,
    SessionRef,
)
from rag_server.chat.prompts import answer_messages, fitting_sources
from rag_server.chat.session_store import PostgresSessionStore, SessionStore, external_session_id
from rag_server.chat.sources import find_sources
from rag_server.chat.temporary import TemporarySessions
from rag_server.chat.turn import Turn, elapsed_ms
from rag_server.collections.store import resolve_ids
from rag_server.errors import InvalidInputError, NotFoundError
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import ScopedPool
from rag_server.retrieval.models import SearchType

logger = logging.getLogger(__name__)


class ChatService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.temporary = TemporarySessions(
            self.settings.chat_temporary_ttl_s,
            self.settings.chat_temporary_per_key,
            self.settings.chat_temporary_messages,
        )
        self.stored = PostgresSessionStore(runtime.pool)

    async def drain(self) -> None:
        """Wait for answer writes that outlived their request, so shutdown loses none of them."""
        await self.stored.drain()

    def _stored(self, reads: ScopedPool | None) -> PostgresSessionStore:
        """Stored sessions, read from `reads` (a replica's pool) when given."""
        return self.stored if reads is None else PostgresSessionStore(reads)

    async def locate(self, ref: SessionRef, reads: ScopedPool | None = None) -> tuple[SessionStore, UUID]:
        """(the store, the session's id) for a UUID or a client-chosen external id (NotFoundError).
        `reads`: for a read-only call, the pool stored sessions are read from (a replica, or None)."""
        stored = self._stored(reads)
        if isinstance(ref, UUID):
            return self.temporary if self.temporary.holds(ref) else stored, ref
        return stored, await stored.find_external(ref)

    # --- sessions ------------------------------------------------------------------------------

    @property
    def llm_model(self) -> str | None:
        llm, _ = self.runtime.chat_llm()
        return llm.metadata.model_name if llm is not None else None

    async def create_session(
        self,
        *,
        title: str | None,
        is_temporary: bool,
        search_type: SearchType,
        external_id: str | None = None,
    ) -> ChatSession:
        """ConflictError when the caller already has a session with this external id."""
        if is_temporary:
            if external_id is not None:
                raise InvalidInputError("a temporary session cannot take an external_id (it is never stored)")
            return await self.temporary.create(title=title, search_type=search_type, llm_model=self.llm_model)
        return await self.stored.create(
            title=title,
            search_type=search_type,
            llm_model=self.llm_model,
            session_id=external_session_id(external_id),
            external_id=external_id,
        )

    async def get_session(self, ref: SessionRef, reads: ScopedPool | None = None) -> ChatSession:
        store, session_id = await self.locate(ref, reads)
        return await store.get(session_id)

    async def list_sessions(
        self,
        *,
        limit: int,
        offset: int,
        include_archived: bool,
        every_owner: bool = False,
        only_archived: bool = False,
        words: str | None = None,
        reads: ScopedPool | None = None,
    ) -> tuple[list[ChatSession], int]:
        """Stored sessions only: temporary ones are not listed (they belong to one client)."""
        return await self._stored(reads).list_sessions(
            limit=limit,
            offset=offset,
            include_archived=include_archived,
            every_owner=every_owner,
            only_archived=only_archived,
            words=words,
        )

    async def update_session(
        self,
        ref: SessionRef,
        *,
        title: str | None,
        is_archived: bool | None,
        search_type: SearchType | None,
    ) -> ChatSession:
        store, session_id = await self.locate(ref)
        return await store.update(session_id, title=title, is_archived=is_archived, search_type=search_type)

    async def delete_session(self, ref: SessionRef) -> None:
        store, session_id = await self.locate(ref)
        await store.delete(session_id)

    async def history(
        self, ref: SessionRef, reads: ScopedPool | None = None
    ) -> tuple[UUID, list[ChatMessageOut]]:
        """(the session's id, its messages in order); `reads`: see `locate`."""
        store, session_id = await self.locate(ref, reads)
        return session_id, await store.history(session_id)

    async def clear(self, ref: SessionRef) -> tuple[UUID, int]:
        """(the session's id, how many messages were deleted)."""
        store, session_id = await self.locate(ref)
        return session_id, await store.clear(session_id)

    # --- answers -------------------------------------------------------------------------------

    async def answer(self, request: QueryRequest) -> QueryResponse:
        turn = await self.resolve(request)
        async for _ in self.generate(turn):
            pass
        await self.persist(turn)
        return self.response(turn)

    async def resolve(self, request: QueryRequest) -> Turn:
        """Resolve the collections, find (or plan to create) the session and read its recent history.
        An unknown collection or session: NotFoundError -> 404, before anything is generated."""
        scope = await resolve_ids(self.runtime.pool, request.collections)
        turn = await self._resolve_session(request)
        turn.collection_ids = scope
        return turn

    async def resolve_unstored(
        self, request: QueryRequest, history: list[ChatMessageOut], llm_options: dict[str, Any]
    ) -> Turn:
        """A turn whose history the caller holds (OpenAI-style clients resend the whole conversation):
        no session is looked up, created or written. Generate it, then read it; never persist it."""
        reads = self.runtime.read_pool()
        scope = await resolve_ids(reads, request.collections)
        session = ChatSession.new(
            title=None,
            search_type=request.search_type or "hybrid",
            llm_model=self.llm_model,
            is_temporary=True,
        )
        limit = self.settings.chat_history_messages
        return Turn(
            session=session,
            question=request.query.strip(),
            request=request,
            store=self.temporary,
            history=history[-limit:] if limit > 0 else [],
            collection_ids=scope,
            unstored=True,
            llm_options=llm_options,
            reads=reads,
        )

    async def _resolve_session(self, request: QueryRequest) -> Turn:
        """No session id, or an external id not used yet: a new stored session, written with the first
        answer (two concurrent first answers under one external id land in the same session)."""
        question = request.query.strip()
        limit = self.settings.chat_history_messages
        ref = request.session_id
        store: SessionStore = self.stored
        session_id: UUID | None = None
        if ref is not None:
            try:
                store, session_id = await self.locate(ref)
            except NotFoundError:
                if isinstance(ref, UUID):
                    raise  # a UUID is the server's id: an unknown one is never created
        if session_id is None:
            external_id = ref if isinstance(ref, str) else None
            session = ChatSession.new(
                title=None,
                search_type=request.search_type or "hybrid",
                llm_model=self.llm_model,
                is_temporary=False,
                session_id=external_session_id(external_id),
                external_id=external_id,
            )
            return Turn(
                session=session, question=question, request=request, store=self.stored, new_session=True
            )
        session, history = await store.recent(session_id, last=limit)
        return Turn(session=session, question=question, request=request, store=store, history=history)

    async def generate(self, turn: Turn) -> AsyncGenerator[str, None]:
        """Retrieve, then yield answer text pieces. Sets turn.sources before the first piece."""
        llm = self._llm(turn)
        try:
            if llm is not None and turn.session.title is None and not turn.history and not turn.unstored:
                turn.title_task = asyncio.create_task(
                    llm_title(llm, turn.question, self.settings.llm_timeout_s)
                )
            retrieval_query = turn.question
            # A follow-up leans on an earlier question; a greeting alone (a /v1 chat UI's) is no reason.
            if llm is not None and any(m.role == "user" for m in turn.history):
                start = time.perf_counter()
                try:
                    retrieval_query = await condense_question(
                        llm,
                        turn.question,
                        turn.history,
                        self.settings.llm_timeout_s,
                        turn.usage,
                        self.settings.llm_context_tokens,
                    )
                    turn.condensed_query = retrieval_query
                except LLMFailure as exc:
                    # Same provider for the answer: do not wait a second time, answer extractively.
                    turn.llm_error = str(exc)
                turn.timings["condense"] = elapsed_ms(start)
            await find_sources(self.runtime, turn, retrieval_query)
            if llm is not None and turn.llm_error is None:
                # Only what the LLM is given is shown and citable: [n] must name the same passage.
                kept = fitting_sources(
                    turn.hits, turn.question, self.settings.llm_context_tokens, turn.instructions
                )
                turn.hits, turn.sources = turn.hits[:kept], turn.sources[:kept]
            yield ""  # sources are known: lets the streaming route send them before the first token
            async with aclosing(self._answer_text(turn, llm)) as pieces:
                async for piece in pieces:
                    yield piece
        except BaseException:
            self._cancel_title(turn)
            raise

    async def _answer_text(self, turn: Turn, llm: LLM | None) -> AsyncGenerator[str, None]:
        start = time.perf_counter()
        if llm is None or turn.llm_error is not None or not turn.hits:
            header = EXTRACTIVE_HEADER if turn.llm_error is None else FALLBACK_HEADER
            # A follow-up searched again (condensed_query): its sentences are picked by what was searched.
            turn.answer = extractive_answer(turn.condensed_query or turn.question, turn.hits, header=header)
            turn.mode = "extractive"
            for line in turn.answer.splitlines(keepends=True):
                yield line
            turn.timings["answer"] = elapsed_ms(start)
            return
        pieces: list[str] = []
        citations = CitationFilter(len(turn.sources))
        try:
            context = self.settings.llm_context_tokens
            messages = answer_messages(turn.question, turn.hits, turn.history, context, turn.instructions)
            timeout = self.settings.llm_timeout_s
            end = StreamEnd()
            deltas = stream(llm, messages, timeout, turn.usage, end, **turn.llm_options)
            async with aclosing(deltas):
                async for delta in deltas:
                    if shown := citations.feed(delta):
                        pieces.append(shown)
                        yield shown
            if shown := citations.flush():
                pieces.append(shown)
                yield shown
            if not "".join(pieces).strip():
                raise LLMFailure("The LLM returned an empty answer; showing the extractive answer.")
            turn.answer = "".join(pieces).strip()
            turn.mode = "llm"
            turn.finish_reason = (
                "length"
                if end.reason == "length"
                else "content_filter"
                if end.reason == "content_filter"
                else "stop"
            )
        except LLMFailure as exc:
            logger.warning("LLM answer failed, falling back to extractive: %s", exc)
            turn.llm_error = str(exc)
            turn.answer = extractive_answer(
                turn.condensed_query or turn.question, turn.hits, header=FALLBACK_HEADER
            )
            turn.mode = "extractive"
            if not pieces:  # nothing streamed yet: stream the fallback; otherwise `done` carries it
                for line in turn.answer.splitlines(keepends=True):
                    yield line
            elif held := citations.flush():  # the rest of the partial answer, as the LLM sent it
                yield held
        turn.timings["answer"] = elapsed_ms(start)

    async def persist(self, turn: Turn) -> None:
        """Write the question and the complete answer (temporary sessions: process memory only)."""
        start = time.perf_counter()
        title = await self._title(turn)
        metadata = self._answer_metadata(turn)
        turn.message_id = await turn.store.append_exchange(
            turn.session.id,
            question=turn.question,
            answer=turn.answer,
            answer_metadata=metadata,
            title_if_missing=title,
            create=turn.session if turn.new_session else None,
        )
        turn.timings["persist"] = elapsed_ms(start)
        turn.timings["total"] = elapsed_ms(turn.started)

    def response(self, turn: Turn) -> QueryResponse:
        return QueryResponse(
            answer=turn.answer,
            answer_mode=turn.mode,
            sources=turn.sources,
            session_id=turn.session.id,
            external_id=turn.session.external_id,
            message_id=turn.message_id,
            timings_ms=turn.timings,
            llm_error=turn.llm_error,
            condensed_query=turn.condensed_query,
        )

    def _answer_metadata(self, turn: Turn) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "sources": [s.model_dump(mode="json", exclude={"document_deleted"}) for s in turn.sources],
            "answer_mode": turn.mode,
            "search_type": turn.search_type,
            "llm_model": self.llm_model if turn.mode == "llm" else None,
        }
        if turn.llm_error:
            metadata["llm_error"] = turn.llm_error
        if turn.condensed_query:
            metadata["condensed_query"] = turn.condensed_query
        # What the answer was drawn from: the question's collections and filters. A client reopening the
        # chat carries its limit on (the web app: a chat about one document stays about it).
        metadata["collections"] = [str(c) for c in turn.collection_ids]
        if turn.request.filters is not None:
            metadata["filters"] = turn.request.filters.model_dump(mode="json", exclude_none=True)
        return metadata

    def _llm(self, turn: Turn) -> LLM | None:
        llm, error = self.runtime.chat_llm()
        if error is not None:  # incomplete settings: answer extractively and say why
            turn.llm_error = error
        return llm

    async def _title(self, turn: Turn) -> str | None:
        if turn.session.title is not None:
            self._cancel_title(turn)
            return None
        task, turn.title_task = turn.title_task, None
        if task is not None:
            if turn.mode == "llm":
                try:
                    return await task
                except LLMFailure as exc:
                    logger.info("LLM title failed, using the question: %s", exc)
            else:
                task.cancel()
        return fallback_title(turn.question)

    def _cancel_title(self, turn: Turn) -> None:
        if turn.title_task is not None:
            turn.title_task.cancel()
            turn.title_task = None
