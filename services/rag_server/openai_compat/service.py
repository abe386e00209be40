"""OpenAI's operations on top of the server's own: collections as models, chat through ChatService
(a caller-held conversation: nothing is stored), embeddings through the Runtime's embedder."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from rag_server.chat.models import ChatMessageOut, QueryRequest
from rag_server.chat.prompts import fitting_instructions
from rag_server.chat.service import ChatService
from rag_server.chat.turn import Turn
from rag_server.collections.store import get_collection, list_collections, resolve
from rag_server.errors import InvalidInputError, NotFoundError
from rag_server.infra.database import Executor, retry_sentence
from rag_server.infra.llm import call_options
from rag_server.infra.runtime import Runtime
from rag_server.infra.tokenizer import count_tokens
from rag_server.openai_compat.errors import error_content
from rag_server.openai_compat.models import (
    SEARCH_SUFFIXES,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChunkChoice,
    Delta,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    Usage,
    model_id,
    parse_model_id,
)
from rag_server.retrieval.models import SearchType

OWNER = "rag-server"
_PAGE = 500
EMBED_SLICE = 64  # texts per model call of /v1/embeddings


async def list_models(conn: Executor) -> ModelList:
    """Three models per collection the caller's key can read (row-level security decides which)."""
    cards: list[ModelCard] = []
    offset = 0
    while True:
        page = await list_collections(conn, limit=_PAGE, offset=offset)
        for collection in page.items:
            created = int(collection.created_at.timestamp())
            for search_type in ("hybrid", *SEARCH_SUFFIXES.values()):
                cards.append(
                    ModelCard(id=model_id(collection.name, search_type), created=created, owned_by=OWNER)
                )
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return ModelList(data=cards)


async def retrieve_model(conn: Executor, model: str) -> ModelCard:
    """One model the caller's key can read; one it cannot and one that does not exist are the same 404."""
    parsed = parse_model_id(model)
    if parsed is None:
        raise unknown_model(model)
    try:
        collection = await get_collection(conn, parsed[0])
    except NotFoundError:
        raise unknown_model(model) from None
    # The id as asked for: `rag:<collection id>` names the same model as `rag:<name>` in a turn.
    return ModelCard(id=model, created=int(collection.created_at.timestamp()), owned_by=OWNER)


def unknown_model(model: str) -> NotFoundError:
    return NotFoundError(f"The model {model!r} does not exist or this API key cannot read it")


def query_request(
    model: str, question: str, search_type: SearchType, collection: str, question_param: str = "messages"
) -> QueryRequest:
    """The server's own request for a /v1 turn. The /v1 request model's limits differ from
    QueryRequest's (a model id of 200 characters holds a longer collection reference than any collection
    can have; text parts are joined), so whatever QueryRequest refuses is the caller's input: a 404 for
    the model's collection reference (no collection has it), else a 400 — never a ValidationError (500)."""
    try:
        return QueryRequest(query=question, search_type=search_type, collections=[collection])
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(error["loc"][:1] == ("collections",) for error in errors):
            raise unknown_model(model) from None
        first = errors[0]
        about_question = first["loc"][:1] == ("query",)
        field = "the question" if about_question else ".".join(map(str, first["loc"]))
        raise InvalidInputError(
            f"{field}: {first['msg']}", question_param if about_question else None
        ) from None


def _history(messages: Sequence[ChatMessageIn]) -> tuple[str, list[ChatMessageOut], str]:
    """(the question: the last user message, the user/assistant turns before it, the system and developer
    messages joined: the caller's instructions, which the answer prompt keeps under its own rules). Tool
    messages are ignored."""
    last_user = max(i for i, m in enumerate(messages) if m.role == "user")
    now = datetime.now(UTC)
    history = [
        ChatMessageOut(id=None, role=m.role, content=m.text, created_at=now)
        for m in messages[:last_user]
        if m.role in ("user", "assistant") and m.text.strip()
    ]
    instructions = "\n\n".join(
        m.text.strip() for m in messages if m.role in ("system", "developer") and m.text.strip()
    )
    return messages[last_user].text, history, instructions


async def start_turn(chat: ChatService, body: ChatCompletionRequest) -> Turn:
    """Resolve the model to a collection and search mode (404 for an unknown or unreachable one)."""
    return await open_turn(
        chat,
        body.model,
        body.messages,
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=body.stop_list,
    )


async def open_turn(
    chat: ChatService,
    model: str,
    messages: Sequence[ChatMessageIn],
    *,
    temperature: float | None,
    max_tokens: int | None,
    stop: list[str] | None = None,
    question_param: str = "messages",
) -> Turn:
    """A turn of a caller-held conversation (chat completions, responses) on the model's collection and
    search mode: 404 for an unknown or unreachable model, before anything is generated."""
    parsed = parse_model_id(model)
    if parsed is None:
        raise unknown_model(model)
    collection, search_type = parsed
    question, history, instructions = _history(messages)
    request = query_request(model, question, search_type, collection, question_param)
    llm, _ = chat.runtime.chat_llm()
    options = (
        call_options(llm, temperature=temperature, max_tokens=max_tokens, stop=stop)
        if llm is not None
        else {}
    )
    try:
        turn = await chat.resolve_unstored(request, history, options)
    except NotFoundError:
        raise unknown_model(model) from None
    # No LLM: an extractive answer, which no instruction changes.
    turn.instructions = fitting_instructions(instructions, chat.settings.llm_context_tokens) if llm else ""
    return turn


def _ids() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


async def complete(chat: ChatService, turn: Turn, model: str) -> ChatCompletion:
    async for _ in chat.generate(turn):
        pass
    completion_id, created = _ids()
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=[Choice(message=AssistantMessage(content=turn.answer), finish_reason=turn.finish_reason)],
        usage=_usage(turn),
        sources=turn.sources,
        llm_error=turn.llm_error,
    )


def _usage(turn: Turn) -> Usage | None:
    usage = turn.usage
    if not usage.reported:
        return None
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def fallback_note(turn: Turn, streamed: str) -> str | None:
    """The text that follows a partial LLM answer when the LLM failed mid-stream (None otherwise): what
    went wrong, then the extractive answer, which is what /query/stream's `done` carries."""
    if turn.llm_error is None or streamed == turn.answer:
        return None  # no failure, or the fallback itself was streamed (the LLM failed before any token)
    return f"\n\n---\n{turn.llm_error}\n\n{turn.answer}"


def _data(payload: ChatCompletionChunk) -> dict[str, Any]:
    # Like OpenAI's chunks: absent delta fields are left out; the sources keep all their fields.
    data = payload.model_dump(mode="json", exclude_none=True, exclude={"sources"})
    if payload.sources is not None:
        data["sources"] = [s.model_dump(mode="json") for s in payload.sources]
    return data


def _sse(payload: ChatCompletionChunk | dict[str, Any]) -> str:
    return f"data: {json.dumps(_data(payload) if isinstance(payload, ChatCompletionChunk) else payload)}\n\n"


async def stream_chunks(
    chat: ChatService, turn: Turn, model: str, include_usage: bool = False
) -> AsyncIterator[str]:
    """`data: {chunk}` lines: the first carries the role and `sources`, then text deltas (after an LLM
    failure mid-answer: a note and the extractive answer), a chunk with finish_reason (and `llm_error`),
    with `include_usage` a usage chunk, then `data: [DONE]`. A failure after the headers went out is an
    `error` payload."""
    completion_id, created = _ids()

    def chunk(delta: Delta | None, **fields: Any) -> ChatCompletionChunk:
        finish = fields.pop("finish", None)
        choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish)]
        return ChatCompletionChunk(id=completion_id, created=created, model=model, choices=choices, **fields)

    sent_first = False
    streamed: list[str] = []
    try:
        async with aclosing(chat.generate(turn)) as pieces:
            async for piece in pieces:
                if not sent_first:
                    sent_first = True
                    yield _sse(chunk(Delta(role="assistant", content=""), sources=turn.sources))
                if piece:
                    streamed.append(piece)
                    yield _sse(chunk(Delta(content=piece)))
    except NotFoundError as exc:
        yield _sse(error_content(404, str(exc)))
        return
    except Exception as exc:  # headers are gone: report in-band, as OpenAI's streams do
        if (said := retry_sentence(exc)) is not None:  # what the 503 would have said
            yield _sse(error_content(503, said))
        else:
            yield _sse(error_content(500, f"the answer failed: {type(exc).__name__}: {exc}"))
        return
    note = fallback_note(turn, "".join(streamed))
    if note is not None:
        yield _sse(chunk(Delta(content=note)))
    yield _sse(chunk(Delta(), finish=turn.finish_reason, llm_error=turn.llm_error))
    if include_usage:
        usage = _usage(turn)
        # OpenAI's usage chunk: no choices; `usage` is there even when null (nothing was reported).
        yield f"data: {json.dumps({**_data(chunk(None)), 'usage': usage and usage.model_dump()})}\n\n"
    yield "data: [DONE]\n\n"


async def embed(runtime: Runtime, conn: Executor, body: EmbeddingRequest) -> EmbeddingList:
    """`model`: the server's embedding model or any `rag:` id the key can read (all embed alike)."""
    if body.model != runtime.embedder.model_name:
        parsed = parse_model_id(body.model)
        if parsed is None:
            raise unknown_model(body.model)
        await _check_collection(conn, body.model, parsed[0])
    if body.dimensions is not None and body.dimensions != runtime.embedder.dim:
        raise InvalidInputError(
            f"dimensions: this model's embeddings have {runtime.embedder.dim} dimensions "
            f"and cannot be shortened to {body.dimensions}",
            "dimensions",
        )
    texts = body.texts
    # In slices: the model serves one call at a time, and a search's query waits for one slice at most
    # (2048 long inputs in one call held searches for 85 s).
    slices = [
        np.asarray(await runtime.embedder.embed(texts[i : i + EMBED_SLICE]), dtype=np.float32)
        for i in range(0, len(texts), EMBED_SLICE)
    ]
    vectors = np.concatenate(slices)
    data = [Embedding(index=i, embedding=_encode(row, body.encoding_format)) for i, row in enumerate(vectors)]
    tokens = _count_tokens(texts)
    return EmbeddingList(
        data=data, model=body.model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


async def _check_collection(conn: Executor, model: str, collection: str) -> None:
    try:
        await resolve(conn, [collection])
    except NotFoundError:
        raise unknown_model(model) from None


def _encode(row: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in row]


def _count_tokens(texts: list[str]) -> int:
    """cl100k tokens: close to, not exactly, the embedding model's own."""
    return sum(count_tokens(text) for text in texts)
