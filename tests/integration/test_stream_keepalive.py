"""Streamed answers keep their connection alive while the server waits (RAG_STREAM_KEEPALIVE_S).

A local model can take tens of seconds to its first token; a client (httpx's read timeout, the openai
client's `timeout`, a proxy's idle timeout) whose read timeout is shorter gave up although the answer was
coming. Here the fake LLM (tests/fakes/llm_server.py) waits LLM_DELAY_S before it answers, the clients
read with READ_TIMEOUT_S, shorter, and the server writes an SSE comment every KEEPALIVE_S while it waits.
Servers on real sockets in this process: one with that keep-alive, one with it off (0).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from rag_server.api.app import create_app
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from tests.fakes.llm_server import Behaviour, FakeLLM
from tests.integration.test_openai_api import QUESTION, World, seed_world, with_fake_llm
from tests.support.live_app import serve_in_thread
from tests.support.sse import read_events

KEEPALIVE_S = 0.2
READ_TIMEOUT_S = 1.0
LLM_DELAY_S = 2.0  # longer than READ_TIMEOUT_S: without keep-alives the client's read times out
ANSWER = f"According to the sources, the answer to '{QUESTION}' is grounded [1]."
COMMENT = ": keep-alive"


@pytest.fixture(scope="module")
async def world(runtime: Runtime) -> World:
    return await seed_world(runtime)


def _serve(settings: Settings, app: FastAPI, fake_llm: FakeLLM, keepalive_s: float) -> Iterator[str]:
    # LLM calls time out after 60 s: only a cancel ends the silent LLM stream of the disconnect tests.
    changed = with_fake_llm(settings, fake_llm, stream_keepalive_s=keepalive_s, llm_timeout_s=60.0)
    with serve_in_thread(create_app(changed, embedder=app.state.runtime.embedder)) as url:
        yield url


@pytest.fixture(scope="module")
def url(settings: Settings, app: FastAPI, fake_llm: FakeLLM, world: World) -> Iterator[str]:
    """The server whose LLM is the fake one, writing a keep-alive every KEEPALIVE_S."""
    yield from _serve(settings, app, fake_llm, KEEPALIVE_S)


@pytest.fixture(scope="module")
def quiet_url(settings: Settings, app: FastAPI, fake_llm: FakeLLM, world: World) -> Iterator[str]:
    """The same with RAG_STREAM_KEEPALIVE_S=0."""
    yield from _serve(settings, app, fake_llm, 0)


@pytest.fixture
def slow(fake_llm: FakeLLM) -> Iterator[FakeLLM]:
    """The fake LLM answering after LLM_DELAY_S (titles and condensed questions at once)."""
    fake_llm.reset()
    fake_llm.behaviour = Behaviour(delay_s=LLM_DELAY_S, affects={"answer"})
    yield fake_llm
    fake_llm.reset()


def short_timeout_client(url: str, world: World) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{url}/v1",
        api_key=world.alpha_reader,
        max_retries=0,
        timeout=httpx.Timeout(READ_TIMEOUT_S),
    )


def _auth(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.alpha_reader}"}


def test_the_openai_client_with_a_short_timeout_gets_a_slow_streamed_completion(
    url: str, world: World, slow: FakeLLM
) -> None:
    with short_timeout_client(url, world) as client:
        stream = client.chat.completions.create(
            model="rag:alpha", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert (chunks[0].model_extra or {})["sources"][0]["document_id"] == world.docs["bm25.txt"]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_follow_up_condensed_slowly_reaches_a_client_with_a_short_timeout(
    url: str, world: World, fake_llm: FakeLLM
) -> None:
    # The wait is before the first chunk: the follow-up is condensed, then the sources are retrieved.
    fake_llm.reset()
    fake_llm.behaviour = Behaviour(delay_s=LLM_DELAY_S, affects={"condense"})
    messages: Any = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "A ranking function [1]."},
        {"role": "user", "content": "and its k1 parameter?"},
    ]
    try:
        with short_timeout_client(url, world) as client:
            chunks = list(client.chat.completions.create(model="rag:alpha", messages=messages, stream=True))
        assert "condense" in fake_llm.kinds()
    finally:
        fake_llm.reset()
    assert "and its k1 parameter?" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_the_openai_client_with_a_short_timeout_gets_a_slow_streamed_response(
    url: str, world: World, slow: FakeLLM
) -> None:
    with short_timeout_client(url, world) as client:
        events = list(client.responses.create(model="rag:alpha", input=QUESTION, stream=True))
    types = [e.type for e in events]
    # response.created first, as OpenAI sends it: before retrieval and the LLM.
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert events[-1].response.output_text == ANSWER
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_a_chat_stream_read_with_a_short_timeout_completes_and_is_stored(
    url: str, world: World, slow: FakeLLM
) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT_S), headers=_auth(world)) as client:
        body = {"query": QUESTION, "collections": ["alpha"]}
        async with client.stream("POST", f"{url}/query/stream", json=body) as response:
            assert response.status_code == 200
            events = [e async for e in read_events(response.aiter_lines())]
        kinds = [kind for kind, _ in events]
        assert kinds[0] == "sources" and kinds[-1] == "done"
        done = events[-1][1]
        assert "".join(d["text"] for k, d in events if k == "token") == done["answer"] == ANSWER
        history = (await client.get(f"{url}/chat/history/{done['session_id']}")).json()
        assert [m["content"] for m in history["messages"]] == [QUESTION, ANSWER]


def raw_lines(base: str, path: str, body: dict[str, Any], world: World) -> list[str]:
    """Every line of a streamed answer as sent, comments too (a client with a long read timeout)."""
    with (
        httpx.Client(timeout=60, headers=_auth(world)) as client,
        client.stream("POST", base + path, json=body) as response,
    ):
        assert response.status_code == 200
        return list(response.iter_lines())


STREAMS = [
    (
        "/v1/chat/completions",
        {"model": "rag:alpha", "messages": [{"role": "user", "content": QUESTION}], "stream": True},
    ),
    ("/v1/responses", {"model": "rag:alpha", "input": QUESTION, "stream": True}),
    ("/query/stream", {"query": QUESTION, "collections": ["alpha"]}),
]
STREAM_IDS = ["completions", "responses", "chat"]


def answer_of(path: str, lines: list[str]) -> str:
    """The answer a stream's events carry (its comments left out)."""
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    if path == "/v1/chat/completions":
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    last = json.loads(data[-1])
    if path == "/v1/responses":
        assert last["type"] == "response.completed"
        return str(last["response"]["output"][0]["content"][0]["text"])
    return str(last["answer"])  # chat's `done`


@pytest.mark.parametrize(("path", "body"), STREAMS, ids=STREAM_IDS)
def test_the_keepalive_is_an_sse_comment_between_the_events(
    url: str, world: World, slow: FakeLLM, path: str, body: dict[str, Any]
) -> None:
    lines = raw_lines(url, path, body, world)
    comments = [n for n, line in enumerate(lines) if line.startswith(":")]
    assert comments, "no keep-alive while the LLM was silent"
    assert {lines[n] for n in comments} == {COMMENT}
    # Each a block of its own, never inside an event: a blank line before and after it.
    assert all(lines[n - 1] == "" and lines[n + 1] == "" for n in comments if n > 0)
    assert answer_of(path, lines) == ANSWER  # the events themselves are those a fast LLM gives


@pytest.mark.parametrize(("path", "body"), STREAMS, ids=STREAM_IDS)
def test_no_keepalive_when_it_is_off(
    quiet_url: str, world: World, slow: FakeLLM, path: str, body: dict[str, Any]
) -> None:
    lines = raw_lines(quiet_url, path, body, world)
    assert not [line for line in lines if line.startswith(":")]
    assert answer_of(path, lines) == ANSWER


@pytest.mark.parametrize(("path", "body"), STREAMS, ids=STREAM_IDS)
async def test_a_client_leaving_while_the_llm_is_silent_cancels_the_llm_request(
    url: str, world: World, fake_llm: FakeLLM, path: str, body: dict[str, Any]
) -> None:
    fake_llm.reset()
    # The LLM's stream opens and stays silent (SSE comments of its own) until its client leaves.
    fake_llm.behaviour = Behaviour(hang_after_tokens=0, affects={"answer"})
    left = False
    stored_before = await stored_sessions(url, world)
    try:
        async with (
            httpx.AsyncClient(timeout=60, headers=_auth(world)) as client,
            client.stream("POST", url + path, json=body) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line == COMMENT and "answer" in fake_llm.kinds():
                    left = True
                    break  # the server waits for the LLM's first token: leave
        assert left, "no keep-alive while the LLM was silent"
        # The server closed its LLM request (the fake's stream hangs until its client leaves).
        await asyncio.to_thread(fake_llm.wait_for_aborted, 1, 20)
        assert await stored_sessions(url, world) == stored_before  # chat's answer: nothing stored
    finally:
        fake_llm.reset()


async def stored_sessions(url: str, world: World) -> int:
    async with httpx.AsyncClient(timeout=60, headers=_auth(world)) as client:
        response = await client.get(f"{url}/chat/sessions")
    assert response.status_code == 200
    return int(response.json()["total"])
