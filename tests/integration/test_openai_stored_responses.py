"""Stored responses (`store`, OpenAI's default): `previous_response_id`, GET and DELETE /v1/responses/{id},
its input items, through the official `openai` client (sync and async, streamed and not), over real HTTP.

The servers of test_openai_responses.py: one without an LLM, one whose LLM is the fake OpenAI-compatible
server (tests/fakes/llm_server.py), which records the messages each answer was asked with. Keys: two
readers of alpha (a stored response is its key's), a reader of beta, an admin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from rag_server.access import keys
from rag_server.access.models import CreateKey
from rag_server.api.app import create_app
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from tests.fakes.llm_server import FakeLLM
from tests.integration.test_openai_api import QUESTION, seed_world, with_fake_llm
from tests.integration.test_openai_responses import assert_a_valid_response, event_types
from tests.support.live_app import serve_in_thread

ANSWER_PREFIX = "According to the sources, the answer to"


@dataclass
class Keys:
    admin: str
    alpha: str
    other_alpha: str  # another reader of alpha
    beta: str


@pytest.fixture(scope="module")
async def world(runtime: Runtime) -> Keys:
    seeded = await seed_world(runtime)
    other = await keys.create_key(
        runtime.pool, CreateKey(name="alpha-2", role="reader", collections=["alpha"])
    )
    beta = await keys.create_key(runtime.pool, CreateKey(name="beta", role="reader", collections=["beta"]))
    return Keys(admin=seeded.admin, alpha=seeded.alpha_reader, other_alpha=other.key, beta=beta.key)


@pytest.fixture(scope="module")
def plain_url(settings: Settings, app: FastAPI, world: Keys) -> Iterator[str]:
    with serve_in_thread(create_app(settings, embedder=app.state.runtime.embedder)) as url:
        yield url


@pytest.fixture(scope="module")
def llm_url(settings: Settings, app: FastAPI, fake_llm: FakeLLM, world: Keys) -> Iterator[str]:
    application = create_app(with_fake_llm(settings, fake_llm), embedder=app.state.runtime.embedder)
    with serve_in_thread(application) as url:
        yield url


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def llm(llm_url: str, world: Keys, fake_llm: FakeLLM) -> Iterator[openai.OpenAI]:
    fake_llm.reset()
    with client(llm_url, world.alpha) as c:
        yield c
    fake_llm.reset()


@pytest.fixture
def plain(plain_url: str, world: Keys) -> Iterator[openai.OpenAI]:
    with client(plain_url, world.alpha) as c:
        yield c


@pytest.fixture
async def aplain(plain_url: str, world: Keys) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{plain_url}/v1", api_key=world.alpha, max_retries=0, timeout=60
    ) as c:
        yield c


def answer_messages(fake_llm: FakeLLM) -> list[tuple[str, str]]:
    """(role, content) of the messages the last answer call was made with."""
    answer = fake_llm.requests[-1]
    assert answer["messages"][0]["role"] == "system"
    return [(m["role"], m["content"]) for m in answer["messages"]]


def assert_not_found(
    caught: pytest.ExceptionInfo[openai.APIStatusError], response_id: str, param: Any
) -> None:
    """A stored response not found: a 404; as `previous_response_id`, OpenAI's 400 and its code."""
    previous = param == "previous_response_id"
    assert caught.value.status_code == (400 if previous else 404)
    assert caught.value.response.json()["error"] == {
        "message": f"{'Previous response' if previous else 'Response'} with id {response_id!r} not found.",
        "type": "invalid_request_error",
        "param": param,
        "code": "previous_response_not_found" if previous else "response_not_found",
    }


# --- continuing a stored response -------------------------------------------------------------------


def test_previous_response_id_continues_the_stored_conversation(
    llm: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    first = llm.responses.create(model="rag:alpha", input=QUESTION)
    assert first.store is True and first.previous_response_id is None
    second = llm.responses.create(model="rag:alpha", input="and k1?", previous_response_id=first.id)
    assert_a_valid_response(second)
    assert second.store is True and second.previous_response_id == first.id
    assert second.output_text == f"{ANSWER_PREFIX} 'and k1?' is grounded [1]."
    # The follow-up was condensed with the stored history, then answered with it, as a chat turn is.
    assert fake_llm.kinds() == ["answer", "condense", "answer"]
    said = answer_messages(fake_llm)
    assert [role for role, _ in said] == ["system", "user", "assistant", "user"]
    assert said[1][1].endswith(QUESTION)
    assert said[2][1] == f"{ANSWER_PREFIX} '{QUESTION}' is grounded."  # its [1] named its sources
    assert said[3][1].endswith("and k1?")
    # A third turn: the whole chain, walked back.
    llm.responses.create(model="rag:alpha", input="and b?", previous_response_id=second.id)
    said = answer_messages(fake_llm)
    assert [role for role, _ in said] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert said[3][1].endswith("and k1?") and said[5][1].endswith("and b?")


def test_a_fork_from_an_earlier_response_has_only_its_own_branch(
    llm: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    root = llm.responses.create(model="rag:alpha", input=QUESTION)
    llm.responses.create(model="rag:alpha", input="and k1?", previous_response_id=root.id)
    fork = llm.responses.create(model="rag:alpha", input="and HNSW?", previous_response_id=root.id)
    said = answer_messages(fake_llm)
    assert [role for role, _ in said] == ["system", "user", "assistant", "user"]
    assert "and k1?" not in " ".join(text for _, text in said[1:])  # the other branch's question
    assert said[3][1].endswith("and HNSW?") and fork.previous_response_id == root.id


def test_the_history_is_bounded_like_a_chat_turns(llm: openai.OpenAI, fake_llm: FakeLLM) -> None:
    """RAG_CHAT_HISTORY_MESSAGES (6): the chain's last six messages, however long it is."""
    previous = None
    for n in range(5):
        previous = llm.responses.create(
            model="rag:alpha", input=f"question {n}?", previous_response_id=previous and previous.id
        )
    said = answer_messages(fake_llm)
    assert [role for role, _ in said] == ["system", *(["user", "assistant"] * 3), "user"]
    assert said[1][1].endswith("question 1?") and said[-1][1].endswith("question 4?")


def test_a_streamed_response_is_stored_and_read_back_at_once(llm: openai.OpenAI, fake_llm: FakeLLM) -> None:
    events = list(llm.responses.create(model="rag:alpha", input=QUESTION, stream=True))
    assert event_types(events)[0] == "response.created" and events[-1].type == "response.completed"
    assert events[0].response.store is True
    done = events[-1].response
    kept = llm.responses.retrieve(done.id)  # the same client, right after the stream: there
    assert_a_valid_response(kept)
    assert kept.model_dump() == done.model_dump()
    with llm.responses.stream(model="rag:alpha", input="and k1?", previous_response_id=done.id) as stream:
        final = stream.get_final_response()
    assert final.previous_response_id == done.id
    assert [role for role, _ in answer_messages(fake_llm)] == ["system", "user", "assistant", "user"]


async def test_async_streamed_responses_are_stored_and_continued(
    llm_url: str, world: Keys, fake_llm: FakeLLM
) -> None:
    fake_llm.reset()
    async with openai.AsyncOpenAI(
        base_url=f"{llm_url}/v1", api_key=world.alpha, max_retries=0, timeout=60
    ) as c:
        events = [e async for e in await c.responses.create(model="rag:alpha", input=QUESTION, stream=True)]
        done = events[-1].response
        assert done.store is True and (await c.responses.retrieve(done.id)).output_text == done.output_text
        async with c.responses.stream(
            model="rag:alpha", input="and k1?", previous_response_id=done.id
        ) as stream:
            final = await stream.get_final_response()
        assert [role for role, _ in answer_messages(fake_llm)] == ["system", "user", "assistant", "user"]
        kept = await c.responses.retrieve(final.id)
        assert kept.previous_response_id == done.id and kept.output_text == final.output_text
    fake_llm.reset()


# --- retrieve, input items, delete --------------------------------------------------------------------


async def test_retrieve_list_input_items_and_delete(
    aplain: openai.AsyncOpenAI, plain_url: str, world: Keys
) -> None:
    conversation: Any = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "What is HNSW?"},
        {
            "role": "assistant",
            "content": [{"type": "output_text", "text": "A graph index.", "annotations": []}],
        },
        {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
    ]
    created = await aplain.responses.create(model="rag:alpha:bm25", input=conversation)
    kept = await aplain.responses.retrieve(created.id)
    assert kept.model_dump() == created.model_dump() and kept.store is True
    assert (kept.model_extra or {})["sources"] == (created.model_extra or {})["sources"]
    # The input items, the last first (OpenAI's default order), a page at a time.
    items = await aplain.responses.input_items.list(created.id)
    assert [(i.role, i.content[0].text) for i in items.data] == [  # type: ignore[union-attr]
        ("user", QUESTION),
        ("assistant", "A graph index."),
        ("user", "What is HNSW?"),
        ("developer", "Be brief."),
    ]
    assert all(i.id.startswith("msg_") for i in items.data)  # type: ignore[union-attr]
    first = await aplain.responses.input_items.list(created.id, order="asc", limit=3)
    assert [i.role for i in first.data] == ["developer", "user", "assistant"]  # type: ignore[union-attr]
    assert first.has_more and first.last_id == first.data[-1].id  # type: ignore[union-attr]
    rest = await aplain.responses.input_items.list(created.id, order="asc", after=first.last_id)
    assert [i.role for i in rest.data] == ["user"] and not rest.has_more  # type: ignore[union-attr]
    # An id that is not one of its items is a 400 naming `after`, not the first page again.
    with pytest.raises(openai.BadRequestError) as bad:
        await aplain.responses.input_items.list(created.id, after="msg_unknown")
    assert bad.value.param == "after" and "msg_unknown" in bad.value.message
    # Every page the SDK's iterator follows.
    every = [i.id async for i in aplain.responses.input_items.list(created.id, limit=1)]  # type: ignore[union-attr]
    assert every == [i.id for i in items.data]  # type: ignore[union-attr]
    # Deleted: OpenAI's deleted object, then gone for reading, continuing and deleting.
    headers = {"Authorization": f"Bearer {world.alpha}"}
    async with httpx.AsyncClient(base_url=plain_url, headers=headers, timeout=60) as http:
        r = await http.delete(f"/v1/responses/{created.id}")
        assert r.status_code == 200 and r.json() == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError) as caught:
        await aplain.responses.retrieve(created.id)
    assert_not_found(caught, created.id, None)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await aplain.responses.create(
                model="rag:alpha", input="and k1?", previous_response_id=created.id, stream=stream
            )
        assert_not_found(caught, created.id, "previous_response_id")
    with pytest.raises(openai.NotFoundError):
        await aplain.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await aplain.responses.input_items.list(created.id)


async def test_store_false_keeps_nothing(aplain: openai.AsyncOpenAI) -> None:
    for stream in (False, True):
        if stream:
            events = [
                e
                async for e in await aplain.responses.create(
                    model="rag:alpha", input=QUESTION, store=False, stream=True
                )
            ]
            response = events[-1].response
        else:
            response = await aplain.responses.create(model="rag:alpha", input=QUESTION, store=False)
        assert response.status == "completed" and response.store is False
        with pytest.raises(openai.NotFoundError) as caught:
            await aplain.responses.retrieve(response.id)
        assert_not_found(caught, response.id, None)
        with pytest.raises(openai.BadRequestError) as caught:
            await aplain.responses.create(
                model="rag:alpha", input="and k1?", previous_response_id=response.id
            )
        assert_not_found(caught, response.id, "previous_response_id")


# --- whose responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["other_alpha", "beta"])
def test_another_keys_response_is_not_found_and_stays(
    plain: openai.OpenAI, plain_url: str, world: Keys, who: str
) -> None:
    """Another reader of the same collection, or a key of another collection: 404 for everything, as for
    an id that does not exist (a stored response is its key's, like a chat session); nothing changes."""
    mine = plain.responses.create(model="rag:alpha", input=QUESTION)
    with client(plain_url, getattr(world, who)) as other:
        for attempt in (
            lambda: other.responses.retrieve(mine.id),
            lambda: other.responses.delete(mine.id),
            lambda: other.responses.input_items.list(mine.id),
        ):
            with pytest.raises(openai.NotFoundError) as caught:
                attempt()
            assert caught.value.response.json()["error"]["code"] == "response_not_found"
        model = "rag:alpha" if who == "other_alpha" else "rag:beta"
        with pytest.raises(openai.BadRequestError) as caught:
            other.responses.create(model=model, input="and k1?", previous_response_id=mine.id)
        assert_not_found(caught, mine.id, "previous_response_id")
    # An admin reads it (as it reads any key's chat session); the owner still has it.
    with client(plain_url, world.admin) as admin:
        assert admin.responses.retrieve(mine.id).id == mine.id
    assert plain.responses.retrieve(mine.id).output_text == mine.output_text


@pytest.mark.parametrize("response_id", ["resp_123", "resp_" + "0" * 32, "x" * 200, "resp_%00", "msg_1"])
def test_an_unknown_id_is_not_found(plain: openai.OpenAI, response_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        plain.responses.retrieve(response_id)
    assert caught.value.response.json()["error"]["code"] == "response_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        plain.responses.create(model="rag:alpha", input=QUESTION, previous_response_id=response_id)
    assert caught.value.response.json()["error"]["param"] == "previous_response_id"
    assert caught.value.code == "previous_response_not_found"


def test_a_continuation_in_an_unreadable_collection_is_the_models_404(plain: openai.OpenAI) -> None:
    mine = plain.responses.create(model="rag:alpha", input=QUESTION)
    with pytest.raises(openai.NotFoundError) as caught:
        plain.responses.create(model="rag:beta", input="and k1?", previous_response_id=mine.id)
    assert caught.value.response.json()["error"]["code"] == "model_not_found"


# --- what is echoed is stored -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_nul_in_an_echoed_tool_choice_is_stored_as_a_space(plain: openai.OpenAI, stream: bool) -> None:
    """A tool_choice that forces no call (mode auto) is echoed whole in the stored response, whose jsonb
    holds no NUL: the answer's write failed (a 500; streamed, response.failed after the whole answer)."""
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "a\x00b"}]}
    body: dict[str, Any] = {"model": "rag:alpha", "input": QUESTION, "tool_choice": choice, "stream": stream}
    created = plain.responses.create(**body)
    response = list(created)[-1].response if stream else created
    assert response.status == "completed"
    assert plain.responses.retrieve(response.id).model_dump()["tool_choice"]["tools"][0]["name"] == "a b"


def test_a_lone_surrogate_in_tool_choice_is_a_400(plain_url: str, world: Keys) -> None:
    body = (
        '{"model": "rag:alpha", "input": "k1?", "tool_choice": {"type": "allowed_tools", "mode": "auto", '
        '"tools": [{"type": "function", "name": "\\ud800"}]}}'
    )
    answered = httpx.post(
        f"{plain_url}/v1/responses",
        content=body,
        headers={"Authorization": f"Bearer {world.alpha}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert answered.status_code == 400, answered.text
    assert answered.json()["error"]["param"] == "tool_choice"
