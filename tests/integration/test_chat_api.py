"""Chat end to end over HTTP: real `rag-server serve` processes on the embedded PostgreSQL.

Two servers share this module's database: one without an LLM (extractive answers), one pointed at
tests/fakes/llm_server.py (a real local OpenAI-compatible HTTP server). Documents are ingested through the
same pipeline the worker uses, before the servers start. The SIGTERM tests start their own servers.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from rag_server.chat.answer import EXTRACTIVE_HEADER, FALLBACK_HEADER
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from tests.fakes.llm_server import TITLE, Behaviour, FakeLLM
from tests.support.processes import Proc, process_env, start_server
from tests.support.sse import read_events

# This module's questions test the answer's mechanics (follow-ups, which the fake LLM condenses into
# "Standalone: and its parameters?", a text no passage resembles): chat's floor under its sources
# (tests/integration/test_search_floor.py) is off, so every question gets what search ranks.
ANY_SOURCE = {"RAG_CHAT_MIN_SIMILARITY": "-1"}

DOCS = {
    "hnsw.txt": "HNSW is a graph-based index for approximate nearest neighbour search. pgvector builds "
    "HNSW indexes with the parameters m and ef_construction. A higher ef_search improves recall "
    "at the cost of query speed.",
    "bm25.txt": "BM25 is a lexical ranking function based on term frequency and inverse document "
    "frequency. The k1 parameter controls term frequency saturation and b controls length normalisation.",
    "pasta.txt": "To cook pasta, boil salted water, add the pasta and cook it until al dente. Drain the "
    "pasta and serve it with a tomato sauce.",
}


@dataclass
class Server:
    env: dict[str, str]
    log_dir: Path
    proc: Proc | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        assert self.proc is not None and self.proc.base_url
        return self.proc.base_url

    def start(self) -> None:
        self.starts += 1
        self.proc = start_server(self.env, self.log_dir / f"server-{self.starts}.log")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    async def restart(self) -> None:
        await asyncio.to_thread(self.stop)
        await asyncio.to_thread(self.start)


@pytest.fixture(scope="module")
async def documents(runtime: Runtime) -> dict[str, uuid.UUID]:
    docs = [DirectDocument(name, text.encode(), {"topic": name.split(".")[0]}) for name, text in DOCS.items()]
    ids = await ingest_documents_direct(runtime, docs)
    return dict(zip(DOCS, ids, strict=True))


def _server(env: dict[str, str], log_dir: Path) -> Iterator[Server]:
    server = Server(env, log_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server(
    database_url: str,
    data_dir: Path,
    documents: dict[str, uuid.UUID],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    yield from _server(process_env(database_url, data_dir, **ANY_SOURCE), tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def llm_server(
    database_url: str,
    data_dir: Path,
    documents: dict[str, uuid.UUID],
    fake_llm: FakeLLM,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    yield from _server(process_env(database_url, data_dir, **_llm(fake_llm)), tmp_path_factory.mktemp("llm"))


@pytest.fixture(scope="module")
def bounded_server(
    database_url: str,
    data_dir: Path,
    documents: dict[str, uuid.UUID],
    fake_llm: FakeLLM,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """The LLM server's settings, with temporary sessions keeping 4 messages (the LLM may be shown 10)."""
    env = process_env(
        database_url,
        data_dir,
        RAG_CHAT_TEMPORARY_MESSAGES="4",
        RAG_CHAT_HISTORY_MESSAGES="10",
        **_llm(fake_llm),
    )
    yield from _server(env, tmp_path_factory.mktemp("bounded"))


def _llm(fake_llm: FakeLLM) -> dict[str, str]:
    """The settings of a server answering with the fake LLM (every source allowed)."""
    return {
        "RAG_LLM_PROVIDER": "openai",
        "RAG_LLM_BASE_URL": fake_llm.base_url,
        "RAG_LLM_MODEL": "fake-model",
        "RAG_LLM_TIMEOUT_S": "5",
        "RAG_LLM_MAX_RETRIES": "0",
        **ANY_SOURCE,
    }


@pytest.fixture
def fake(fake_llm: FakeLLM) -> FakeLLM:
    fake_llm.reset()
    return fake_llm


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=120) as c:
        yield c


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def stream_events(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], stop_after_tokens: int | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """POST and read Server-Sent Events; with stop_after_tokens, hang up after that many tokens."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in read_events(response.aiter_lines()):
            events.append(event)
            tokens = sum(1 for e, _ in events if e == "token")
            if stop_after_tokens is not None and tokens >= stop_after_tokens:
                break  # leaving the block closes the connection mid-stream
    return events


def tokens_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(d["text"] for e, d in events if e == "token")


async def history(client: httpx.AsyncClient, base: str, session_id: str) -> list[dict[str, Any]]:
    body = await ok(await client.get(f"{base}/chat/history/{session_id}"))
    messages: list[dict[str, Any]] = body["messages"]
    return messages


# --- without an LLM ---------------------------------------------------------------------------------


async def test_scripted_conversation_without_llm(plain_server: Server, client: httpx.AsyncClient) -> None:
    base = plain_server.url
    session = await ok(await client.post(f"{base}/chat/sessions", json={}), 201)
    sid = session["id"]
    assert session["title"] is None and session["search_type"] == "hybrid" and not session["is_temporary"]

    first = await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?", "session_id": sid}))
    assert first["session_id"] == sid
    assert first["answer_mode"] == "extractive" and first["llm_error"] is None
    assert first["answer"].startswith(EXTRACTIVE_HEADER)
    assert "[1]" in first["answer"]
    top = first["sources"][0]
    assert top["n"] == 1 and top["document_name"] == "hnsw.txt"
    assert {"chunk_id", "document_id", "page", "excerpt", "score"} <= top.keys()
    assert isinstance(first["message_id"], int)
    assert "search" in first["timings_ms"] and "total" in first["timings_ms"]

    follow = await ok(
        await client.post(
            f"{base}/query",
            json={"query": "How does BM25 use term frequency?", "session_id": sid, "top_k": 2},
        )
    )
    assert len(follow["sources"]) <= 2
    assert follow["sources"][0]["document_name"] == "bm25.txt"
    assert follow["message_id"] > first["message_id"]

    # The first question named the session.
    got = await ok(await client.get(f"{base}/chat/sessions/{sid}"))
    assert got["title"] == "What is HNSW?" and got["message_count"] == 4

    listed = await ok(await client.get(f"{base}/chat/sessions"))
    assert sid in [s["id"] for s in listed["sessions"]]

    renamed = await ok(await client.patch(f"{base}/chat/sessions/{sid}", json={"title": "Index notes"}))
    assert renamed["title"] == "Index notes"
    archived = await ok(await client.patch(f"{base}/chat/sessions/{sid}", json={"is_archived": True}))
    assert archived["is_archived"] and archived["title"] == "Index notes"
    active = await ok(await client.get(f"{base}/chat/sessions"))
    assert sid not in [s["id"] for s in active["sessions"]]
    everything = await ok(await client.get(f"{base}/chat/sessions", params={"include_archived": "true"}))
    assert sid in [s["id"] for s in everything["sessions"]]
    await ok(await client.patch(f"{base}/chat/sessions/{sid}", json={"is_archived": False}))

    events = await stream_events(
        client, f"{base}/query/stream", {"query": "What does ef_search change?", "session_id": sid}
    )
    kinds = [e for e, _ in events]
    assert kinds[0] == "sources" and kinds[-1] == "done" and "token" in kinds and "error" not in kinds
    assert events[0][1]["sources"][0]["document_name"] == "hnsw.txt"
    done = events[-1][1]
    assert isinstance(done["message_id"], int) and done["session_id"] == sid
    assert tokens_text(events) == done["answer"]

    before = await history(client, base, sid)
    assert [m["role"] for m in before] == ["user", "assistant"] * 3
    assert before[-1]["id"] == done["message_id"]
    assert before[1]["sources"][0]["document_name"] == "hnsw.txt"
    assert before[1]["metadata"]["answer_mode"] == "extractive"

    await plain_server.restart()
    after = await history(client, plain_server.url, sid)
    assert after == before
    again = await ok(await client.get(f"{plain_server.url}/chat/sessions/{sid}"))
    assert again["title"] == "Index notes"


async def test_query_without_session_creates_one(plain_server: Server, client: httpx.AsyncClient) -> None:
    base = plain_server.url
    body = await ok(
        await client.post(f"{base}/query", json={"query": "how to cook pasta", "search_type": "bm25"})
    )
    session = await ok(await client.get(f"{base}/chat/sessions/{body['session_id']}"))
    assert session["search_type"] == "bm25" and session["title"] == "how to cook pasta"
    assert [m["role"] for m in await history(client, base, body["session_id"])] == ["user", "assistant"]


async def test_a_conversation_exports_as_markdown_with_its_sources(
    plain_server: Server, client: httpx.AsyncClient
) -> None:
    base = plain_server.url
    session = await ok(
        await client.post(f"{base}/chat/sessions", json={"title": "Index notes: HNSW/ef?"}), 201
    )
    sid = session["id"]
    first = await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?", "session_id": sid}))
    await ok(await client.post(f"{base}/query", json={"query": "How to cook pasta?", "session_id": sid}))

    reply = await client.get(f"{base}/chat/sessions/{sid}/export")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/markdown; charset=utf-8"
    # The title as a file name: the characters no system takes in one are spaces.
    assert "filename*=UTF-8''Index%20notes%20HNSW%20ef.md" in reply.headers["content-disposition"]
    text = reply.text
    assert text.startswith("# Index notes: HNSW/ef?\n")
    assert "2 questions" in text
    assert text.index("What is HNSW?") < text.index(first["answer"]) < text.index("How to cook pasta?")
    assert "## Answer (quoted from the sources: no LLM)" in text
    top = first["sources"][0]
    assert f"{top['n']}. **{top['document_name']}**" in text
    assert "   > HNSW is a graph-based index" in text

    unknown = await client.get(f"{base}/chat/sessions/{uuid.uuid4()}/export")
    assert unknown.status_code == 404 and unknown.json()["detail"]


async def test_only_archived_lists_the_archived_sessions_alone(
    plain_server: Server, client: httpx.AsyncClient
) -> None:
    base = plain_server.url
    kept = await ok(await client.post(f"{base}/chat/sessions", json={"title": "kept"}), 201)
    shelved = await ok(await client.post(f"{base}/chat/sessions", json={"title": "shelved"}), 201)
    await ok(await client.patch(f"{base}/chat/sessions/{shelved['id']}", json={"is_archived": True}))
    for params in ({"only_archived": "true"}, {"only_archived": "true", "include_archived": "true"}):
        listed = await ok(await client.get(f"{base}/chat/sessions", params=params))
        ids = [s["id"] for s in listed["sessions"]]
        assert shelved["id"] in ids and kept["id"] not in ids
        assert all(s["is_archived"] for s in listed["sessions"])
        assert listed["total"] == len(ids)
    active = await ok(await client.get(f"{base}/chat/sessions", params={"only_archived": "false"}))
    assert kept["id"] in [s["id"] for s in active["sessions"]]
    assert shelved["id"] not in [s["id"] for s in active["sessions"]]


async def _listed_ids(client: httpx.AsyncClient, base: str) -> list[str]:
    listed = await ok(await client.get(f"{base}/chat/sessions", params={"limit": 200}))
    return [s["id"] for s in listed["sessions"]]


async def test_sessions_are_listed_by_their_last_answer_not_by_edits(
    plain_server: Server, client: httpx.AsyncClient
) -> None:
    """A rename, a new search type, an archive and its undo, a clear: the session keeps its place among
    the recent chats (updated_at moves, last_active_at does not); a new answer moves it to the top."""
    base = plain_server.url
    old = (await ok(await client.post(f"{base}/query", json={"query": "What is BM25?"})))["session_id"]
    new = (await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?"})))["session_id"]

    def before(ids: list[str], first: str, second: str) -> bool:
        return ids.index(first) < ids.index(second)

    assert before(await _listed_ids(client, base), new, old)
    answered = await ok(await client.get(f"{base}/chat/sessions/{old}"))
    edits: list[dict[str, Any]] = [{"title": "renamed"}, {"search_type": "bm25"}, {"is_archived": True}]
    for edit in [*edits, {"is_archived": False}]:
        edited = await ok(await client.patch(f"{base}/chat/sessions/{old}", json=edit))
        assert edited["last_active_at"] == answered["last_active_at"]
        assert datetime.fromisoformat(edited["updated_at"]) > datetime.fromisoformat(answered["updated_at"])
        if not edited["is_archived"]:
            assert before(await _listed_ids(client, base), new, old)
    await ok(await client.post(f"{base}/chat/clear", json={"session_id": old}))
    cleared = await ok(await client.get(f"{base}/chat/sessions/{old}"))
    assert cleared["last_active_at"] == answered["last_active_at"] and cleared["message_count"] == 0
    assert before(await _listed_ids(client, base), new, old)

    await ok(await client.post(f"{base}/query", json={"query": "And k1?", "session_id": old}))
    ids = await _listed_ids(client, base)
    assert ids[0] == old and before(ids, old, new)
    again = await ok(await client.get(f"{base}/chat/sessions/{old}"))
    moved = datetime.fromisoformat(again["last_active_at"])
    assert moved > datetime.fromisoformat(answered["last_active_at"])
    assert again["title"] == "renamed"  # an answer names only an untitled session


async def test_temporary_sessions_are_answered_but_never_stored(
    plain_server: Server, client: httpx.AsyncClient, database_url: str
) -> None:
    base = plain_server.url
    session = await ok(await client.post(f"{base}/chat/sessions", json={"is_temporary": True}), 201)
    sid = session["id"]
    assert session["is_temporary"]
    answer = await ok(await client.post(f"{base}/query", json={"query": "What is BM25?", "session_id": sid}))
    assert answer["message_id"] is None and answer["sources"]
    events = await stream_events(
        client, f"{base}/query/stream", {"query": "k1 parameter?", "session_id": sid}
    )
    assert events[-1][0] == "done" and events[-1][1]["message_id"] is None
    messages = await history(client, base, sid)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert messages[1]["sources"][0]["document_name"] == "bm25.txt"
    assert (await ok(await client.get(f"{base}/chat/sessions/{sid}")))["title"] == "What is BM25?"
    listed = await ok(await client.get(f"{base}/chat/sessions", params={"include_archived": "true"}))
    assert sid not in [s["id"] for s in listed["sessions"]]
    # Exported from memory, like any chat: the only way to keep it.
    exported = await client.get(f"{base}/chat/sessions/{sid}/export")
    assert exported.status_code == 200, exported.text
    assert exported.text.startswith("# What is BM25?\n") and "2 questions" in exported.text
    assert exported.text.index("What is BM25?") < exported.text.index("k1 parameter?")

    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM chat_sessions WHERE id = $1", uuid.UUID(sid)) == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM chat_messages WHERE session_id = $1", uuid.UUID(sid))
            == 0
        )
    finally:
        await conn.close()
    await ok(await client.delete(f"{base}/chat/sessions/{sid}"), 204)
    assert (await client.get(f"{base}/chat/history/{sid}")).status_code == 404
    assert (await client.get(f"{base}/chat/sessions/{sid}/export")).status_code == 404


async def test_a_temporary_session_keeps_its_newest_exchanges_and_the_llm_sees_those(
    bounded_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    """RAG_CHAT_TEMPORARY_MESSAGES=4: a third exchange forgets the first question with its answer (never
    refused); the history, its count, the export and what the LLM is shown are the same two exchanges."""
    base = bounded_server.url
    sid = (await ok(await client.post(f"{base}/chat/sessions", json={"is_temporary": True}), 201))["id"]
    questions = ["What is HNSW?", "What is BM25?", "How do I cook pasta?", "and the k1 parameter?"]
    for question in questions[:3]:
        await ok(await client.post(f"{base}/query", json={"query": question, "session_id": sid}))
    messages = await history(client, base, sid)
    assert [(m["role"], m["content"]) for m in messages[::2]] == [("user", q) for q in questions[1:3]]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert (await ok(await client.get(f"{base}/chat/sessions/{sid}")))["message_count"] == 4

    fake.reset()
    events = await stream_events(client, f"{base}/query/stream", {"query": questions[3], "session_id": sid})
    assert events[-1][0] == "done" and events[-1][1]["answer_mode"] == "llm"
    condense, answer = fake.requests
    transcript = condense["messages"][-1]["content"]
    assert questions[0] not in transcript and questions[1] in transcript and questions[2] in transcript
    shown = answer["messages"][1:]
    assert [(m["role"], m["content"]) for m in shown[::2]] == [("user", q) for q in questions[1:]]
    assert [m["role"] for m in shown] == ["user", "assistant", "user", "assistant", "user"]

    messages = await history(client, base, sid)
    assert [m["content"] for m in messages[::2]] == questions[2:]
    assert messages[-1]["content"] == events[-1][1]["answer"]
    session = await ok(await client.get(f"{base}/chat/sessions/{sid}"))
    assert session["message_count"] == 4 and session["title"] == TITLE  # named by its first question
    exported = (await client.get(f"{base}/chat/sessions/{sid}/export")).text
    assert "2 questions" in exported and questions[1] not in exported


async def test_bad_input_and_unknown_ids_are_4xx(plain_server: Server, client: httpx.AsyncClient) -> None:
    base = plain_server.url
    missing = str(uuid.uuid4())
    for response in (
        await client.get(f"{base}/chat/sessions/{missing}"),
        await client.patch(f"{base}/chat/sessions/{missing}", json={"title": "x"}),
        await client.delete(f"{base}/chat/sessions/{missing}"),
        await client.get(f"{base}/chat/history/{missing}"),
        await client.post(f"{base}/chat/clear", json={"session_id": missing}),
        await client.post(f"{base}/query", json={"query": "hnsw", "session_id": missing}),
        await client.post(f"{base}/query/stream", json={"query": "hnsw", "session_id": missing}),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == f"chat session {missing} not found"
    for body in (
        {"query": ""},
        {"query": "   "},
        {"query": "x", "top_k": 0},
        {"query": "x", "top_k": 1000},
        {"query": "x", "top_k": True},  # no number: it was read as 1
        {"query": "x", "min_similarity": False},  # it was read as a floor of 0
        {},
    ):
        assert (await client.post(f"{base}/query", json=body)).status_code == 422, body
    assert (
        await client.post(f"{base}/query", json={"query": "x", "search_type": "magic"})
    ).status_code == 422
    malformed = await client.post(
        f"{base}/query", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422 and "detail" in malformed.json()
    # Not a UUID but an external id's shape: a client-chosen id nobody used (only /query creates one).
    assert (await client.get(f"{base}/chat/sessions/not-a-uuid")).status_code == 404
    for bad in ("not a uuid", "-leading-dash", "x" * 129, "caf\u00e9"):
        response = await client.get(f"{base}/chat/sessions/{bad}")
        assert response.status_code == 422, bad
        assert "client-chosen id of 1-128 characters" in response.text
    assert (await client.get(f"{base}/chat/sessions", params={"limit": 0})).status_code == 422


async def test_a_session_title_is_never_blank(plain_server: Server, client: httpx.AsyncClient) -> None:
    # A blank title was stored as given: a listing (and the web app's sidebar) showed an unnamed chat.
    base = plain_server.url
    for blank in ("   ", "\t\n", "\u0000"):
        created = await client.post(f"{base}/chat/sessions", json={"title": blank})
        assert created.status_code == 422 and "title must not be blank" in created.text, created.text
    created = await client.post(f"{base}/chat/sessions", json={"title": "  Index notes "})
    sid = (await ok(created, 201))["id"]
    assert (await ok(await client.get(f"{base}/chat/sessions/{sid}")))["title"] == "Index notes"
    renamed = await client.patch(f"{base}/chat/sessions/{sid}", json={"title": "  "})
    assert renamed.status_code == 422 and "title must not be blank" in renamed.text
    assert (await ok(await client.get(f"{base}/chat/sessions/{sid}")))["title"] == "Index notes"


async def test_concurrent_queries_on_one_session_all_persist_in_pairs(
    plain_server: Server, client: httpx.AsyncClient
) -> None:
    base = plain_server.url
    sid = (await ok(await client.post(f"{base}/chat/sessions", json={}), 201))["id"]
    questions = ["What is HNSW?", "What is BM25?", "How to cook pasta?", "What is ef_search?"]
    answers = await asyncio.gather(
        *(client.post(f"{base}/query", json={"query": q, "session_id": sid}) for q in questions)
    )
    ids = [(await ok(r))["message_id"] for r in answers]
    messages = await history(client, base, sid)
    assert len(messages) == 2 * len(questions)
    assert sorted(m["content"] for m in messages if m["role"] == "user") == sorted(questions)
    for user, assistant in zip(messages[::2], messages[1::2], strict=True):
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["id"] == user["id"] + 1  # adjacent: nothing interleaved
    assert sorted(ids) == [m["id"] for m in messages if m["role"] == "assistant"]


async def test_each_stored_answer_records_the_collections_and_filters_it_was_drawn_from(
    plain_server: Server, client: httpx.AsyncClient, documents: dict[str, uuid.UUID]
) -> None:
    base = plain_server.url
    default = await ok(await client.get(f"{base}/collections/default"))
    pasta = str(documents["pasta.txt"])
    limited = {"document_ids": [pasta], "metadata": {"topic": "pasta"}}
    body = await ok(
        await client.post(
            f"{base}/query",
            json={"query": "How long is pasta cooked?", "collections": ["default"], "filters": limited},
        )
    )
    assert {s["document_name"] for s in body["sources"]} == {"pasta.txt"}
    sid = body["session_id"]
    await ok(await client.post(f"{base}/query", json={"query": "And what is HNSW?", "session_id": sid}))

    [_, first, _, second] = await history(client, base, sid)
    assert first["metadata"]["collections"] == [default["id"]]
    assert first["metadata"]["filters"] == limited
    # A question asked without filters: none recorded (the chat is no longer limited).
    assert second["metadata"]["collections"] == [default["id"]]
    assert "filters" not in second["metadata"]


async def test_deleted_documents_stay_readable_in_old_answers(
    plain_server: Server, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    base = plain_server.url
    # A document only this test uses (so deleting it does not affect the other tests).
    [doc_id] = await ingest_documents_direct(
        runtime,
        [DirectDocument("risotto.txt", b"Risotto is cooked by adding hot stock to arborio rice slowly.", {})],
    )
    body = await ok(await client.post(f"{base}/query", json={"query": "How is risotto cooked?", "top_k": 3}))
    sid = body["session_id"]
    assert body["sources"][0]["document_name"] == "risotto.txt"
    await ok(await client.delete(f"{base}/documents/{doc_id}"), 204)

    [_, answer] = await history(client, base, sid)
    cited = {s["document_name"]: s for s in answer["sources"]}
    assert cited["risotto.txt"]["document_deleted"] is True
    assert "arborio" in cited["risotto.txt"]["excerpt"]
    assert all(not s["document_deleted"] for name, s in cited.items() if name != "risotto.txt")
    assert "risotto" in answer["content"].lower()


async def test_a_citation_shows_the_whole_passage_the_answer_came_from(
    llm_server: Server, fake: FakeLLM, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    # One chunk of about 490 characters whose last sentence is the answer: the excerpt was the first
    # 400 characters, so citation [1] showed a passage without the launch code the LLM was given.
    filler = "The committee reviewed routine items of business during the long afternoon session. " * 5
    text = filler + "The launch code for the gazebo project is PURPLE-OTTER-42."
    await ingest_documents_direct(runtime, [DirectDocument("minutes.txt", text.encode(), {})])
    base = llm_server.url
    question = {"query": "What is the launch code for the gazebo project?", "top_k": 3}
    body = await ok(await client.post(f"{base}/query", json=question))
    assert body["answer_mode"] == "llm" and "[1]" in body["answer"]
    [cited] = [s for s in body["sources"] if s["document_name"] == "minutes.txt"]
    assert cited["n"] == 1
    [prompt] = [r for r in fake.requests if "PURPLE-OTTER-42" in str(r["messages"][0]["content"])]
    assert text.strip() in prompt["messages"][0]["content"]  # the LLM was given the whole chunk...
    assert cited["excerpt"] == text.strip()  # ...and the citation shows it whole
    [_, answer] = await history(client, base, body["session_id"])
    assert answer["sources"][0]["excerpt"] == text.strip()


async def test_clear_and_delete(plain_server: Server, client: httpx.AsyncClient) -> None:
    base = plain_server.url
    body = await ok(await client.post(f"{base}/query", json={"query": "What is BM25?"}))
    sid = body["session_id"]
    cleared = await ok(await client.post(f"{base}/chat/clear", json={"session_id": sid}))
    assert cleared == {"session_id": sid, "deleted": 2}
    assert await history(client, base, sid) == []
    await ok(await client.delete(f"{base}/chat/sessions/{sid}"), 204)
    assert (await client.get(f"{base}/chat/sessions/{sid}")).status_code == 404


# --- with the fake OpenAI-compatible LLM ------------------------------------------------------------------


def test_the_llm_is_built_before_the_first_request(llm_server: Server) -> None:
    """Built by the first chat request, its imports (seconds on a busy machine) held the event loop and
    every request of the server waited: a client's 5 s timeout ran out in CI."""
    assert llm_server.proc is not None
    assert httpx.get(f"{llm_server.url}/chat/sessions", timeout=60).status_code == 200
    lines = llm_server.proc.log().splitlines()
    built = next(i for i, line in enumerate(lines) if "chat answers come from the LLM fake-model" in line)
    first_request = next(i for i, line in enumerate(lines) if "rag_server.api.access" in line)
    assert built < first_request


async def test_scripted_conversation_with_llm(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    base = llm_server.url
    session = await ok(await client.post(f"{base}/chat/sessions", json={}), 201)
    sid = session["id"]
    assert session["llm_model"] == "fake-model"

    first = await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?", "session_id": sid}))
    assert first["answer_mode"] == "llm" and first["llm_error"] is None
    assert first["answer"] == "According to the sources, the answer to 'What is HNSW?' is grounded [1]."
    assert first["sources"][0]["document_name"] == "hnsw.txt"
    answer_request = next(r for r, k in zip(fake.requests, fake.kinds(), strict=True) if k == "answer")
    system_prompt = answer_request["messages"][0]["content"]
    assert "[1] (hnsw.txt" in system_prompt and "graph-based index" in system_prompt
    assert sorted(fake.kinds()) == ["answer", "title"]
    assert (await ok(await client.get(f"{base}/chat/sessions/{sid}")))["title"] == TITLE

    fake.reset()
    follow = await ok(
        await client.post(f"{base}/query", json={"query": "and its parameters?", "session_id": sid})
    )
    assert follow["condensed_query"] == "Standalone: and its parameters?"
    assert fake.kinds() == ["condense", "answer"]  # no title: the session has one
    answer_messages = fake.requests[1]["messages"]
    assert [m["role"] for m in answer_messages] == ["system", "user", "assistant", "user"]
    assert answer_messages[1]["content"] == "What is HNSW?"

    events = await stream_events(
        client, f"{base}/query/stream", {"query": "What does BM25 rank by?", "session_id": sid}
    )
    tokens = [d["text"] for e, d in events if e == "token"]
    assert len(tokens) > 5  # real token-by-token streaming from the LLM
    done = events[-1]
    assert done[0] == "done" and done[1]["answer_mode"] == "llm" and done[1]["llm_error"] is None
    assert "".join(tokens) == done[1]["answer"]
    assert "[1]" in done[1]["answer"]

    before = await history(client, base, sid)
    assert len(before) == 6 and before[-1]["id"] == done[1]["message_id"]
    assert before[3]["metadata"]["condensed_query"] == "Standalone: and its parameters?"
    assert before[1]["metadata"]["llm_model"] == "fake-model"

    await llm_server.restart()
    assert await history(client, llm_server.url, sid) == before
    fake.reset()
    again = await ok(
        await client.post(f"{llm_server.url}/query", json={"query": "and k1?", "session_id": sid})
    )
    assert again["answer_mode"] == "llm" and fake.kinds() == ["condense", "answer"]


async def test_citations_of_sources_the_llm_was_not_given_are_dropped(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    # Two sources; the model also cites [3], [9] and [0], one of them inside a list and cut between
    # two streamed tokens ("[2, " "9]").
    fake.behaviour = Behaviour(answer="HNSW is a graph [1][3] with layers [2, 9]. See [0] too [1].")
    cleaned = "HNSW is a graph [1] with layers [2]. See too [1]."
    base = llm_server.url
    body = {"query": "What is HNSW?", "top_k": 2}
    whole = await ok(await client.post(f"{base}/query", json=body))
    assert len(whole["sources"]) == 2 and whole["answer"] == cleaned
    events = await stream_events(client, f"{base}/query/stream", body)
    assert tokens_text(events) == events[-1][1]["answer"] == cleaned
    [*_, stored] = await history(client, base, events[-1][1]["session_id"])
    assert stored["content"] == cleaned


async def test_an_llm_answer_holding_nul_or_a_lone_surrogate_is_stored(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    # PostgreSQL text holds neither: the answer's write failed, /query was a 500 and the stream's `error`
    # lost the whole answer. The model's text is cleaned as a request's is (NUL -> space), and a lone
    # surrogate (half an emoji) is the replacement character.
    fake.behaviour = Behaviour(answer="HNSW\u0000is a graph \ud83d [1].")
    cleaned = "HNSW is a graph \ufffd [1]."
    base = llm_server.url
    whole = await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?"}))
    assert whole["answer_mode"] == "llm" and whole["answer"] == cleaned
    events = await stream_events(client, f"{base}/query/stream", {"query": "What is HNSW?"})
    assert events[-1][0] == "done", events[-1]
    assert tokens_text(events) == events[-1][1]["answer"] == cleaned
    [*_, stored] = await history(client, base, events[-1][1]["session_id"])
    assert stored["content"] == cleaned


async def test_an_llm_title_or_condensed_question_holding_nul_or_a_lone_surrogate_is_cleaned(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    # The same complete() as the answer's: the title is stored, the condensed question searched with.
    fake.behaviour = Behaviour(title="Graph\u0000indexes \ud83d", condensed="What\u0000is BM25 \udc00?")
    base = llm_server.url
    first = await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?"}))
    sid = first["session_id"]
    assert (await ok(await client.get(f"{base}/chat/sessions/{sid}")))["title"] == "Graph indexes \ufffd"
    follow_up = await ok(await client.post(f"{base}/query", json={"query": "and BM25?", "session_id": sid}))
    assert follow_up["answer_mode"] == "llm" and follow_up["sources"]
    [*_, stored] = await history(client, base, sid)
    assert stored["metadata"]["condensed_query"] == "What is BM25 \ufffd?"


async def test_a_blank_condensed_question_searches_with_the_question(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    """An LLM's condensed question of white space in quotes was searched with as it was: since search
    refuses a blank query (NotBlank), that failed the turn. The question itself is searched instead."""
    base = llm_server.url
    first = await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?"}))
    fake.behaviour = Behaviour(condensed='" "')
    follow_up = await client.post(
        f"{base}/query", json={"query": "and HNSW's parameters?", "session_id": first["session_id"]}
    )
    assert follow_up.status_code == 200, follow_up.text
    assert follow_up.json()["sources"], follow_up.json()


async def test_llm_errors_fall_back_to_extractive(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    base = llm_server.url
    fake.behaviour = Behaviour(fail_status=500)
    body = await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?"}))
    assert body["answer_mode"] == "extractive"
    assert body["answer"].startswith(FALLBACK_HEADER) and "[1]" in body["answer"]
    assert "The LLM (fake-model) failed" in body["llm_error"]
    sid = body["session_id"]
    # The title falls back to the question when the LLM is down.
    assert (await ok(await client.get(f"{base}/chat/sessions/{sid}")))["title"] == "What is HNSW?"

    # A follow-up: the condense step fails, the answer goes straight to extractive (one LLM call).
    fake.requests.clear()
    events = await stream_events(client, f"{base}/query/stream", {"query": "and BM25?", "session_id": sid})
    done = events[-1][1]
    assert events[-1][0] == "done" and done["llm_error"] and done["answer_mode"] == "extractive"
    assert tokens_text(events) == done["answer"]
    assert fake.kinds() == ["condense"]
    [*_, stored] = await history(client, base, sid)
    assert stored["metadata"]["llm_error"] == done["llm_error"]


async def test_slow_llm_times_out_into_the_extractive_answer(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    fake.behaviour = Behaviour(delay_s=30)
    body = await ok(await client.post(f"{llm_server.url}/query", json={"query": "What is BM25?"}))
    assert body["answer_mode"] == "extractive"
    assert "did not respond within 5 s" in body["llm_error"]
    assert body["answer"].startswith(FALLBACK_HEADER)


async def test_llm_failing_mid_stream_ends_with_the_fallback_in_done(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    base = llm_server.url
    fake.behaviour = Behaviour(drop_after_tokens=3, affects={"answer"})
    events = await stream_events(client, f"{base}/query/stream", {"query": "What is HNSW?"})
    assert tokens_text(events) == "According to the "  # the LLM's first three tokens
    done = events[-1][1]
    assert events[-1][0] == "done" and done["llm_error"] and done["answer"].startswith(FALLBACK_HEADER)
    [_, stored] = await history(client, base, done["session_id"])
    assert stored["content"] == done["answer"] and stored["id"] == done["message_id"]


async def test_client_disconnect_mid_stream_writes_nothing(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    base = llm_server.url
    sid = (await ok(await client.post(f"{base}/chat/sessions", json={"title": "disconnect"}), 201))["id"]
    fake.behaviour = Behaviour(hang_after_tokens=2, affects={"answer"})
    events = await stream_events(
        client, f"{base}/query/stream", {"query": "What is HNSW?", "session_id": sid}, stop_after_tokens=2
    )
    assert [e for e, _ in events] == ["sources", "token", "token"]
    # The server noticed the hang-up and cancelled its LLM request (the fake saw its stream abandoned).
    await asyncio.to_thread(fake.wait_for_aborted, 1)
    assert await history(client, base, sid) == []

    fake.reset()
    body = await ok(await client.post(f"{base}/query", json={"query": "What is HNSW?", "session_id": sid}))
    assert [m["id"] for m in await history(client, base, sid)] == [body["message_id"] - 1, body["message_id"]]


async def test_session_deleted_mid_stream_ends_with_an_error_event(
    llm_server: Server, client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    base = llm_server.url
    sid = (await ok(await client.post(f"{base}/chat/sessions", json={"title": "short-lived"}), 201))["id"]
    release = threading.Event()
    fake.behaviour = Behaviour(hang_after_tokens=1, release=release, affects={"answer"})
    events: list[tuple[str, dict[str, Any]]] = []
    async with client.stream(
        "POST", f"{base}/query/stream", json={"query": "What is HNSW?", "session_id": sid}
    ) as r:
        stream = read_events(r.aiter_lines())
        async for kind, _ in stream:
            if kind == "token":
                break  # the answer is under way: delete its session, then let the LLM finish
        await ok(await client.delete(f"{base}/chat/sessions/{sid}"), 204)
        release.set()
        events += [e async for e in stream]
    assert events[-1][0] == "error"
    assert f"chat session {sid} not found" in events[-1][1]["detail"]
    assert "done" not in [e for e, _ in events]
    assert (await client.get(f"{base}/chat/history/{sid}")).status_code == 404


# --- SIGTERM with an answer in flight ---------------------------------------------------------------


async def _sigterm_server(
    database_url: str, data_dir: Path, fake_llm: FakeLLM, log_dir: Path, grace_s: int
) -> Server:
    """A server whose LLM calls never time out on their own (600 s): only the shutdown can end them."""
    env = process_env(
        database_url,
        data_dir,
        RAG_LLM_PROVIDER="openai",
        RAG_LLM_BASE_URL=fake_llm.base_url,
        RAG_LLM_MODEL="fake-model",
        RAG_LLM_TIMEOUT_S="600",
        RAG_LLM_MAX_RETRIES="0",
        RAG_SERVER_SHUTDOWN_GRACE_S=str(grace_s),
    )
    server = Server(env, log_dir)
    await asyncio.to_thread(server.start)
    return server


async def _read_events(lines: AsyncIterator[str], until_tokens: int | None = None) -> list[str]:
    """Event names from an SSE line iterator: up to the `until_tokens`-th token, or to the end (a
    connection the server drops mid-stream also ends it)."""
    kinds: list[str] = []
    try:
        async for line in lines:
            if line.startswith("event:"):
                kinds.append(line.removeprefix("event:").strip())
                if until_tokens is not None and kinds.count("token") >= until_tokens:
                    break
    except httpx.RemoteProtocolError:
        pass
    return kinds


def _sigterm_and_wait(proc: Proc, timeout: float = 60) -> int:
    """SIGTERM, then the exit code; TimeoutExpired if the server is still up after `timeout`."""
    proc.popen.send_signal(signal.SIGTERM)
    return proc.popen.wait(timeout)


async def _message_count(database_url: str, session_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM chat_messages WHERE session_id = $1", uuid.UUID(session_id)
        )
        return int(count)
    finally:
        await conn.close()


async def test_sigterm_cancels_a_stalled_answer_stores_nothing_and_exits_0(
    database_url: str,
    data_dir: Path,
    documents: dict[str, uuid.UUID],
    fake: FakeLLM,
    client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    server = await _sigterm_server(database_url, data_dir, fake, tmp_path, grace_s=1)
    try:
        base = server.url
        sid = (await ok(await client.post(f"{base}/chat/sessions", json={"title": "sigterm"}), 201))["id"]
        # The LLM sends two tokens, then only keep-alive comments: the answer would never complete.
        fake.behaviour = Behaviour(hang_after_tokens=2, affects={"answer"})
        async with client.stream(
            "POST", f"{base}/query/stream", json={"query": "What is HNSW?", "session_id": sid}
        ) as r:
            lines = r.aiter_lines()
            assert await _read_events(lines, until_tokens=2) == ["sources", "token", "token"]
            assert server.proc is not None
            # Before the bounded shutdown, uvicorn waited for this stream as long as the LLM kept it open.
            code = await asyncio.to_thread(_sigterm_and_wait, server.proc)
            rest = await _read_events(lines)
        assert code == 0, server.proc.log_tail()
        assert "done" not in rest
        # The cancelled answer closed its LLM request, and stored nothing.
        await asyncio.to_thread(fake.wait_for_aborted, 1)
        assert await _message_count(database_url, sid) == 0
    finally:
        server.stop()


async def test_sigterm_lets_an_answer_finishing_within_the_grace_be_stored(
    database_url: str,
    data_dir: Path,
    documents: dict[str, uuid.UUID],
    fake: FakeLLM,
    client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    server = await _sigterm_server(database_url, data_dir, fake, tmp_path, grace_s=120)
    try:
        base = server.url
        assert server.proc is not None
        proc = server.proc
        sid = (await ok(await client.post(f"{base}/chat/sessions", json={"title": "graceful"}), 201))["id"]
        release = threading.Event()
        fake.behaviour = Behaviour(hang_after_tokens=2, release=release, affects={"answer"})
        async with client.stream(
            "POST", f"{base}/query/stream", json={"query": "What is HNSW?", "session_id": sid}
        ) as r:
            lines = r.aiter_lines()
            assert await _read_events(lines, until_tokens=2) == ["sources", "token", "token"]
            proc.popen.send_signal(signal.SIGTERM)
            # The server is shutting down and waiting for this stream: now let the LLM finish.
            await asyncio.to_thread(_wait_for_log, proc, "Waiting for connections to close")
            release.set()
            rest = await _read_events(lines)
        assert rest[-1] == "done", proc.log_tail()
        assert await asyncio.to_thread(proc.popen.wait, 60) == 0, proc.log_tail()
        assert await _message_count(database_url, sid) == 2
    finally:
        server.stop()


def _wait_for_log(proc: Proc, text: str, timeout: float = 60) -> None:
    """Block until the server's log contains `text` (a wait, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged:\n{proc.log_tail()}")
        time.sleep(0.05)
