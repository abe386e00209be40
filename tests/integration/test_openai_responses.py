"""OpenAI's Responses API (`POST /v1/responses`) through the official `openai` client, over real HTTP.

Two servers on sockets in this process: one without an LLM (extractive answers) and one whose LLM is the
fake OpenAI-compatible server (tests/fakes/llm_server.py). Collections `alpha` (BM25 and HNSW texts) and
`beta` (pasta); a reader key limited to alpha makes the API secured.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai.types.responses import Response
from openai.types.responses.response_output_text import AnnotationFileCitation

from rag_server.api.app import create_app
from rag_server.chat.answer import EXTRACTIVE_HEADER, FALLBACK_HEADER
from rag_server.chat.service import ChatService
from rag_server.chat.turn import Turn
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from tests.fakes.llm_server import Behaviour, FakeLLM
from tests.integration.test_openai_api import QUESTION, World, reported, seed_world, with_fake_llm
from tests.support.live_app import serve_in_thread

LLM_ANSWER = f"According to the sources, the answer to '{QUESTION}' is grounded [1]."
STREAM_EVENTS_BEFORE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
STREAM_EVENTS_AFTER = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


@pytest.fixture(scope="module")
async def world(runtime: Runtime) -> World:
    return await seed_world(runtime)


@pytest.fixture(scope="module")
def plain_url(settings: Settings, app: FastAPI, world: World) -> Iterator[str]:
    """The server without an LLM (the `app` fixture's embedder, shared)."""
    with serve_in_thread(create_app(settings, embedder=app.state.runtime.embedder)) as url:
        yield url


@pytest.fixture(scope="module")
def llm_url(settings: Settings, app: FastAPI, fake_llm: FakeLLM, world: World) -> Iterator[str]:
    """The server whose LLM is the fake one."""
    application = create_app(with_fake_llm(settings, fake_llm), embedder=app.state.runtime.embedder)
    with serve_in_thread(application) as url:
        yield url


@pytest.fixture
def llm(llm_url: str, world: World, fake_llm: FakeLLM) -> Iterator[openai.OpenAI]:
    fake_llm.reset()
    with openai.OpenAI(base_url=f"{llm_url}/v1", api_key=world.alpha_reader, max_retries=0, timeout=60) as c:
        yield c
    fake_llm.reset()


@pytest.fixture
def plain(plain_url: str, world: World) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{plain_url}/v1", api_key=world.alpha_reader, max_retries=0, timeout=60
    ) as client:
        yield client


@pytest.fixture
async def aplain(plain_url: str, world: World) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{plain_url}/v1", api_key=world.alpha_reader, max_retries=0, timeout=60
    ) as client:
        yield client


def extra(obj: Any, name: str) -> Any:
    """An extra top-level field (not in the SDK's types) of a response."""
    return (obj.model_extra or {}).get(name)


def assert_a_valid_response(response: Response) -> None:
    """Every field the SDK's Response type requires is there, of its type (the SDK itself only constructs,
    without validating: a missing field would surface later, as an AttributeError in a client)."""
    Response.model_validate(response.to_dict())


# --- with the LLM -----------------------------------------------------------------------------------


def test_a_response_is_the_llms_cited_answer_with_sources_and_usage(
    llm: openai.OpenAI, fake_llm: FakeLLM, world: World
) -> None:
    response = llm.responses.create(model="rag:alpha", input=QUESTION)
    assert_a_valid_response(response)
    assert response.output_text == LLM_ANSWER
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.incomplete_details is None and response.error is None
    assert response.model == "rag:alpha" and response.created_at > 0
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_")
    assert [part.type for part in message.content] == ["output_text"]
    sources = extra(response, "sources")
    assert sources and sources[0]["document_id"] == world.docs["bm25.txt"]
    # The [1] of the text as OpenAI's file citation (the SDK parses it into its own type).
    [citation] = message.content[0].annotations
    assert isinstance(citation, AnnotationFileCitation)
    assert (citation.file_id, citation.filename) == (world.docs["bm25.txt"], sources[0]["document_name"])
    assert citation.index == LLM_ANSWER.index("[1]")
    assert {s["document_id"] for s in sources} <= {world.docs["bm25.txt"], world.docs["hnsw.txt"]}
    assert fake_llm.kinds() == ["answer"]
    assert response.usage is not None
    usage = reported(fake_llm)
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )


def test_a_message_list_is_the_conversation_and_the_options_reach_the_llm(
    llm: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    conversation: Any = [
        {"role": "user", "content": QUESTION},
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "BM25 is a ranking function [1].", "annotations": []}
            ],
        },
        {"role": "user", "content": [{"type": "input_text", "text": "and k1?"}]},
    ]
    response = llm.responses.create(
        model="rag:alpha",
        input=conversation,
        instructions="Answer like a pirate.",
        temperature=0.5,
        max_output_tokens=64,
    )
    assert response.output_text == "According to the sources, the answer to 'and k1?' is grounded [1]."
    # The follow-up was condensed with the history, then answered with the caller's options.
    assert fake_llm.kinds() == ["condense", "answer"]
    condense, answer = fake_llm.requests
    assert QUESTION in json.dumps(condense) and "and k1?" in json.dumps(condense)
    assert (answer["temperature"], answer["max_tokens"]) == (0.5, 64)
    assert [m["role"] for m in answer["messages"]] == ["system", "user", "assistant", "user"]
    assert answer["messages"][1]["content"].endswith(QUESTION)
    assert answer["messages"][2]["content"] == "BM25 is a ranking function."  # its [1] named its sources
    assert answer["messages"][3]["content"].endswith("and k1?")
    # `instructions` reach the answer's system prompt, after the server's own rules and before the
    # sources (chat/prompts.py CALLER_INSTRUCTIONS); the condensing call does not need them.
    system = answer["messages"][0]["content"]
    assert (
        system.index("Cite every source") < system.index("Answer like a pirate.") < system.index("Sources:")
    )
    assert "pirate" not in json.dumps(condense)
    assert response.instructions == "Answer like a pirate." and response.temperature == 0.5


def event_types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def test_a_streamed_response_is_openais_event_sequence(llm: openai.OpenAI, world: World) -> None:
    events = list(llm.responses.create(model="rag:alpha", input=QUESTION, stream=True))
    types = event_types(events)
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1  # token by token
    text_deltas = ["response.output_text.delta"] * len(deltas)
    annotated = ["response.output_text.annotation.added"]  # the one [1], once the text is whole
    assert types == [
        *STREAM_EVENTS_BEFORE,
        *text_deltas,
        *annotated,
        *STREAM_EVENTS_AFTER,
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    assert text == LLM_ANSWER
    created, completed = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.id == completed.id
    item_id = events[2].item.id
    assert events[2].item.content == [] and events[3].part.text == ""
    assert {e.item_id for e in deltas} == {item_id} and completed.output[0].id == item_id
    assert events[-4].text == text and events[-3].part.text == text and events[-2].item.status == "completed"
    assert_a_valid_response(completed)
    assert completed.status == "completed" and completed.output_text == text
    assert extra(completed, "sources")[0]["document_id"] == world.docs["bm25.txt"]
    assert completed.usage is not None and completed.usage.output_tokens > 0
    [added] = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert (added.item_id, added.annotation_index, added.content_index) == (item_id, 0, 0)
    assert completed.output[0].content[0].annotations == events[-3].part.annotations
    assert [a.to_dict() for a in completed.output[0].content[0].annotations] == [added.annotation]
    assert added.annotation["file_id"] == world.docs["bm25.txt"] and added.annotation["index"] == text.index(
        "[1]"
    )


def test_the_sdks_stream_helper_gets_the_final_response(llm: openai.OpenAI, world: World) -> None:
    with llm.responses.stream(model="rag:alpha", input=QUESTION) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == LLM_ANSWER == final.output_text
    assert final.status == "completed"
    assert [a.file_id for a in final.output[0].content[0].annotations] == [world.docs["bm25.txt"]]
    assert extra(final, "sources")[0]["document_id"] == world.docs["bm25.txt"]


def test_the_sse_framing_names_each_event(llm_url: str, world: World) -> None:
    body = {"model": "rag:alpha", "input": QUESTION, "stream": True}
    headers = {"Authorization": f"Bearer {world.alpha_reader}"}
    response = httpx.post(f"{llm_url}/v1/responses", json=body, headers=headers, timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = response.text.split("\n\n")
    assert blocks[-1] == "" and len(blocks) > 9
    for number, block in enumerate(blocks[:-1]):
        event, data = block.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert event == f"event: {payload['type']}" and payload["sequence_number"] == number, block
    assert json.loads(blocks[-2].split("\n")[1].removeprefix("data: "))["response"]["sources"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_answer_cut_by_max_output_tokens_is_incomplete(llm: openai.OpenAI, stream: bool) -> None:
    if stream:
        events = list(
            llm.responses.create(model="rag:alpha", input=QUESTION, max_output_tokens=3, stream=True)
        )
        assert events[-1].type == "response.incomplete"  # what OpenAI sends instead of response.completed
        assert events[-2].item.status == "incomplete"
        response = events[-1].response
    else:
        response = llm.responses.create(model="rag:alpha", input=QUESTION, max_output_tokens=3)
    assert_a_valid_response(response)
    assert response.output_text == "According to the"
    assert response.status == "incomplete" and response.output[0].status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.max_output_tokens == 3
    whole = llm.responses.create(model="rag:alpha", input=QUESTION, max_output_tokens=500)
    assert whole.status == "completed" and whole.incomplete_details is None


def test_an_llm_failing_mid_stream_is_followed_by_the_extractive_answer(
    llm: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    # As /v1/chat/completions: the partial answer, a note saying what failed, the extractive answer, and
    # `llm_error` on the response; the response is complete (its text is whole, if not the LLM's).
    fake_llm.behaviour = Behaviour(drop_after_tokens=3, affects={"answer"})
    events = list(llm.responses.create(model="rag:alpha:bm25", input=QUESTION, stream=True))
    whole = llm.responses.create(model="rag:alpha:bm25", input=QUESTION)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    partial, _, rest = text.partition("\n\n---\n")
    assert partial == "According to the "  # the LLM's first three tokens
    completed = events[-1].response
    assert events[-1].type == "response.completed" and completed.output_text == text
    error = extra(completed, "llm_error")
    assert error and "fake-model" in error
    assert rest.startswith(error + "\n\n" + FALLBACK_HEADER)
    # The fallback is the answer a non-streamed request gets when the LLM fails the same way.
    assert rest.removeprefix(error + "\n\n") == whole.output_text
    assert extra(whole, "llm_error") and whole.usage is None and whole.status == "completed"


def test_a_failure_after_the_stream_started_is_response_failed(
    llm: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the LLM's (that one falls back to the extractive answer): the headers are gone, so the stream
    # ends with OpenAI's response.failed, which the SDK parses, rather than a bare error payload.
    async def failing(self: ChatService, turn: Turn) -> AsyncIterator[str]:
        yield ""
        yield "Partial"
        raise RuntimeError("the answer broke")

    monkeypatch.setattr(ChatService, "generate", failing)
    events = list(llm.responses.create(model="rag:alpha", input=QUESTION, stream=True))
    assert event_types(events) == [*STREAM_EVENTS_BEFORE, "response.output_text.delta", "response.failed"]
    failed = events[-1].response
    assert_a_valid_response(failed)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    assert failed.error.message == "the answer failed: RuntimeError: the answer broke"


def test_a_client_leaving_mid_stream_stops_the_llm_stream(
    llm_url: str, world: World, fake_llm: FakeLLM
) -> None:
    fake_llm.reset()
    fake_llm.behaviour = Behaviour(hang_after_tokens=2, affects={"answer"})
    body = {"model": "rag:alpha", "input": QUESTION, "stream": True}
    headers = {"Authorization": f"Bearer {world.alpha_reader}"}
    try:
        with (
            httpx.Client(timeout=60) as client,
            client.stream("POST", f"{llm_url}/v1/responses", json=body, headers=headers) as response,
        ):
            for line in response.iter_lines():
                if line == "event: response.output_text.delta":
                    break  # the answer is streaming: leave
        fake_llm.wait_for_aborted(1)  # the server closed its LLM stream (the fake hangs until then)
    finally:
        fake_llm.reset()


# --- without an LLM ---------------------------------------------------------------------------------


async def test_without_an_llm_the_answer_is_extractive_streamed_or_not(
    aplain: openai.AsyncOpenAI, world: World
) -> None:
    response = await aplain.responses.create(model="rag:alpha:bm25", input=QUESTION)
    assert_a_valid_response(response)
    assert response.output_text.startswith(EXTRACTIVE_HEADER) and "[1]" in response.output_text
    assert response.status == "completed" and response.usage is None and extra(response, "llm_error") is None
    sources = {s["n"]: s["document_id"] for s in extra(response, "sources")}
    assert sources[1] == world.docs["bm25.txt"]
    # Each [n] of the extractive answer is a file citation of source n, where its marker is.
    annotations = response.output[0].content[0].annotations
    assert len(annotations) == response.output_text.count("[") >= 1
    for a in annotations:
        assert isinstance(a, AnnotationFileCitation)
        n = int(response.output_text[a.index + 1 : response.output_text.index("]", a.index)])
        assert a.file_id == sources[n]
    events = [
        e async for e in await aplain.responses.create(model="rag:alpha:bm25", input=QUESTION, stream=True)
    ]
    assert event_types(events)[:4] == STREAM_EVENTS_BEFORE and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == response.output_text == events[-1].response.output_text
    assert events[-1].response.usage is None
    async with aplain.responses.stream(model="rag:alpha:bm25", input=QUESTION) as stream:
        final = await stream.get_final_response()
    assert final.output_text == response.output_text


def test_what_the_sdk_sends_by_default_and_hints_are_accepted(plain: openai.OpenAI) -> None:
    response = plain.responses.create(
        model="rag:alpha",
        input=[
            {"type": "message", "role": "developer", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
        ],
        metadata={"run": "1"},
        user="u1",
        top_p=0.9,
        store=True,
        parallel_tool_calls=False,
        truncation="auto",
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}],
        tool_choice="auto",
        text={"format": {"type": "text"}},
        background=False,
    )
    assert response.status == "completed" and "BM25" in response.output_text


TWO_PARTS: Any = [{"type": "input_text", "text": "a" * 15_000}, {"type": "input_text", "text": "b" * 15_000}]
TOOLS: Any = [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}]


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        # Stored responses are continued by previous_response_id (test_openai_stored_responses.py); OpenAI's
        # Conversations API is not served.
        ({"conversation": "conv_123"}, "conversation", "conversation: this server keeps no conversations"),
        (
            {"tools": TOOLS, "tool_choice": "required"},
            "tool_choice",
            "tool_choice: this server calls no tools",
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "name": "f"}},
            "tool_choice",
            "tool_choice: this server calls no tools",
        ),
        ({"text": {"format": {"type": "json_object"}}}, "text.format", "text.format: answers are cited text"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}},
            "text.format",
            "text.format: answers are cited text: text.format 'json_schema' is not supported",
        ),
        ({"background": True}, "background", "background: "),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": QUESTION},
                            {
                                "type": "input_image",
                                "image_url": "data:image/png;base64,AA==",
                                "detail": "auto",
                            },
                        ],
                    }
                ]
            },
            "input.0.content.1",
            "input.0.content.1: a part of type 'input_image' cannot be read: only text parts are",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
            "input.0.content.0",
            "input.0.content.0: a part of type 'input_file' cannot be read",
        ),
        # A `type` that is no string was a 500 (TypeError: unhashable type), as the API fuzz test found.
        (
            {"input": [{"type": ["message"], "role": "user", "content": QUESTION}]},
            "input.0",
            "input.0: an input item of type \"['message']\" cannot be read: only messages are",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": ["input_text"], "text": QUESTION}]}]},
            "input.0.content.0",
            "input.0.content.0: a part of type \"['input_text']\" cannot be read",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0", "input.0: an input item of type"),
        (
            {"input": [{"role": "system", "content": "hi"}]},
            "input",
            "input: input must contain a user message",
        ),
        ({"input": " "}, "input", "input: the last user message must not be blank"),
        ({"input": "a" * 20_001}, "input", "input: String should have at most 20000 characters"),
        (
            {"input": [{"role": "user", "content": TWO_PARTS}]},
            "input",
            "input: the last user message has 30000 characters: at most 20000 are allowed",
        ),
        ({"instructions": "a" * 20_001}, "instructions", "instructions: String should have at most 20000"),
        ({"max_output_tokens": 0}, "max_output_tokens", "max_output_tokens: "),
        # JSON's true/false is no number: true was read as 1, an answer cut after one token.
        ({"max_output_tokens": True}, "max_output_tokens", "max_output_tokens: a number, not true/false"),
        ({"temperature": True}, "temperature", "temperature: a number, not true/false"),
        # top_p too (kept, echoed in the response as 1.0).
        ({"top_p": True}, "top_p", "top_p: a number, not true/false"),
    ],
)
async def test_what_the_server_cannot_honour_is_an_openai_400_naming_it(
    aplain: openai.AsyncOpenAI, kwargs: dict[str, Any], param: str, message: str
) -> None:
    body: dict[str, Any] = {"model": "rag:alpha", "input": QUESTION, **kwargs}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await aplain.responses.create(**body, stream=stream)
        assert caught.value.param == param, caught.value.body
        error = caught.value.response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert error["message"].startswith(message), error


async def test_a_wrong_key_is_an_authentication_error(plain_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{plain_url}/v1", api_key="rag_" + "x" * 43, max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as caught:
            await c.responses.create(model="rag:alpha", input=QUESTION)
    assert caught.value.code == "invalid_api_key"


@pytest.mark.parametrize("model", ["rag:beta", "rag:beta:bm25", "rag:nope", "gpt-4o", "rag:alpha:fuzzy"])
def test_a_model_out_of_reach_is_not_found_and_shows_nothing(plain: openai.OpenAI, model: str) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as caught:
            plain.responses.create(model=model, input="How do I cook pasta?", stream=stream)
        assert caught.value.response.json()["error"] == {
            "message": f"The model {model!r} does not exist or this API key cannot read it",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }


def test_an_unknown_operation_lists_the_responses_api(plain_url: str, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.alpha_reader}"}
    r = httpx.post(f"{plain_url}/v1/completions", json={"model": "rag:alpha"}, headers=headers)
    assert r.status_code == 404 and "POST /v1/responses" in r.json()["error"]["message"], r.text
