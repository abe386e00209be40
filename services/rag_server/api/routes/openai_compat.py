"""The OpenAI-compatible API under /v1 (models, chat completions, responses, embeddings) for OpenAI
clients such as the openai SDK, the Agents SDK or Open WebUI. Same API keys; errors in OpenAI's shape
(api/errors.py). No SQL here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from rag_server.api.deps import ChatDep, PoolDep, ReadPoolDep, RuntimeDep, require
from rag_server.api.errors import openai_error_responses
from rag_server.api.sse import event_stream
from rag_server.openai_compat import responses_service, service
from rag_server.openai_compat.models import (
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ModelCard,
    ModelList,
)
from rag_server.openai_compat.responses import (
    DeletedResponse,
    InputItemList,
    ResponseObject,
    ResponsesRequest,
)

router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    dependencies=[require("reader")],
    responses=openai_error_responses(401, 403, 503),
)

_CHUNK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "contentMediaType": "application/json"}},
}
_CHAT_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A chat.completion (JSON), or with `stream: true` Server-Sent Events: `data: "
        "{chat.completion.chunk}` lines (the first carries `sources`), then `data: [DONE]`; while the "
        "server waits, `: keep-alive` comments",
        "model": ChatCompletion,
        "content": {"text/event-stream": {"itemSchema": _CHUNK_SCHEMA}},
    }
}


@router.get("/models")
async def list_models(pool: ReadPoolDep) -> ModelList:
    """`rag:<collection>` (hybrid search), `rag:<collection>:bm25` and `rag:<collection>:vector` for each
    collection this key can read."""
    return await service.list_models(pool)


@router.get("/models/{model_id:path}", responses=openai_error_responses(404))
async def retrieve_model(
    model_id: Annotated[str, Path(description="A model id from GET /v1/models")],
    pool: ReadPoolDep,
) -> ModelCard:
    """One model (what `client.models.retrieve(...)` asks); 404 model_not_found for one this key cannot
    read, as for one that does not exist."""
    return await service.retrieve_model(pool, model_id)


@router.post(
    "/chat/completions",
    response_model=None,
    responses={**_CHAT_200, **openai_error_responses(400, 404)},
)
async def chat_completions(body: ChatCompletionRequest, chat: ChatDep) -> ChatCompletion | StreamingResponse:
    """Answer the last user message from the model's collection; earlier turns condense a follow-up.
    Nothing is stored (no chat session). Citations [n] stay in the text; `sources` lists them."""
    turn = await service.start_turn(chat, body)  # unknown model -> 404 before any streaming starts
    if not body.stream:
        return await service.complete(chat, turn, body.model)
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    return event_stream(
        service.stream_chunks(chat, turn, body.model, include_usage=include_usage),
        chat.settings.stream_keepalive_s,
    )


_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
_RESPONSES_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A response (JSON), or with `stream: true` Server-Sent Events: `event: <type>` and "
        "`data: {the event}` (response.created ... response.completed, whose response carries `sources`); "
        "while the server waits, `: keep-alive` comments",
        "model": ResponseObject,
        "content": {"text/event-stream": {"itemSchema": _EVENT_SCHEMA}},
    }
}


@router.post(
    "/responses",
    response_model=None,
    responses={**_RESPONSES_200, **openai_error_responses(400, 404)},
)
async def create_response(body: ResponsesRequest, chat: ChatDep) -> ResponseObject | StreamingResponse:
    """OpenAI's Responses API (`client.responses.create`): the answer a chat completion gives, to the
    last user message of `input`. With `store` (the default) the response is kept for this key: GET and
    DELETE /v1/responses/{id}, and `previous_response_id` continues it (its conversation is the history;
    OpenAI's 400 previous_response_not_found for one not stored, deleted or not this key's). Not in the
    web app's chat history;
    `conversation`: a 400."""
    turn = await responses_service.start(chat, body)  # unknown model -> 404 before any streaming starts
    if not body.stream:
        return await responses_service.respond(chat, turn, body)
    return event_stream(responses_service.stream_events(chat, turn, body), chat.settings.stream_keepalive_s)


ResponseId = Annotated[str, Path(description="A stored response's id (`resp_...`): any other is a 404")]


@router.get("/responses/{response_id}", responses=openai_error_responses(404))
async def retrieve_response(response_id: ResponseId, runtime: RuntimeDep) -> ResponseObject:
    """A stored response as it was answered (`client.responses.retrieve`); 404 response_not_found for one
    not stored (`store: false`), deleted, pruned, or not this key's."""
    return await responses_service.retrieve(runtime, response_id)


@router.delete("/responses/{response_id}", responses=openai_error_responses(404))
async def delete_response(response_id: ResponseId, runtime: RuntimeDep) -> DeletedResponse:
    """Delete a stored response of this key's (`client.responses.delete`); a response that continued it
    keeps its own messages, and its history ends there."""
    return await responses_service.delete(runtime, response_id)


@router.get("/responses/{response_id}/input_items", responses=openai_error_responses(400, 404))
async def list_input_items(
    response_id: ResponseId,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> InputItemList:
    """The stored request's input items (`client.responses.input_items.list`): its messages, the last
    first (`order=asc`: the first first), `limit` at a time, `after` the item of that id."""
    return await responses_service.input_items(runtime, response_id, limit=limit, order=order, after=after)


@router.post("/embeddings", responses=openai_error_responses(400, 404))
async def embeddings(body: EmbeddingRequest, runtime: RuntimeDep, pool: PoolDep) -> EmbeddingList:
    """Embed text with the server's model. `model`: that model's name or any readable `rag:` id."""
    return await service.embed(runtime, pool, body)
