"""Chat over REST: sessions, history, answers (JSON and Server-Sent Events). No SQL here."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

from rag_server.api.deps import ChatDep, OffsetQuery, Reader, ReadPoolDep, RuntimeDep, require
from rag_server.api.downloads import attachment
from rag_server.api.errors import error_responses
from rag_server.api.sse import event_stream
from rag_server.chat.export import export_filename, markdown, transcript
from rag_server.chat.models import (
    ChatMessageOut,
    ChatSession,
    ExternalId,
    QueryRequest,
    QueryResponse,
    SessionList,
    SessionRef,
    SessionSearch,
)
from rag_server.errors import ForbiddenError, NotFoundError
from rag_server.infra.database import retry_sentence
from rag_server.read_after import lsn_text
from rag_server.retrieval.models import SearchType
from rag_server.text import Cleaned

logger = logging.getLogger(__name__)


def _title(value: str) -> str:
    if not value.strip():
        raise ValueError("title must not be blank")
    return value.strip()


# Stored without surrounding whitespace; a blank one showed as an unnamed chat in every listing.
SessionTitle = Annotated[str, Field(min_length=1, max_length=200), Cleaned, AfterValidator(_title)]

router = APIRouter(tags=["chat"], dependencies=[require("reader")], responses=error_responses(401))


class CreateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: SessionTitle | None = None
    # Strict: JSON has booleans; 0/1 or "yes" are a 422 like any other wrong type.
    is_temporary: StrictBool = False
    search_type: SearchType = "hybrid"
    # The caller's own name for the session (then usable wherever a session id goes); unique per key.
    external_id: ExternalId | None = None

    @model_validator(mode="after")
    def _stored_if_named(self) -> CreateSessionRequest:
        if self.is_temporary and self.external_id is not None:
            raise ValueError("a temporary session cannot take an external_id (it is never stored)")
        return self


class UpdateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: SessionTitle | None = None
    is_archived: StrictBool | None = None
    search_type: SearchType | None = None


class History(BaseModel):
    session_id: UUID
    messages: list[ChatMessageOut]


class ClearRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: SessionRef


class ClearResponse(BaseModel):
    session_id: UUID
    deleted: int


# One Server-Sent Event (OpenAPI's `itemSchema`, as FastAPI writes it for its own SSE routes): `data` is JSON.
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["sources", "token", "done", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
_EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `sources` (session_id, external_id, sources, "
        "condensed_query), then `token`... (text), then `done` (a QueryResponse without sources; "
        "with read replicas also read_after) or `error` (detail); while the server waits, `: keep-alive` "
        "comments (RAG_STREAM_KEEPALIVE_S)",
        "content": {"text/event-stream": {"itemSchema": _EVENT_SCHEMA}},
    }
}


@router.post("/chat/sessions", status_code=201, responses=error_responses(400, 409, 503))
async def create_session(body: CreateSessionRequest, chat: ChatDep) -> ChatSession:
    """A new session; `is_temporary` ones are answered but never stored (lost on restart).
    `external_id`: your own id for it (409 if you have one by that id already)."""
    return await chat.create_session(
        title=body.title,
        is_temporary=body.is_temporary,
        search_type=body.search_type,
        external_id=body.external_id,
    )


@router.get("/chat/sessions", responses=error_responses(403, 503))
async def list_sessions(
    chat: ChatDep,
    principal: Reader,
    reads: ReadPoolDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
    include_archived: bool = False,
    only_archived: Annotated[bool, Query(description="Only the archived sessions")] = False,
    all_owners: Annotated[bool, Query(description="Every key's sessions (admin keys only)")] = False,
    q: SessionSearch | None = None,
) -> SessionList:
    """Your stored sessions (the API key's), most recently active first (`last_active_at`: created, or
    its last question answered; a rename, an archive or a clear does not move a session up). `q`: only
    those whose title or messages hold each of its words."""
    if all_owners and not principal.can("admin"):
        raise ForbiddenError("only an admin key may list every key's sessions")
    items, total = await chat.list_sessions(
        limit=limit,
        offset=offset,
        include_archived=include_archived,
        every_owner=all_owners,
        only_archived=only_archived,
        words=q,
        reads=reads,
    )
    return SessionList(sessions=items, total=total, limit=limit, offset=offset)


@router.get("/chat/sessions/{session_id}", responses=error_responses(404, 503))
async def get_session(session_id: SessionRef, chat: ChatDep, reads: ReadPoolDep) -> ChatSession:
    return await chat.get_session(session_id, reads)


@router.patch("/chat/sessions/{session_id}", responses=error_responses(400, 404, 503))
async def update_session(session_id: SessionRef, body: UpdateSessionRequest, chat: ChatDep) -> ChatSession:
    """Rename, archive / unarchive, or change the session's default search type. `updated_at` moves,
    `last_active_at` (the listing's order) does not."""
    return await chat.update_session(
        session_id, title=body.title, is_archived=body.is_archived, search_type=body.search_type
    )


@router.delete("/chat/sessions/{session_id}", status_code=204, responses=error_responses(404, 503))
async def delete_session(session_id: SessionRef, chat: ChatDep) -> Response:
    await chat.delete_session(session_id)
    return Response(status_code=204)


@router.get("/chat/history/{session_id}", responses=error_responses(404, 503))
async def history(session_id: SessionRef, chat: ChatDep, reads: ReadPoolDep) -> History:
    """Messages in order; sources citing a since-deleted document carry `document_deleted: true`.
    `session_id`: the session's UUID or your external id for it."""
    found, messages = await chat.history(session_id, reads)
    return History(session_id=found, messages=messages)


@router.get(
    "/chat/sessions/{session_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "A Markdown file named after the chat's title",
            "content": {"text/markdown": {"schema": {"type": "string"}}},
        },
        **error_responses(404, 503),
    },
)
async def export_session(session_id: SessionRef, chat: ChatDep, reads: ReadPoolDep) -> Response:
    """The conversation as a Markdown file: questions, answers and each answer's numbered sources."""
    session, messages = await transcript(chat, session_id, reads)
    return Response(
        markdown(session, messages),
        media_type="text/markdown; charset=utf-8",
        headers=attachment(export_filename(session)),
    )


@router.post("/chat/clear", responses=error_responses(400, 404, 503))
async def clear(body: ClearRequest, chat: ChatDep) -> ClearResponse:
    found, deleted = await chat.clear(body.session_id)
    return ClearResponse(session_id=found, deleted=deleted)


@router.post("/query", responses=error_responses(400, 403, 404, 503))
async def query(body: QueryRequest, chat: ChatDep) -> QueryResponse:
    """Answer with citations. Without session_id a new session is created (its id is returned); a
    session_id that is not a UUID is your own id for a session, created on its first use."""
    return await chat.answer(body)


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


@router.post(
    "/query/stream",
    # No media type of its own: the declared errors stay application/json, the 200 is declared above.
    response_class=StreamingResponse,
    responses={**_EVENT_STREAM, **error_responses(400, 403, 404, 503)},
)
async def query_stream(body: QueryRequest, chat: ChatDep, runtime: RuntimeDep) -> StreamingResponse:
    """Server-Sent Events: `sources`, then `token`..., then `done` (or `error`).

    `done.answer` is the authoritative final text: if the LLM fails after some tokens went out,
    `done` carries the extractive fallback and `llm_error`. Disconnecting before `done` stores nothing.
    With read replicas, `done.read_after` is the position holding the stored answer: send it back as
    the X-Rag-Read-After header (the response's own header was sent before the answer was stored).
    """
    turn = await chat.resolve(body)  # unknown session -> 404 before the stream starts

    async def events() -> AsyncIterator[str]:
        sent_sources = False
        try:
            async with aclosing(chat.generate(turn)) as pieces:
                async for piece in pieces:
                    if not sent_sources:
                        sent_sources = True
                        yield sse(
                            "sources",
                            {
                                "session_id": str(turn.session.id),
                                "external_id": turn.session.external_id,
                                "sources": [s.model_dump(mode="json") for s in turn.sources],
                                "condensed_query": turn.condensed_query,
                            },
                        )
                    if piece:
                        yield sse("token", {"text": piece})
            await chat.persist(turn)
        except (NotFoundError, ForbiddenError) as exc:  # the session deleted, the key revoked meanwhile
            yield sse("error", {"detail": str(exc)})
            return
        except Exception as exc:
            # Headers are gone already: report in-band, as the 503 would have said it (a database that
            # did not answer in time, ...). Nothing was persisted for this answer.
            if (said := retry_sentence(exc)) is None:
                logger.exception("streamed answer failed")
                said = f"the answer failed: {type(exc).__name__}: {exc}"
            else:
                logger.warning("streamed answer failed: %s: %s: %s", said, type(exc).__name__, exc)
            yield sse("error", {"detail": said})
            return
        done = chat.response(turn).model_dump(mode="json", exclude={"sources"})
        if (position := await runtime.remember_write()) is not None:
            done["read_after"] = lsn_text(position)
        yield sse("done", done)

    return event_stream(events(), runtime.settings.stream_keepalive_s)
