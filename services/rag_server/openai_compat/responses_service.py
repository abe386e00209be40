"""`/v1/responses`: the turn of a chat completion (service.open_turn, ChatService.generate), answered as a
Responses API object or its event stream; with `store` (the default) kept once complete (response_store.py),
so that `previous_response_id` continues it and GET/DELETE /v1/responses/{id} find it.

Read-your-writes: a stored response is read where the key's reads go (a replica that has replayed the key's
own writes, else the primary); one not found there is looked for on the primary too, which has every
write (one made through another server process, which this one's memory of the key's writes misses)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from itertools import count
from typing import Literal, TypeVar

from rag_server.chat.models import Source
from rag_server.chat.service import ChatService
from rag_server.chat.turn import Turn
from rag_server.errors import ForbiddenError, InvalidInputError, NotFoundError, ResponseNotFoundError
from rag_server.infra.database import retry_sentence
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import ScopedPool
from rag_server.openai_compat import response_store
from rag_server.openai_compat.models import ChatMessageIn
from rag_server.openai_compat.responses import (
    AnnotationAddedEvent,
    ContentPartEvent,
    DeletedResponse,
    IncompleteDetails,
    InputItem,
    InputItemList,
    ItemStatus,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    ResponseError,
    ResponseEvent,
    ResponseObject,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
    StreamEvent,
    TextDeltaEvent,
    TextDoneEvent,
)
from rag_server.openai_compat.service import fallback_note, open_turn

T = TypeVar("T")


async def start(chat: ChatService, body: ResponsesRequest) -> Turn:
    """Resolve the previous response (400 previous_response_not_found) and the model (404 for an unknown
    or unreachable one) before anything is answered."""
    earlier = await _earlier(chat, body.previous_response_id)
    return await open_turn(
        chat,
        body.model,
        [*earlier, *body.messages],
        temperature=body.temperature,
        max_tokens=body.max_output_tokens,
        question_param="input",
    )


async def _earlier(chat: ChatService, previous_id: str | None) -> list[ChatMessageIn]:
    """The user and assistant messages of the stored chain `previous_id` ends, as the new turn's history
    (what a chat turn's is: its last RAG_CHAT_HISTORY_MESSAGES; each response holds at least two)."""
    if previous_id is None:
        return []
    depth = (chat.settings.chat_history_messages + 1) // 2
    messages = await _read(chat.runtime, lambda c: response_store.conversation(c, previous_id, depth=depth))
    # Stored texts passed their own request's checks: not validated again (an answer may be longer).
    return [ChatMessageIn.model_construct(role=role, content=text) for role, text in messages if text.strip()]


async def _read(runtime: Runtime, read: Callable[[ScopedPool], Awaitable[T]]) -> T:
    """`read` on the request's read pool; not found on a replica: on the primary (module docstring)."""
    reads = runtime.read_pool()
    try:
        return await read(reads)
    except ResponseNotFoundError:
        if reads is runtime.pool:
            raise
        return await read(runtime.pool)


async def retrieve(runtime: Runtime, response_id: str) -> ResponseObject:
    stored = await _read(runtime, lambda c: response_store.get(c, response_id))
    return ResponseObject.model_validate(stored.response)


async def delete(runtime: Runtime, response_id: str) -> DeletedResponse:
    await response_store.delete(runtime.pool, response_id)
    return DeletedResponse(id=response_id)


async def input_items(
    runtime: Runtime,
    response_id: str,
    *,
    limit: int,
    order: Literal["asc", "desc"],
    after: str | None,
) -> InputItemList:
    """A page of the stored request's input items (`order` desc: the last first, OpenAI's default),
    those after the item `after` (an id of this list; any other is a 400, not a silent first page)."""
    stored = await _read(runtime, lambda c: response_store.get(c, response_id))
    items = [InputItem.model_validate(item) for item in stored.input]
    if order == "desc":
        items.reverse()
    ids = [item.id for item in items]
    if after is not None and after not in ids:
        raise InvalidInputError(f"No input item {after[:100]!r} in response {response_id!r}.", "after")
    start = ids.index(after) + 1 if after is not None else 0
    page = items[start : start + limit]
    return InputItemList(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=start + limit < len(items),
    )


async def _keep(chat: ChatService, turn: Turn, body: ResponsesRequest, response: ResponseObject) -> None:
    """Store a complete response (`store`), shielded: a client leaving now does not lose it halfway."""
    if not body.stores:
        return
    await chat.stored.shielded(
        response_store.save(
            chat.runtime.pool,
            response.id,
            collection_id=turn.collection_ids[0],
            previous_id=body.previous_response_id,
            input_items=body.input_items(),
            response=response.model_dump(mode="json"),
        )
    )


@dataclass
class _Draft:
    """One response being built: its ids, and the request's settings it echoes."""

    body: ResponsesRequest
    id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    item_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    created_at: int = field(default_factory=lambda: int(time.time()))

    def message(self, text: str | None, status: ItemStatus, sources: Sequence[Source] = ()) -> OutputMessage:
        """The answer's message item (no content yet: None), its citations of `sources` annotated."""
        content = [] if text is None else [OutputText.with_citations(text, sources)]
        return OutputMessage(id=self.item_id, status=status, content=content)

    def response(self, turn: Turn | None, text: str | None = None) -> ResponseObject:
        """In progress (no turn yet), else the turn's answer: `text`, as streamed, or turn.answer."""
        body = self.body
        status: ResponseStatus = "in_progress"
        incomplete: IncompleteDetails | None = None
        output: list[OutputMessage] = []
        usage: ResponseUsage | None = None
        if turn is not None:
            incomplete = _incomplete(turn)
            status = "completed" if incomplete is None else "incomplete"
            output = [self.message(turn.answer if text is None else text, status, turn.sources)]
            usage = _usage(turn)
        return ResponseObject(
            id=self.id,
            created_at=self.created_at,
            status=status,
            completed_at=int(time.time()) if status == "completed" else None,
            incomplete_details=incomplete,
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            model=body.model,
            output=output,
            parallel_tool_calls=body.parallel_tool_calls is not False,
            previous_response_id=body.previous_response_id,
            store=body.stores,
            temperature=body.temperature,
            tool_choice=body.tool_choice or "auto",
            top_p=body.top_p,
            usage=usage,
            sources=turn.sources if turn is not None else [],
            llm_error=turn.llm_error if turn is not None else None,
        )


def _incomplete(turn: Turn) -> IncompleteDetails | None:
    if turn.finish_reason == "length":
        return IncompleteDetails(reason="max_output_tokens")
    if turn.finish_reason == "content_filter":
        return IncompleteDetails(reason="content_filter")
    return None


def _usage(turn: Turn) -> ResponseUsage | None:
    usage = turn.usage
    if not usage.reported:
        return None
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


async def respond(chat: ChatService, turn: Turn, body: ResponsesRequest) -> ResponseObject:
    draft = _Draft(body)  # created_at: when the answer began
    async for _ in chat.generate(turn):
        pass
    response = draft.response(turn)
    await _keep(chat, turn, body, response)
    return response


def _sse(event: StreamEvent) -> str:
    return f"event: {event.type}\ndata: {json.dumps(event.model_dump(mode='json'))}\n\n"


async def stream_events(chat: ChatService, turn: Turn, body: ResponsesRequest) -> AsyncIterator[str]:
    """OpenAI's event sequence for one message: response.created, .in_progress, output_item.added,
    content_part.added, an output_text.delta per piece of the answer (after an LLM failure mid-answer: a
    note and the extractive answer, as /v1/chat/completions streams it, `llm_error` on the response),
    output_text.done, content_part.done, output_item.done, then response.completed (response.incomplete
    when the LLM stopped at max_output_tokens), once the response is stored (`store`). A failure after the
    headers went out is response.failed (nothing is stored)."""
    draft = _Draft(body)
    numbers = count()
    item, part = draft.item_id, OutputText(text="")

    def at(event: type[StreamEvent], kind: str, **fields: object) -> str:
        return _sse(event.model_validate({"type": kind, "sequence_number": next(numbers), **fields}))

    yield at(ResponseEvent, "response.created", response=draft.response(None))
    yield at(ResponseEvent, "response.in_progress", response=draft.response(None))
    yield at(OutputItemEvent, "response.output_item.added", item=draft.message(None, "in_progress"))
    yield at(ContentPartEvent, "response.content_part.added", item_id=item, part=part)
    streamed: list[str] = []
    try:
        async with aclosing(chat.generate(turn)) as pieces:
            async for piece in pieces:
                if piece:
                    streamed.append(piece)
                    yield at(TextDeltaEvent, "response.output_text.delta", item_id=item, delta=piece)
    except Exception as exc:  # headers are gone: report in-band, as OpenAI's streams do
        yield at(ResponseEvent, "response.failed", response=_failed(draft, turn, exc))
        return
    note = fallback_note(turn, "".join(streamed))
    if note is not None:
        streamed.append(note)
        yield at(TextDeltaEvent, "response.output_text.delta", item_id=item, delta=note)
    text = "".join(streamed)
    response = draft.response(turn, text)
    done = response.output[0].content[0]
    for number, annotation in enumerate(done.annotations):
        yield at(
            AnnotationAddedEvent,
            "response.output_text.annotation.added",
            item_id=item,
            annotation_index=number,
            annotation=annotation,
        )
    yield at(TextDoneEvent, "response.output_text.done", item_id=item, text=text)
    yield at(ContentPartEvent, "response.content_part.done", item_id=item, part=done)
    yield at(OutputItemEvent, "response.output_item.done", item=response.output[0])
    try:
        await _keep(chat, turn, body, response)
    except Exception as exc:
        yield at(ResponseEvent, "response.failed", response=_failed(draft, turn, exc))
        return
    final = "response.completed" if response.status == "completed" else "response.incomplete"
    yield at(ResponseEvent, final, response=response)


def _failed(draft: _Draft, turn: Turn, exc: Exception) -> ResponseObject:
    said = str(exc) if isinstance(exc, NotFoundError | ForbiddenError) else retry_sentence(exc)
    message = said or f"the answer failed: {type(exc).__name__}: {exc}"
    return draft.response(None).model_copy(
        update={
            "status": "failed",
            "error": ResponseError(code="server_error", message=message),
            "sources": turn.sources,
        }
    )
