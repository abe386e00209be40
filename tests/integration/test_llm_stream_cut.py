"""An LLM stream that ends cleanly (`[DONE]`, the HTTP body complete) before the answer did: no chunk
gave a finish_reason, which OpenAI's protocol sends to end every choice. The first words were stored as
the whole answer, `answer_mode` "llm", and /v1 said `finish_reason: "stop"`. Found with a fake
OpenAI-compatible LLM under `rag-server up`: an empty choice list, or a plain end, mid-stream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag_server.chat.answer import FALLBACK_HEADER
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from tests.fakes.llm_server import Behaviour, FakeLLM
from tests.support.processes import Proc, process_env, start_server
from tests.support.sse import read_events

CUT = (
    "The LLM's answer stopped before its end (its stream closed without a finish reason); showing the "
    "extractive answer."
)


@pytest.fixture(scope="module")
async def documents(runtime: Runtime) -> list[uuid.UUID]:
    text = b"HNSW is a graph-based index for approximate nearest neighbour search in pgvector."
    return await ingest_documents_direct(runtime, [DirectDocument("hnsw.txt", text, {})])


@pytest.fixture(scope="module")
def server(
    database_url: str, data_dir: Path, documents: list[uuid.UUID], fake_llm: FakeLLM, tmp_path: Path
) -> Iterator[Proc]:
    env = process_env(
        database_url,
        data_dir,
        RAG_LLM_PROVIDER="openai",
        RAG_LLM_BASE_URL=fake_llm.base_url,
        RAG_LLM_MODEL="fake-model",
        RAG_LLM_MAX_RETRIES="0",
        RAG_CHAT_MIN_SIMILARITY="-1",
    )
    proc = start_server(env, tmp_path / "server.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cut")


async def test_an_answer_whose_stream_ends_without_a_finish_reason_is_the_fallback(
    server: Proc, fake_llm: FakeLLM
) -> None:
    fake_llm.behaviour = Behaviour(end_after_tokens=3, affects={"answer"})
    base = server.base_url
    async with httpx.AsyncClient(timeout=60) as client:
        body = (await client.post(f"{base}/query", json={"query": "What is HNSW?"})).json()
        assert body["answer_mode"] == "extractive" and body["llm_error"] == CUT, body
        assert body["answer"].startswith(FALLBACK_HEADER)
        stored = (await client.get(f"{base}/chat/history/{body['session_id']}")).json()["messages"]
        assert stored[-1]["content"] == body["answer"]

        async with client.stream("POST", f"{base}/query/stream", json={"query": "What is HNSW?"}) as response:
            events = [event async for event in read_events(response.aiter_lines())]
        done = events[-1][1]
        assert events[-1][0] == "done" and done["llm_error"] == CUT and done["answer_mode"] == "extractive"

        question = {"model": "rag:default", "messages": [{"role": "user", "content": "What is HNSW?"}]}
        reply = (await client.post(f"{base}/v1/chat/completions", json=question)).json()
        assert reply["choices"][0]["message"]["content"].startswith(FALLBACK_HEADER), reply

        fake_llm.behaviour = Behaviour()  # a complete stream is still the LLM's answer
        body = (await client.post(f"{base}/query", json={"query": "What is HNSW?"})).json()
        assert body["answer_mode"] == "llm" and body["llm_error"] is None, body
