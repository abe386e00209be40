"""OpenAI's Responses API (`POST /v1/responses`) wire types, as far as this server speaks it.

A request is a conversation (`input`: a string or message items), answered by the same turn as a chat
completion. With `store` (OpenAI's default) the response is kept (response_store.py), and a later request's
`previous_response_id` continues it: the chain's messages are that turn's history. `conversation` (OpenAI's
Conversations API) and `background` are a 400, as is what the server cannot give (a forced tool call, JSON
output, images and files). Unknown fields are ignored, as on the rest of /v1. A response carries one extra
top-level field, `sources` (and `llm_error` when the LLM's answer was replaced by the extractive one).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from rag_server.chat.citations import cited
from rag_server.chat.models import Source
from rag_server.openai_compat.models import MAX_MESSAGES, ChatMessageIn, Text, TextPart, check_question
from rag_server.text import CleanText, NotBool, clean_text

# Input items of a conversation that used tools (the caller's): ignored, as chat completions' tool messages.
IGNORED_ITEMS = frozenset({"function_call", "function_call_output", "reasoning"})
TEXT_PARTS = frozenset({"input_text", "output_text"})


class InputPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["input_text", "output_text"]
    text: Text

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "refusal":  # an earlier answer's: what it said
            return {"type": "output_text", "text": data.get("refusal")}
        if isinstance(data, dict) and str(data.get("type")) not in TEXT_PARTS:
            raise ValueError(
                f"a part of type {str(data.get('type'))[:40]!r} cannot be read: only text parts are "
                "(answers come from the collection's text)"
            )
        return data


class InputMessage(BaseModel):
    """A message item (`type: "message"` may be left out, as OpenAI allows)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Text | Annotated[list[InputPart], Field(max_length=100)]

    @model_validator(mode="before")
    @classmethod
    def _a_message(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type", "message") != "message":
            raise ValueError(
                f"an input item of type {str(data.get('type'))[:40]!r} cannot be read: only messages are "
                "(items are not referred to by id, and this server calls no tools)"
            )
        return data

    def texts(self) -> list[str]:
        return [self.content] if isinstance(self.content, str) else [part.text for part in self.content]

    def as_chat(self) -> ChatMessageIn:
        return ChatMessageIn(role=self.role, content=[TextPart(type="text", text=t) for t in self.texts()])

    def as_item(self) -> dict[str, Any]:
        """The message as a stored input item (GET /v1/responses/{id}/input_items), with an id."""
        kind = "output_text" if self.role == "assistant" else "input_text"
        content: list[dict[str, Any]] = [
            {"type": kind, "text": t, **({"annotations": []} if kind == "output_text" else {})}
            for t in self.texts()
        ]
        return {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": self.role,
            "content": content,
            "status": "completed",
        }


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `verbosity`: a hint, ignored
    format: dict[str, Any] | None = None

    @field_validator("format")
    @classmethod
    def _text_answers(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        kind = (value or {}).get("type", "text")
        if kind != "text":
            raise ValueError(f"answers are cited text: text.format {str(kind)[:40]!r} is not supported")
        return value


def _storable(value: Any) -> Any:
    """A JSON value echoed in a stored response, its strings (keys too) cleaned as CleanText's: jsonb
    holds no NUL (a space instead) nor a lone surrogate (a ValueError: the request's 400); either failed
    the response's write after the whole answer (a 500)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _forced(tool_choice: str | dict[str, Any] | None) -> bool:
    """A tool_choice that makes the model call a tool (the caller then relies on a call)."""
    if tool_choice in (None, "auto", "none"):
        return False
    return not (isinstance(tool_choice, dict) and tool_choice.get("mode") == "auto")  # allowed_tools, auto


class ResponsesRequest(BaseModel):
    """Ignored, beyond their types: `metadata`, `user`, `truncation`, `top_p`, `tools` (never called),
    `parallel_tool_calls`, `include`, `reasoning` and other hints."""

    model_config = ConfigDict(extra="ignore")
    model: CleanText = Field(min_length=1, max_length=200)
    input: Text | Annotated[list[InputMessage | None], Field(min_length=1, max_length=MAX_MESSAGES)]
    instructions: Text | None = None  # a system message: kept under the server's rules (CALLER_INSTRUCTIONS)
    stream: StrictBool = False
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000), NotBool] | None = None
    temperature: Annotated[float, Field(ge=0, le=2), NotBool] | None = None
    top_p: Annotated[float, Field(ge=0, le=1), NotBool] | None = None
    parallel_tool_calls: StrictBool | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    text: TextConfig | None = None
    # Keep the response (OpenAI's default), so that it can be read, deleted and continued.
    store: StrictBool | None = None
    # A stored response (of this key, in a collection it reads) whose conversation this one continues.
    previous_response_id: str | None = Field(default=None, max_length=200)
    conversation: str | dict[str, Any] | None = None
    background: StrictBool | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _skip_tool_items(cls, value: Any) -> Any:
        if isinstance(value, list):  # in place (None), so an error's index is the item's
            return [None if isinstance(i, dict) and str(i.get("type")) in IGNORED_ITEMS else i for i in value]
        return value

    @field_validator("input")
    @classmethod
    def _has_a_question(cls, value: str | list[InputMessage | None]) -> str | list[InputMessage | None]:
        check_question(_chat_messages(value), "input")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_calls(cls, tool_choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if _forced(tool_choice):
            raise ValueError("this server calls no tools: tool_choice must be 'auto' or 'none'")
        return _storable(tool_choice)  # echoed in the response, stored as jsonb

    @field_validator("conversation")
    @classmethod
    def _no_conversations(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "this server keeps no conversations: continue a stored response with "
                "`previous_response_id`, or send the whole conversation in `input`"
            )
        return value

    @field_validator("background")
    @classmethod
    def _answered_now(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("responses are answered while the request waits: background must be false")
        return value

    @property
    def stores(self) -> bool:
        return self.store is not False

    def input_items(self) -> list[dict[str, Any]]:
        """`input` as stored input items (a string: one user message)."""
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input).as_item()]
        return [item.as_item() for item in self.input if item is not None]

    @property
    def messages(self) -> list[ChatMessageIn]:
        """The conversation as chat messages: `instructions` first, as a system message."""
        system = [ChatMessageIn(role="system", content=self.instructions)] if self.instructions else []
        return system + _chat_messages(self.input)


def _chat_messages(value: str | list[InputMessage | None]) -> list[ChatMessageIn]:
    if isinstance(value, str):
        return [ChatMessageIn(role="user", content=value)]
    return [item.as_chat() for item in value if item is not None]


# --- the response -----------------------------------------------------------------------------------


class FileCitation(BaseModel):
    """One [n] of the text (which keeps it): the cited source's document. `index`: where its marker's `[`
    is in the text, in code points (OpenAI's file search puts a citation's index where it applies)."""

    type: Literal["file_citation"] = "file_citation"
    file_id: str  # the document's id (GET /documents/{id})
    filename: str
    index: int


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[FileCitation] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def with_citations(cls, text: str, sources: Sequence[Source]) -> OutputText:
        """`text` with a file citation for each source number it cites (one of `sources`)."""
        by_number = {s.n: s for s in sources}
        annotations = [
            FileCitation(file_id=str(source.document_id), filename=source.document_name, index=where)
            for where, n in cited(text)
            if (source := by_number.get(n)) is not None
        ]
        return cls(text=text, annotations=annotations)


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    """What the LLM reported (summed over the calls of one answer)."""

    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(BaseModel):
    code: str
    message: str


class TextFormat(BaseModel):
    type: Literal["text"] = "text"


class TextOut(BaseModel):
    format: TextFormat = Field(default_factory=TextFormat)


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseObject(BaseModel):
    """A response (`object: "response"`), with every field the openai SDK's `Response` requires."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputMessage]
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    store: bool = False  # kept: GET /v1/responses/{id}, and `previous_response_id` continues it
    temperature: float | None = None
    text: TextOut = Field(default_factory=TextOut)
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)  # none is ever called
    top_p: float | None = None
    truncation: Literal["auto"] = "auto"  # a long conversation is cut to the LLM's context, oldest first
    # None without an LLM (extractive answers) or when the LLM reported no usage.
    usage: ResponseUsage | None = None
    # Not OpenAI's: the passages the answer's [n] citations refer to.
    sources: list[Source]
    # Not OpenAI's: why the LLM's answer was replaced by the extractive one (None: it was not).
    llm_error: str | None = None


class DeletedResponse(BaseModel):
    """DELETE /v1/responses/{id}: OpenAI's deleted object."""

    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True


class InputItem(BaseModel):
    """A stored request's message (`input_text` parts; an assistant's: `output_text`)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: list[dict[str, Any]]
    status: ItemStatus = "completed"


class InputItemList(BaseModel):
    """GET /v1/responses/{id}/input_items: a page of the request's input items."""

    object: Literal["list"] = "list"
    data: list[InputItem]
    first_id: str | None
    last_id: str | None
    has_more: bool


# --- stream events (`event: <type>`, `data: <the event>`) -------------------------------------------


class StreamEvent(BaseModel):
    type: str
    sequence_number: int


class ResponseEvent(StreamEvent):
    """response.created, .in_progress, .completed, .incomplete, .failed."""

    response: ResponseObject


class OutputItemEvent(StreamEvent):
    output_index: int = 0
    item: OutputMessage


class _ContentEvent(StreamEvent):
    """An event about the answer's one content part (the first of the first output item)."""

    item_id: str
    output_index: int = 0
    content_index: int = 0


class ContentPartEvent(_ContentEvent):
    part: OutputText


class TextDeltaEvent(_ContentEvent):
    delta: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class AnnotationAddedEvent(_ContentEvent):
    """response.output_text.annotation.added: one citation, once the text is whole."""

    annotation_index: int
    annotation: FileCitation


class TextDoneEvent(_ContentEvent):
    text: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)
