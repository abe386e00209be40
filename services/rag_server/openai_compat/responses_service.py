"""`POST /v1/responses`: the turn of a chat completion (service.open_turn, ChatService.generate), answered
as a Responses API object or its event stream. Nothing is stored."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from itertools import count

from rag_server.chat.models import Source
from rag_server.chat.service import ChatService
from rag_server.chat.turn import Turn
from rag_server.errors import NotFoundError
from rag_server.infra.database import retry_sentence
from rag_server.openai_compat.responses import (
    AnnotationAddedEvent,
    ContentPartEvent,
    IncompleteDetails,
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


async def start(chat: ChatService, body: ResponsesRequest) -> Turn:
    """Resolve the model (404 for an unknown or unreachable one) before anything is answered."""
    return await open_turn(
        chat,
        body.model,
        body.messages,
        temperature=body.temperature,
        max_tokens=body.max_output_tokens,
        question_param="input",
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
    return draft.response(turn)


def _sse(event: StreamEvent) -> str:
    return f"event: {event.type}\ndata: {json.dumps(event.model_dump(mode='json'))}\n\n"


async def stream_events(chat: ChatService, turn: Turn, body: ResponsesRequest) -> AsyncIterator[str]:
    """OpenAI's event sequence for one message: response.created, .in_progress, output_item.added,
    content_part.added, an output_text.delta per piece of the answer (after an LLM failure mid-answer: a
    note and the extractive answer, as /v1/chat/completions streams it, `llm_error` on the response),
    output_text.done, content_part.done, output_item.done, then response.completed (response.incomplete
    when the LLM stopped at max_output_tokens). A failure after the headers went out is response.failed."""
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
        said = str(exc) if isinstance(exc, NotFoundError) else retry_sentence(exc)
        failed = draft.response(None).model_copy(
            update={
                "status": "failed",
                "error": ResponseError(
                    code="server_error", message=said or f"the answer failed: {type(exc).__name__}: {exc}"
                ),
                "sources": turn.sources,
            }
        )
        yield at(ResponseEvent, "response.failed", response=failed)
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
    final = "response.completed" if response.status == "completed" else "response.incomplete"
    yield at(ResponseEvent, final, response=response)
