"""OpenAI's wire types, as far as this server speaks them (models, chat completions, embeddings; errors:
errors.py).

Request models ignore unknown fields (clients send many: `top_p`, `seed`, `user`, `tools`...); what they do
check is a 400 in OpenAI's error shape. Responses carry one extra top-level field, `sources`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rag_server.chat.models import FinishReason, Source
from rag_server.retrieval.models import SearchType
from rag_server.text import Cleaned, CleanText, NotBool

MODEL_PREFIX = "rag:"
# The suffix of a model id names the search mode; no suffix: hybrid.
SEARCH_SUFFIXES: dict[str, SearchType] = {"bm25": "bm25", "vector": "vector"}
MAX_TEXT = 20_000
MAX_MESSAGES = 2048
MAX_EMBEDDING_INPUTS = 2048
Text = Annotated[str, Field(max_length=MAX_TEXT), Cleaned]
InputText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), Cleaned]


def model_id(collection: str, search_type: SearchType) -> str:
    return MODEL_PREFIX + collection + ("" if search_type == "hybrid" else f":{search_type}")


def parse_model_id(model: str) -> tuple[str, SearchType] | None:
    """(collection name, search type) for a `rag:...` id, else None (not one of ours)."""
    if not model.startswith(MODEL_PREFIX):
        return None
    name, colon, suffix = model.removeprefix(MODEL_PREFIX).partition(":")
    if not colon:  # `rag:x:` is no id of ours: an unlisted alias of `rag:x`
        return (name, "hybrid") if name else None
    search_type = SEARCH_SUFFIXES.get(suffix)
    return (name, search_type) if name and search_type is not None else None


# --- models -----------------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- chat completions -------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Text

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        # An image (or audio, file...) part: say so, not "type: Input should be 'text' (and 1 more)".
        if isinstance(data, dict) and data.get("type") != "text":
            raise ValueError(
                f"a part of type {str(data.get('type'))[:40]!r} cannot be read: only text parts are "
                "(answers come from the collection's text)"
            )
        return data


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # `function`: legacy function calling's result message, ignored as a `tool` message is.
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # A string or text parts (images and other parts are not understood: a 400); null for tool calls.
    content: Text | Annotated[list[TextPart], Field(max_length=100)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refusal_as_text(cls, data: Any) -> Any:
        # An assistant's parts are text or refusal (OpenAI's ChatCompletionContentPartRefusalParam): a
        # refusal is what it said.
        if (
            not isinstance(data, dict)
            or data.get("role") != "assistant"
            or not isinstance(data.get("content"), list)
        ):
            return data
        parts = [
            {"type": "text", "text": part.get("refusal")}
            if isinstance(part, dict) and part.get("type") == "refusal"
            else part
            for part in data["content"]
        ]
        return {**data, "content": parts}

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


def check_question(messages: Sequence[ChatMessageIn], field: str) -> None:
    """A conversation ends with a question: a user message, not blank, within MAX_TEXT."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise ValueError(f"{field} must contain a user message")
    question = users[-1].text
    if not question.strip():
        raise ValueError("the last user message must not be blank")
    if (n := len(question)) > MAX_TEXT:  # its text parts are each within MAX_TEXT, joined into one query
        raise ValueError(f"the last user message has {n} characters: at most {MAX_TEXT} are allowed")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: CleanText = Field(min_length=1, max_length=200)
    # OpenAI's own bound. A chat client resends the whole conversation (200 ended one at its 101st
    # question); the turn reads only the newest chat_history_messages of them.
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: StrictBool = False
    # include_usage: a last chunk (no choices) carries `usage`, as OpenAI's streams do.
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2), NotBool] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), NotBool] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_000_000), NotBool] | None = None
    stop: (
        Annotated[str, Field(max_length=100), Cleaned]
        | Annotated[list[Annotated[str, Field(max_length=100), Cleaned]], Field(max_length=4)]
        | None
    ) = None
    # Accepted only where they change nothing (a client relies on what it asked for: a second choice,
    # JSON, a tool call, log probabilities); sampling hints (top_p, seed, penalties, user) are ignored.
    n: Annotated[int, NotBool] | None = None
    response_format: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    function_call: str | dict[str, Any] | None = None  # legacy function calling's tool_choice
    logprobs: bool | None = None

    @field_validator("stream_options")
    @classmethod
    def _streamed_only(cls, options: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        # OpenAI's 400 (its sentence): usage in a last chunk of an answer that is not streamed.
        if options is not None and not info.data.get("stream"):
            raise ValueError("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
        return options

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("one answer is generated per request: n must be 1")
        return n

    @field_validator("response_format")
    @classmethod
    def _text_answers(cls, response_format: dict[str, Any] | None) -> dict[str, Any] | None:
        kind = (response_format or {}).get("type", "text")
        if kind != "text":
            raise ValueError(f"answers are cited text: response_format {str(kind)[:40]!r} is not supported")
        return response_format

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_calls(cls, tool_choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if tool_choice not in (None, "auto", "none"):
            raise ValueError("this server calls no tools: tool_choice must be 'auto' or 'none'")
        return tool_choice

    @field_validator("function_call")
    @classmethod
    def _no_function_calls(cls, function_call: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if function_call not in (None, "auto", "none"):
            raise ValueError("this server calls no functions: function_call must be 'auto' or 'none'")
        return function_call

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | None) -> bool | None:
        if logprobs:
            raise ValueError("log probabilities are not available: logprobs must be false")
        return logprobs

    @field_validator("messages")
    @classmethod
    def _has_a_question(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        check_question(messages, "messages")
        return messages

    @property
    def stop_list(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop


class Usage(BaseModel):
    """What the LLM reported (summed over the calls of one answer); null when it reported nothing."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    # None without an LLM (extractive answers) or when the LLM reported no usage.
    usage: Usage | None = None
    # Not OpenAI's: the passages the answer's [n] citations refer to.
    sources: list[Source]
    # Not OpenAI's: why the LLM's answer was replaced by the extractive one (None: it was not).
    llm_error: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    # The first chunk only: the passages the answer cites.
    sources: list[Source] | None = None
    # The last chunk only, with stream_options.include_usage (no choices then; null: none reported).
    usage: Usage | None = None
    # The chunk with finish_reason only, when the LLM failed: the text after its partial answer is the
    # extractive fallback.
    llm_error: str | None = None


# --- embeddings -------------------------------------------------------------------------------------


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: CleanText = Field(min_length=1, max_length=200)
    # OpenAI's own bound: LangChain's OpenAIEmbeddings sends batches of 1000 (256 refused them).
    input: InputText | Annotated[list[InputText], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    # The openai SDK asks for base64 unless told otherwise (and decodes it itself).
    encoding_format: Literal["float", "base64"] = "float"
    # Only the model's own: its vectors cannot be shortened (embed() checks it against the model).
    dimensions: Annotated[int, NotBool] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _text_not_tokens(cls, value: Any) -> Any:
        # Token ids are another tokenizer's (LangChain's OpenAIEmbeddings sends tiktoken ids unless
        # check_embedding_ctx_length=False): this model reads text.
        if isinstance(value, list) and any(isinstance(item, int | list) for item in value):
            raise ValueError(
                "token ids are not accepted, send the text (LangChain's OpenAIEmbeddings: "
                "check_embedding_ctx_length=False)"
            )
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
