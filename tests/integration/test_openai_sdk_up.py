"""The official `openai` client against the real stack as a user runs it: `rag-server up` (embedded
database, worker, API) with the fake OpenAI-compatible LLM (tests/fakes/llm_server.py) as its LLM.
Models, chat (plain and streamed, with usage) and embeddings, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from rag_server.client import Client
from tests.fakes.llm_server import FakeLLM, reply_for
from tests.support.ingest import wait_for
from tests.support.up_stack import UpStack

TEXT = "The okapi is a forest giraffe of the Congo; its striped legs camouflage it in the undergrowth.\n"
QUESTION = "Where does the okapi live?"


@pytest.fixture(scope="module")
def stack(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    env = {
        "RAG_LLM_PROVIDER": "openai",
        "RAG_LLM_BASE_URL": fake_llm.base_url,
        "RAG_LLM_MODEL": "fake-model",
        "RAG_LLM_MAX_RETRIES": "0",
    }
    with UpStack(env) as up:
        up.start()
        document = tmp_path_factory.mktemp("docs") / "okapi.txt"
        document.write_text(TEXT)
        with Client(up.url) as client:
            batch = str(client.upload([document]).batch_id)
            wait_for(lambda: client.batch_status(batch).done, 120, "ingestion")
        yield up


@pytest.fixture
def sdk(stack: UpStack) -> Iterator[openai.OpenAI]:
    # Open mode (loopback, no key created) answers whatever key an SDK insists on sending.
    with openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key="sk-anything", max_retries=0, timeout=60
    ) as client:
        yield client


def extra(obj: Any, name: str) -> Any:
    return (obj.model_extra or {}).get(name)


def test_models_chat_and_embeddings_through_the_openai_sdk(
    sdk: openai.OpenAI, stack: UpStack, fake_llm: FakeLLM
) -> None:
    assert {"rag:default", "rag:default:bm25", "rag:default:vector"} <= {m.id for m in sdk.models.list()}

    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    fake_llm.reset()
    completion = sdk.chat.completions.create(model="rag:default", messages=messages)
    answer_request = fake_llm.requests[-1]
    assert completion.choices[0].message.content == reply_for(answer_request)
    assert extra(completion, "sources")[0]["document_name"] == "okapi.txt"
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    stream = sdk.chat.completions.create(
        model="rag:default:bm25", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert extra(chunks[0], "sources")[0]["document_name"] == "okapi.txt"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == completion.usage.total_tokens

    dim = httpx.get(f"{stack.url}/health").json()["embedding"]["dim"]
    embedded = sdk.embeddings.create(model="rag:default", input=["okapi", "okapi", "pasta"])
    vectors = [e.embedding for e in embedded.data]
    assert [len(v) for v in vectors] == [dim] * 3
    assert vectors[0] == vectors[1] != vectors[2]


def test_the_sdk_sees_openai_errors(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="rag:nope", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="rag:default", messages=[{"role": "system", "content": "hi"}])
    assert "user message" in str(caught.value)
