"""The OpenAI-compatible API (/v1) through the official `openai` client against the in-process app.

Collections `alpha` (BM25 and HNSW texts) and `beta` (pasta), and a reader key limited to alpha: from then
on the API is secured. Without an LLM answers are extractive; one module-level app points at the fake
OpenAI-compatible LLM (tests/fakes/llm_server.py) for the LLM path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from fastapi import FastAPI

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.api.app import create_app
from rag_server.chat.answer import FALLBACK_HEADER
from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from tests.fakes.llm_server import Behaviour, FakeLLM, reply_for, request_kind, usage_for
from tests.integration.conftest import APP_BASE_URL
from tests.support.sample_files import long_text

ALPHA = {
    "bm25.txt": "BM25 is a lexical ranking function based on term frequency and inverse document "
    "frequency. The k1 parameter controls term frequency saturation and b controls length normalisation.",
    "hnsw.txt": "HNSW is a graph-based index for approximate nearest neighbour search. pgvector builds "
    "HNSW indexes with the parameters m and ef_construction.",
}
BETA = {"pasta.txt": "To cook pasta, boil salted water, add the pasta and cook it until al dente."}
QUESTION = "What is BM25?"


@dataclass
class World:
    admin: str
    alpha_reader: str
    docs: dict[str, str]  # file name -> document id


@pytest.fixture(scope="module")
async def world(runtime: Runtime, app: FastAPI) -> World:
    return await seed_world(runtime)


async def seed_world(runtime: Runtime) -> World:
    """Collections alpha and beta with their documents, an admin key and a reader of alpha only."""
    docs: dict[str, str] = {}
    for name, texts in (("alpha", ALPHA), ("beta", BETA)):
        collection = await store.create_collection(runtime.pool, CreateCollection(name=name))
        ids = await ingest_documents_direct(
            runtime,
            [DirectDocument(n, t.encode(), {}) for n, t in texts.items()],
            collection_id=collection.id,
        )
        docs |= {n: str(i) for n, i in zip(texts, ids, strict=True)}
    admin = await keys.create_key(runtime.pool, CreateKey(name="admin", role="admin"))
    reader = await keys.create_key(
        runtime.pool, CreateKey(name="alpha-reader", role="reader", collections=["alpha"])
    )
    return World(admin=admin.key, alpha_reader=reader.key, docs=docs)


def client_for(app: FastAPI, key: str) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return openai.AsyncOpenAI(
        base_url=f"{APP_BASE_URL}/v1",
        api_key=key,
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport, timeout=60),
    )


@pytest.fixture
async def reader(app: FastAPI, world: World) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(app, world.alpha_reader) as client:
        yield client


def extra(obj: Any, name: str) -> Any:
    """An extra top-level field (not in the SDK's types) of a response or chunk."""
    return (obj.model_extra or {}).get(name)


async def test_models_are_the_readable_collections_times_three_search_modes(
    reader: openai.AsyncOpenAI, app: FastAPI, world: World
) -> None:
    models = await reader.models.list()
    assert sorted(m.id for m in models.data) == ["rag:alpha", "rag:alpha:bm25", "rag:alpha:vector"]
    assert {m.object for m in models.data} == {"model"} and all(m.created > 0 for m in models.data)
    async with client_for(app, world.admin) as admin:
        everything = {m.id for m in (await admin.models.list()).data}
    assert {"rag:alpha", "rag:beta:bm25", "rag:default:vector"} <= everything


async def test_a_model_is_retrieved_by_its_id(reader: openai.AsyncOpenAI) -> None:
    listed = {m.id: m for m in (await reader.models.list()).data}
    for model_id in ("rag:alpha", "rag:alpha:bm25", "rag:alpha:vector"):
        model = await reader.models.retrieve(model_id)
        assert model == listed[model_id]


async def test_chat_streamed_and_not_give_the_same_extractive_answer_and_store_nothing(
    reader: openai.AsyncOpenAI, runtime: Runtime, world: World
) -> None:
    sessions_before = await runtime.pool.fetchval("SELECT count(*) FROM chat_sessions")
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    completion = await reader.chat.completions.create(model="rag:alpha:bm25", messages=messages)
    answer = completion.choices[0].message.content
    assert answer and "[1]" in answer and "BM25" in answer
    assert completion.object == "chat.completion" and completion.choices[0].finish_reason == "stop"
    assert completion.model == "rag:alpha:bm25"
    sources = extra(completion, "sources")
    assert sources[0]["document_id"] == world.docs["bm25.txt"]
    assert {s["document_id"] for s in sources} <= {world.docs["bm25.txt"], world.docs["hnsw.txt"]}

    stream = await reader.chat.completions.create(model="rag:alpha:bm25", messages=messages, stream=True)
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert extra(chunks[0], "sources") == sources
    assert all(extra(c, "sources") is None for c in chunks[1:])
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == answer
    assert await runtime.pool.fetchval("SELECT count(*) FROM chat_sessions") == sessions_before


async def test_the_sse_framing_is_data_lines_ending_with_done(app: FastAPI, world: World) -> None:
    transport = httpx.ASGITransport(app=app)
    body = {"model": "rag:alpha", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    headers = {"Authorization": f"Bearer {world.alpha_reader}"}
    async with httpx.AsyncClient(transport=transport, base_url=APP_BASE_URL, timeout=60) as client:
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = events[:-2]
    assert len(payloads) >= 3 and all(e.startswith("data: {") and "\n" not in e for e in payloads)
    first = json.loads(payloads[0].removeprefix("data: "))
    assert first["sources"][0]["document_id"] == world.docs["bm25.txt"]


async def test_embeddings_are_the_servers_model_output(
    reader: openai.AsyncOpenAI, app: FastAPI, world: World
) -> None:
    texts = ["zebrafish heart", "BM25 ranking"]
    expected = np.asarray(await app.state.runtime.embedder.embed(texts), dtype=np.float32)
    # The SDK asks for base64 by default and decodes it; `float` is plain JSON numbers.
    for kwargs in ({}, {"encoding_format": "float"}):
        result = await reader.embeddings.create(model="rag:alpha", input=texts, **kwargs)
        assert [d.index for d in result.data] == [0, 1] and result.model == "rag:alpha"
        got = np.asarray([d.embedding for d in result.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert result.usage.prompt_tokens > 0
    name = app.state.runtime.embedder.model_name
    single = await reader.embeddings.create(model=name, input="zebrafish heart")
    np.testing.assert_allclose(single.data[0].embedding, expected[0], atol=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "rag:alpha", "messages": []},
        {"model": "rag:alpha", "messages": [{"role": "system", "content": "be brief"}]},
        {"model": "rag:alpha", "messages": [{"role": "user", "content": 3}]},
        {"model": "rag:alpha", "messages": "hello"},
        {"model": "rag:alpha", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
    ],
)
async def test_invalid_chat_requests_are_openai_400s(
    reader: openai.AsyncOpenAI, body: dict[str, Any]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await reader.chat.completions.create(**body)
    error = caught.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]


async def test_a_question_over_the_limit_in_text_parts_is_an_openai_400(reader: openai.AsyncOpenAI) -> None:
    # Each part is within the limit; the question they make together is not (it was a 500).
    parts: Any = [{"type": "text", "text": "a" * 15_000}, {"type": "text", "text": "b" * 15_000}]
    with pytest.raises(openai.BadRequestError) as caught:
        await reader.chat.completions.create(model="rag:alpha", messages=[{"role": "user", "content": parts}])
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    assert "30000 characters" in error["message"] and "at most 20000" in error["message"]


async def test_an_invalid_embedding_request_is_an_openai_400(reader: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await reader.embeddings.create(model="rag:alpha", input=[])
    assert caught.value.response.json()["error"]["param"] == "input"


@pytest.mark.parametrize(
    ("given", "param", "message"),
    [
        ([""], "input.0", "input.0: String should have at least 1 character"),
        ([""] * 2049, "input", "input: List should have at most 2048 items after validation, not 2049"),
        ("", "input", "input: String should have at least 1 character"),
    ],
)
async def test_an_invalid_embedding_input_is_named_for_what_is_wrong(
    reader: openai.AsyncOpenAI, given: Any, param: str, message: str
) -> None:
    # `input` is a string or a list of strings: a list's fault read "Input should be a valid string".
    with pytest.raises(openai.BadRequestError) as caught:
        await reader.embeddings.create(model="rag:alpha", input=given)
    error = caught.value.response.json()["error"]
    assert (error["param"], error["message"]) == (param, message)


async def test_a_batch_as_langchain_sends_it_is_embedded(reader: openai.AsyncOpenAI) -> None:
    # LangChain's OpenAIEmbeddings (with check_embedding_ctx_length=False, as the README says) sends
    # `embed_documents` in batches of its chunk_size, 1000 texts: from 257 texts on it was a 400 "input:
    # List should have at most 256 items". OpenAI takes 2048 inputs a request.
    texts = [f"passage {i} about ranking" for i in range(1000)]
    embedded = await reader.embeddings.create(model="rag:alpha", input=texts, encoding_format="float")
    assert [e.index for e in embedded.data] == list(range(1000))
    assert len(embedded.data[999].embedding) == 384


async def test_a_large_embedding_request_leaves_the_model_to_searches_between_its_slices(
    reader: openai.AsyncOpenAI, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model serves one call at a time: 2048 inputs of 20,000 characters in one call held a
    # search's query embedding for 85 s (2 cores), 256 of them for 12 s. In slices, a search waits for
    # one slice at most.
    embedder = app.state.runtime.embedder
    sizes: list[int] = []
    embed = embedder.embed

    async def counted(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        return await embed(texts)

    monkeypatch.setattr(embedder, "embed", counted)
    embedded = await reader.embeddings.create(
        model="rag:alpha", input=[f"text {i}" for i in range(300)], encoding_format="float"
    )
    assert sum(sizes) == 300 and max(sizes) <= 64, sizes
    whole = np.asarray([e.embedding for e in embedded.data])
    assert whole.shape == (300, 384)
    assert np.allclose(whole[299], (await embed(["text 299"]))[0], atol=1e-5)


QUESTION_MESSAGES: Any = [{"role": "user", "content": QUESTION}]


@pytest.mark.parametrize(
    ("extra_body", "param", "message"),
    [
        # Each was ignored: one choice for n=2, text for JSON, no tool call for "required", logprobs null.
        ({"n": 2}, "n", "n: one answer is generated per request: n must be 1"),
        (
            {"response_format": {"type": "json_object"}},
            "response_format",
            "response_format: answers are cited text: response_format 'json_object' is not supported",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
            "response_format",
            "response_format: answers are cited text: response_format 'json_schema' is not supported",
        ),
        (
            {"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tool_choice",
            "tool_choice: this server calls no tools: tool_choice must be 'auto' or 'none'",
        ),
        # Legacy function calling's forced call (both SDKs still send `function_call`): it was ignored,
        # the caller got text where it relies on a call.
        (
            {"function_call": {"name": "f"}, "functions": [{"name": "f", "parameters": {"type": "object"}}]},
            "function_call",
            "function_call: this server calls no functions: function_call must be 'auto' or 'none'",
        ),
        # JSON's true/false is no number (OpenAI's 400): pydantic read true as 1, an answer of one token.
        ({"max_tokens": True}, "max_tokens", "max_tokens: a number, not true/false"),
        ({"max_completion_tokens": True}, "max_completion_tokens", "max_completion_tokens: a number"),
        ({"temperature": True}, "temperature", "temperature: a number, not true/false"),
        ({"n": True}, "n", "n: a number, not true/false"),
        (
            {"logprobs": True},
            "logprobs",
            "logprobs: log probabilities are not available: logprobs must be false",
        ),
        # OpenAI's 400: usage in a last chunk asked of an answer that is not streamed (it was ignored).
        (
            {"stream_options": {"include_usage": True}},
            "stream_options",
            "stream_options: The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ),
        # A validator's own sentence, without pydantic's "Value error, " in front of it.
        (
            {"messages": [{"role": "system", "content": "hi"}]},
            "messages",
            "messages: messages must contain a user message",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": QUESTION},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                        ],
                    }
                ]
            },
            "messages.0.content.1",
            "messages.0.content.1: a part of type 'image_url' cannot be read: only text parts are",
        ),
    ],
)
async def test_what_the_server_cannot_honour_is_an_openai_400_naming_it(
    reader: openai.AsyncOpenAI, extra_body: dict[str, Any], param: str, message: str
) -> None:
    body: dict[str, Any] = {"model": "rag:alpha", "messages": QUESTION_MESSAGES, **extra_body}
    with pytest.raises(openai.BadRequestError) as caught:
        await reader.chat.completions.create(**body)
    error = caught.value.response.json()["error"]
    assert error["param"] == param and error["message"].startswith(message), error


async def test_sampling_hints_and_optional_tools_are_accepted(reader: openai.AsyncOpenAI) -> None:
    completion = await reader.chat.completions.create(
        model="rag:alpha",
        messages=[{"role": "developer", "content": "Be brief."}, *QUESTION_MESSAGES],
        n=1,
        top_p=0.9,
        seed=7,
        user="u1",
        presence_penalty=0.1,
        response_format={"type": "text"},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice="auto",
        logprobs=False,
    )
    assert len(completion.choices) == 1 and "BM25" in (completion.choices[0].message.content or "")


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        ({"input": [[1, 2, 3]]}, "input", "input: token ids are not accepted, send the text"),
        ({"input": [1, 2, 3]}, "input", "input: token ids are not accepted, send the text"),
        (
            {"input": "x", "dimensions": 10},
            "dimensions",
            "dimensions: this model's embeddings have 384 dimensions",
        ),
        # JSON's true is no number: it was read as 1 ("cannot be shortened to 1").
        ({"input": "x", "dimensions": True}, "dimensions", "dimensions: a number, not true/false"),
    ],
)
async def test_embeddings_the_model_cannot_make_are_an_openai_400(
    reader: openai.AsyncOpenAI, kwargs: dict[str, Any], param: str | None, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await reader.embeddings.create(model="rag:alpha", **kwargs)
    error = caught.value.response.json()["error"]
    assert error["param"] == param and error["message"].startswith(message), error
    same = await reader.embeddings.create(model="rag:alpha", input="x", dimensions=384)
    assert len(same.data[0].embedding) == 384


async def test_an_operation_this_server_lacks_is_not_a_missing_model(reader: openai.AsyncOpenAI) -> None:
    # `client.completions` (and responses, images...): the 404 said code model_not_found, message
    # "Not Found", so the SDK's NotFoundError blamed the model.
    with pytest.raises(openai.NotFoundError) as caught:
        await reader.completions.create(model="rag:alpha", prompt="What is BM25?")
    error = caught.value.response.json()["error"]
    assert error["code"] is None and error["type"] == "invalid_request_error"
    assert error["message"].startswith("Invalid URL (POST /v1/completions): this server's OpenAI-compatible")
    assert "POST /v1/chat/completions" in error["message"]
    # A model id with a slash (an embedding model's name) is still a model lookup.
    with pytest.raises(openai.NotFoundError) as caught:
        await reader.models.retrieve("sentence-transformers/all-MiniLM-L6-v2")
    assert caught.value.response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "earlier",
    [
        # Legacy function calling: a `function` message (both SDKs' ChatCompletionFunctionMessageParam)
        # after the assistant's `function_call`. It was a 400 "messages.2.role: Input should be ...".
        [
            {"role": "user", "content": "Look it up."},
            {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": "{}"}},
            {"role": "function", "name": "lookup", "content": "nothing found"},
        ],
        # An assistant's refusal as a content part (ChatCompletionContentPartRefusalParam, what an
        # assistant message's parts may be besides text). It was a 400 "a part of type 'refusal' cannot
        # be read".
        [
            {"role": "user", "content": "Tell me a secret."},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot help with that."}]},
        ],
    ],
    ids=["function-message", "refusal-part"],
)
async def test_earlier_turns_of_every_openai_message_type_are_accepted(
    reader: openai.AsyncOpenAI, earlier: Any
) -> None:
    completion = await reader.chat.completions.create(
        model="rag:alpha", messages=[*earlier, *QUESTION_MESSAGES]
    )
    assert "BM25" in (completion.choices[0].message.content or "")


async def test_a_long_conversation_is_answered_not_refused(reader: openai.AsyncOpenAI) -> None:
    # A chat client resends the whole conversation: from its 101st question on (201 messages) every
    # turn was a 400 "messages: List should have at most 200 items", the conversation dead for good.
    # OpenAI's own bound is 2048 messages; the server reads only the newest (chat_history_messages).
    earlier: Any = [
        {"role": role, "content": f"{role} turn {i}"} for i in range(150) for role in ("user", "assistant")
    ]
    completion = await reader.chat.completions.create(
        model="rag:alpha", messages=[*earlier, *QUESTION_MESSAGES]
    )
    assert "BM25" in (completion.choices[0].message.content or "")
    with pytest.raises(openai.BadRequestError) as caught:
        await reader.chat.completions.create(model="rag:alpha", messages=[*QUESTION_MESSAGES] * 2049)
    assert caught.value.response.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/models"),
        ("GET", "/models/rag:alpha"),
        ("POST", "/chat/completions"),
        ("POST", "/embeddings"),
        ("POST", "/responses"),
        ("POST", "/completions"),
    ],
)
async def test_an_openai_client_whose_base_url_lacks_v1_is_told_so(
    app_client: httpx.AsyncClient, world: World, method: str, path: str
) -> None:
    # `OpenAI(base_url="http://host:8000")`, /v1 forgotten: the SDK asks for /chat/completions... The
    # 404 was `{"detail": "Not Found"}`, which openai 3.x shows as "Error code: 404" and nothing else
    # (it reads `error.message`; 2.x printed the whole body): the message must say where the API is.
    headers = {"Authorization": f"Bearer {world.alpha_reader}"}
    body = {"model": "rag:alpha", "messages": QUESTION_MESSAGES, "input": "x", "prompt": "x"}
    r = await app_client.request(method, path, headers=headers, json=body if method == "POST" else None)
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] is None, error
    assert error["message"].startswith(f"Invalid URL ({method} {path}): "), error
    assert f"/v1{path}" in error["message"] and "base_url" in error["message"], error
    assert r.json()["detail"] == error["message"]  # the REST API's shape, kept beside OpenAI's


async def test_the_sdk_names_the_missing_v1_in_its_error(app: FastAPI, world: World) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with openai.AsyncOpenAI(
        base_url=APP_BASE_URL,
        api_key=world.alpha_reader,
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport, timeout=60),
    ) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="rag:alpha", messages=QUESTION_MESSAGES)
    # What openai 3.x puts after "Error code: 404 - " (the 2.x client reads the same `body`).
    body: Any = caught.value.body
    assert "/v1/chat/completions" in body["message"], body


async def test_a_bad_key_is_an_authentication_error(app: FastAPI, world: World) -> None:
    async with client_for(app, "rag_" + "x" * 43) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.models.list()
    assert caught.value.response.json()["error"]["code"] == "invalid_api_key"


# "rag:aaa...": within the /v1 model id's 200 characters, longer than any collection reference (100).
@pytest.mark.parametrize(
    "model",
    [
        "rag:beta",
        "rag:beta:vector",
        "rag:nope",
        "gpt-4o",
        "rag:alpha:fuzzy",
        "rag:alpha:",
        "rag:" + "a" * 150,
    ],
)
async def test_a_model_out_of_reach_is_not_found(reader: openai.AsyncOpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await reader.chat.completions.create(model=model, messages=[{"role": "user", "content": "pasta?"}])
    assert caught.value.response.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await reader.embeddings.create(model=model, input="pasta")
    # Out of the key's reach or not there at all: the same answer, naming only the id asked for.
    with pytest.raises(openai.NotFoundError) as caught:
        await reader.models.retrieve(model)
    assert caught.value.response.json()["error"] == {
        "message": f"The model {model!r} does not exist or this API key cannot read it",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }


# --- with an LLM ------------------------------------------------------------------------------------


def with_fake_llm(settings: Settings, fake_llm: FakeLLM, **changes: Any) -> Settings:
    return settings.model_copy(
        update={
            "llm_provider": "openai",
            "llm_base_url": fake_llm.base_url,
            "llm_model": "fake-model",
            "llm_timeout_s": 5.0,
            "llm_max_retries": 0,
            # Follow-ups the fake LLM condenses into "Standalone: and k1?", which no passage resembles:
            # chat's floor under its sources (test_search_floor.py) is off, every question gets sources.
            "chat_min_similarity": -1.0,
            **changes,
        }
    )


@pytest.fixture(scope="module")
async def llm_app(settings: Settings, app: FastAPI, fake_llm: FakeLLM) -> AsyncIterator[FastAPI]:
    application = create_app(with_fake_llm(settings, fake_llm), embedder=app.state.runtime.embedder)
    async with application.router.lifespan_context(application):
        yield application


async def test_streamed_tokens_come_from_the_llm_with_the_callers_options(
    llm_app: FastAPI, fake_llm: FakeLLM, world: World, runtime: Runtime
) -> None:
    fake_llm.reset()
    sessions_before = await runtime.pool.fetchval("SELECT count(*) FROM chat_sessions")
    messages: list[Any] = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "BM25 is a ranking function [1]."},
        {"role": "user", "content": [{"type": "text", "text": "and k1?"}]},
    ]
    async with client_for(llm_app, world.alpha_reader) as client:
        stream = await client.chat.completions.create(
            model="rag:alpha", messages=messages, stream=True, temperature=0.5, max_tokens=64, stop=["\n\n"]
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "According to the sources, the answer to 'and k1?' is grounded [1]."
    assert len([c for c in chunks if c.choices[0].delta.content]) > 1  # token by token
    assert extra(chunks[0], "sources")[0]["document_id"] == world.docs["bm25.txt"]
    # The history was condensed (no title: nothing is stored), then answered with the caller's options.
    assert fake_llm.kinds() == ["condense", "answer"]
    answer = fake_llm.requests[1]
    assert (answer["temperature"], answer["max_tokens"], answer["stop"]) == (0.5, 64, ["\n\n"])
    assert [m["role"] for m in answer["messages"]] == ["system", "user", "assistant", "user"]
    assert await runtime.pool.fetchval("SELECT count(*) FROM chat_sessions") == sessions_before


async def test_the_callers_system_and_developer_messages_reach_the_answer_under_the_servers_rules(
    llm_app: FastAPI, fake_llm: FakeLLM, world: World
) -> None:
    """A chat UI's system prompt (Open WebUI's, an agent's instructions) sets the answer's language, tone
    or format: it is kept in the answer's system prompt after the server's rules, which it cannot lift.
    They were left out, so "Answer in French" was never seen by the LLM."""
    fake_llm.reset()
    messages: Any = [
        {"role": "system", "content": "Answer in French."},
        {"role": "developer", "content": "Keep it to one sentence."},
        {"role": "user", "content": QUESTION},
    ]
    async with client_for(llm_app, world.alpha_reader) as client:
        await client.chat.completions.create(model="rag:alpha", messages=messages)
    system, *turns = fake_llm.requests[-1]["messages"]
    assert system["role"] == "system"
    text = system["content"]
    rules, caller, sources = (
        text.index("Cite every source"),
        text.index("Answer in French."),
        text.index("Sources:"),
    )
    assert rules < caller < text.index("Keep it to one sentence.") < sources
    assert "HNSW" in text[sources:] or "BM25" in text[sources:]
    assert [m["role"] for m in turns] == ["user"]


@pytest.mark.parametrize(
    "before",
    [
        # A chat UI's greeting first (Streamlit's chat example): an assistant message before any question.
        [{"role": "assistant", "content": "How can I help you?"}],
        # A question sent again after a failed answer: two user messages in a row.
        [{"role": "user", "content": "Hello?"}],
        # An empty assistant message between two questions (a tool call's), which the history drops.
        [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": ""}],
    ],
    ids=["greeting-first", "user-twice", "blank-answer"],
)
async def test_the_llm_gets_roles_that_alternate_whatever_the_caller_sent(
    llm_app: FastAPI, fake_llm: FakeLLM, world: World, before: list[Any]
) -> None:
    # Many models' chat templates (vLLM, llama.cpp: Mistral, Llama 2, Gemma) refuse a conversation whose
    # roles do not alternate user/assistant from a user message: every answer fell back to extractive.
    fake_llm.reset()
    fake_llm.behaviour = Behaviour(alternating_roles=True)
    messages: Any = [*before, {"role": "user", "content": QUESTION}]
    async with client_for(llm_app, world.alpha_reader) as client:
        completion = await client.chat.completions.create(model="rag:alpha", messages=messages)
    assert extra(completion, "llm_error") is None
    assert completion.choices[0].message.content.startswith("According to the sources")
    answer = fake_llm.requests[-1]
    assert [m["role"] for m in answer["messages"]] == ["system", "user"]
    assert answer["messages"][-1]["content"].endswith(QUESTION)


async def test_a_greeting_alone_before_the_question_is_not_condensed(
    llm_app: FastAPI, fake_llm: FakeLLM, world: World
) -> None:
    # No earlier question: nothing for a follow-up to lean on. Condensing cost an LLM call before the
    # answer could start, and rewrote a standalone question for nothing.
    fake_llm.reset()
    messages: Any = [
        {"role": "assistant", "content": "How can I help you?"},
        {"role": "user", "content": QUESTION},
    ]
    async with client_for(llm_app, world.alpha_reader) as client:
        completion = await client.chat.completions.create(model="rag:alpha", messages=messages)
    assert extra(completion, "llm_error") is None and fake_llm.kinds() == ["answer"]


async def test_a_long_conversation_is_cut_to_the_llms_context_oldest_first(
    settings: Settings, app: FastAPI, fake_llm: FakeLLM, world: World
) -> None:
    # A conversation longer than the model's context (a pasted text, a long session) made the provider
    # refuse every prompt: the condense step and the answer both fell back to extractive, turn after
    # turn. The oldest messages go first; the newest exchange and the question stay.
    fake_llm.reset()
    fake_llm.behaviour = Behaviour(context_tokens=3000)
    small = with_fake_llm(settings, fake_llm, llm_context_tokens=4096)  # the budget keeps room for the answer
    pasted = " ".join(["lorem"] * 1800)
    messages: Any = [
        {"role": "user", "content": f"Summarise this: {pasted}"},
        {"role": "assistant", "content": "It is placeholder text [1]."},
        {"role": "user", "content": f"And this: {pasted}"},
        {"role": "assistant", "content": "More placeholder text [1]."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "BM25 is a ranking function [1]."},
        {"role": "user", "content": "and k1?"},
    ]
    application = create_app(small, embedder=app.state.runtime.embedder)
    async with (
        application.router.lifespan_context(application),
        client_for(application, world.alpha_reader) as client,
    ):
        completion = await client.chat.completions.create(model="rag:alpha", messages=messages)
    assert extra(completion, "llm_error") is None
    assert completion.choices[0].message.content.startswith("According to the sources")
    condense, answer = fake_llm.requests
    for prompt in (condense, answer):
        assert "Summarise this" not in json.dumps(prompt) and QUESTION in json.dumps(prompt)
    assert [(m["role"], m["content"]) for m in answer["messages"][-3:]] == [
        ("user", QUESTION),
        ("assistant", "BM25 is a ranking function."),  # an earlier turn's [1] named its own sources
        ("user", "and k1?"),
    ]


async def test_only_the_sources_that_fit_the_llms_context_are_given_shown_and_cited(
    settings: Settings, app: FastAPI, runtime: Runtime, fake_llm: FakeLLM, world: World
) -> None:
    # Sources alone could outgrow a small context (a large top_k, long chunks): the provider refused the
    # prompt and the answer fell back to extractive, over sources the LLM had never been given.
    collection = await store.create_collection(runtime.pool, CreateCollection(name="tides"))
    texts = {f"tides-{i}.txt": f"Tide table {i}. {long_text(900, seed=i)}" for i in range(3)}
    await ingest_documents_direct(
        runtime, [DirectDocument(n, t.encode(), {}) for n, t in texts.items()], collection_id=collection.id
    )
    fake_llm.reset()
    fake_llm.behaviour = Behaviour(context_tokens=1100)  # the fake counts words
    small = with_fake_llm(settings, fake_llm, llm_context_tokens=1024)
    application = create_app(small, embedder=app.state.runtime.embedder)
    transport = httpx.ASGITransport(app=application)
    headers = {"Authorization": f"Bearer {world.admin}"}
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=transport, base_url=APP_BASE_URL, timeout=60) as client,
    ):
        body = {"query": "Which tide table?", "collections": ["tides"], "top_k": 20}
        reply = await client.post("/query", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["answer_mode"] == "llm" and answer["llm_error"] is None, answer
    [prompt] = [r for r in fake_llm.requests if request_kind(r) == "answer"]
    given = json.dumps(prompt)
    shown = [s["n"] for s in answer["sources"]]
    assert 1 <= len(shown) < 20 and shown == list(range(1, len(shown) + 1)), shown
    assert f"[{len(shown)}] (" in given and f"[{len(shown) + 1}] (" not in given


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_answer_cut_by_max_tokens_says_length(
    llm_app: FastAPI, fake_llm: FakeLLM, world: World, stream: bool
) -> None:
    # OpenAI's clients learn from finish_reason that an answer was cut; it always said "stop".
    fake_llm.reset()
    messages: Any = [{"role": "user", "content": QUESTION}]
    async with client_for(llm_app, world.alpha_reader) as client:
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="rag:alpha", messages=messages, max_tokens=3, stream=True
                )
                if c.choices
            ]
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            completion = await client.chat.completions.create(
                model="rag:alpha", messages=messages, max_tokens=3
            )
            text, finish = completion.choices[0].message.content or "", completion.choices[0].finish_reason
        assert (text, finish) == ("According to the", "length")
        whole = await client.chat.completions.create(model="rag:alpha", messages=messages, max_tokens=500)
    assert whole.choices[0].finish_reason == "stop" and whole.choices[0].message.content.endswith("[1].")


async def test_a_body_that_is_not_json_is_an_openai_400_only_under_v1(
    app_client: httpx.AsyncClient, world: World
) -> None:
    headers = {"Authorization": f"Bearer {world.alpha_reader}", "Content-Type": "application/json"}
    r = await app_client.post("/v1/chat/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # Named as what it is, not with the character offset as the parameter (it said param "1").
    assert r.json()["error"]["param"] is None
    assert r.json()["error"]["message"].startswith("the body is not valid JSON: "), r.json()
    r = await app_client.post("/query", content=b"{not json", headers=headers)
    assert r.status_code == 422 and set(r.json()) == {"detail"}
    missing = await app_client.post("/v1/chat/completions", json={"messages": []}, headers=headers)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"


def reported(fake: FakeLLM) -> dict[str, int]:
    """The usage the fake reported over every call it answered (what /v1 must add up, nothing more)."""
    calls = [usage_for(body, reply_for(body)) for body in fake.requests]
    return {
        name: sum(call[name] for call in calls)
        for name in ("prompt_tokens", "completion_tokens", "total_tokens")
    }


async def test_usage_is_what_the_llm_reported(llm_app: FastAPI, fake_llm: FakeLLM, world: World) -> None:
    messages: list[Any] = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "BM25 is a ranking function [1]."},
        {"role": "user", "content": "and k1?"},
    ]
    async with client_for(llm_app, world.alpha_reader) as client:
        fake_llm.reset()
        completion = await client.chat.completions.create(model="rag:alpha", messages=messages)
        assert fake_llm.kinds() == ["condense", "answer"]
        assert fake_llm.requests[1]["stream_options"] == {"include_usage": True}  # asked upstream
        assert completion.usage is not None
        assert completion.usage.model_dump(exclude_none=True) == reported(fake_llm)

        fake_llm.reset()
        stream = await client.chat.completions.create(
            model="rag:alpha", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.model_dump(exclude_none=True) == reported(fake_llm)
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert all(c.usage is None for c in chunks[:-1])

        fake_llm.reset()
        stream = await client.chat.completions.create(model="rag:alpha", messages=messages, stream=True)
        assert all(c.usage is None and c.choices for c in [chunk async for chunk in stream])

        # An LLM that reports no usage: none, rather than made-up zeros.
        fake_llm.reset()
        fake_llm.behaviour = Behaviour(report_usage=False)
        completion = await client.chat.completions.create(model="rag:alpha", messages=messages)
        assert completion.usage is None and completion.choices[0].message.content
        stream = await client.chat.completions.create(
            model="rag:alpha", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].choices == [] and chunks[-1].usage is None
    fake_llm.reset()


async def test_extractive_answers_report_no_usage(reader: openai.AsyncOpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    completion = await reader.chat.completions.create(model="rag:alpha", messages=messages)
    assert completion.usage is None and extra(completion, "llm_error") is None
    stream = await reader.chat.completions.create(
        model="rag:alpha", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is None


async def test_an_llm_failing_mid_stream_is_followed_by_the_extractive_answer(
    llm_app: FastAPI, fake_llm: FakeLLM, world: World
) -> None:
    fake_llm.reset()
    fake_llm.behaviour = Behaviour(drop_after_tokens=3, affects={"answer"})
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    try:
        async with client_for(llm_app, world.alpha_reader) as client:
            stream = await client.chat.completions.create(
                model="rag:alpha:bm25", messages=messages, stream=True
            )
            chunks = [chunk async for chunk in stream]
            complete = await client.chat.completions.create(model="rag:alpha:bm25", messages=messages)
    finally:
        fake_llm.reset()
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    partial, _, rest = text.partition("\n\n---\n")
    assert partial == "According to the "  # the LLM's first three tokens
    error = extra(chunks[-1], "llm_error")
    assert error and "fake-model" in error and chunks[-1].choices[0].finish_reason == "stop"
    assert rest.startswith(error + "\n\n" + FALLBACK_HEADER)
    # The fallback is the answer a non-streamed request gets when the LLM fails the same way.
    assert rest.removeprefix(error + "\n\n") == complete.choices[0].message.content
    assert extra(complete, "llm_error") and complete.usage is None
