"""A floor under search results and chat's sources (`min_similarity`, RAG_CHAT_MIN_SIMILARITY): what
reaches it in cosine, or holds every word of the query, stays, in rank order, the next ranked taking the
places of the rest; a question nothing answers gets no source and no LLM call. The real application in
this process, the real local model, a fake LLM speaking OpenAI's API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from starlette.testclient import TestClient

from rag_server.api.app import create_app
from rag_server.chat.answer import NO_SOURCES_ANSWER
from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval import service as retrieval_service
from rag_server.retrieval.legs import LegHit
from rag_server.retrieval.models import MAX_QUERY_CHARS, SearchFilters
from rag_server.retrieval.service import embed_query
from rag_server.retrieval.vector import exact_vector_leg
from tests.fakes.llm_server import FakeLLM
from tests.integration.conftest import APP_BASE_URL
from tests.support.processes import process_env

HANDBOOK = """# Employee Handbook

## Vacation
Full-time employees accrue 25 days of paid vacation per year. Unused days carry over up to 5 days.

## Remote work
Employees may work remotely up to three days per week. The Lyon office is open from 8:00 to 19:00.

## Expenses
Travel expenses are reimbursed within 14 days. Meals on business trips are covered up to 35 EUR a day.
"""
PRICES = """product,sku,price_eur,stock
Espresso machine,EM-100,349.00,12
Milk frother,MF-20,59.90,40
Coffee grinder,CG-7,129.00,0
Descaler pack,DS-3,14.50,230
"""
FAQ = """<html><body><h1>Support FAQ</h1><h2>How do I reset my password?</h2>
<p>Open Settings, then Security, and click Reset password. A link valid for 2 hours is e-mailed to you.</p>
<h2>Which browsers are supported?</h2><p>The latest two versions of Firefox, Chrome, Safari and Edge.</p>
</body></html>"""
# Passages about vacations that do not name the museum's airship: a question about both ranks them
# high, and only the last holds every word of it.
VACATIONS = {
    "leave.txt": "Vacation requests are filed in the HR portal; vacation balances are on the payslip.",
    "holidays.txt": "Public holidays are not vacation days. Vacation over the holidays needs approval.",
    "tips.txt": "Vacation travel tips: book early, pack light, and enjoy every day of your vacation.",
    "museum.txt": "The museum shows a zeppelin gondola. Staff enter for free, on vacation days too.",
}
OFF_TOPIC = "Who won the football world cup in 2014?"
QUERIES = [
    "How many vacation days do employees get?",
    "CG-7",
    "descaler",
    "password reset link",
    "office opening hours in Lyon",
    "zeppelin vacation days",
    OFF_TOPIC,
    "What is the capital of Australia?",
]
FLOOR = 0.3


@pytest.fixture(scope="module")
async def documents(runtime: Runtime) -> dict[str, UUID]:
    files = {"handbook.md": HANDBOOK, "prices.csv": PRICES, "faq.html": FAQ, **VACATIONS}
    ids = await ingest_documents_direct(
        runtime, [DirectDocument(name, text.encode(), {}) for name, text in files.items()]
    )
    return dict(zip(files, ids, strict=True))


@pytest.fixture(scope="module")
def client(settings: Settings, fake_llm: FakeLLM, documents: dict[str, UUID]) -> Iterator[TestClient]:
    with_llm = settings.model_copy(
        update={"llm_provider": "openai", "llm_base_url": fake_llm.base_url, "llm_model": "fake-llm"}
    )
    with TestClient(create_app(with_llm), base_url=APP_BASE_URL) as test_client:
        yield test_client


def search(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    reply = client.post("/search", json={"top_k": 100, **body})
    assert reply.status_code == 200, reply.text
    return list(reply.json()["results"])


async def evidence(runtime: Runtime, query: str) -> tuple[dict[int, float], set[int]]:
    """Every chunk's cosine with the query (numpy, from the stored vectors) and the chunks that hold every
    word of it (PostgreSQL's english text search over rag_bm25_text, as the BM25 leg reads it)."""
    vector = await embed_query(runtime, query)
    async with owner_connection(runtime.database_url) as conn:
        rows = await conn.fetch(
            "SELECT id, embedding::text AS e,"
            " to_tsvector('english', rag_bm25_text(search_text))"
            " @@ plainto_tsquery('english', rag_bm25_text($1)) AS every_word"
            " FROM chunks",
            query,
        )
    cosines = {r["id"]: float(np.array(r["e"][1:-1].split(","), dtype=np.float32) @ vector) for r in rows}
    return cosines, {r["id"] for r in rows if r["every_word"]}


@pytest.mark.parametrize("mode", ["hybrid", "vector", "bm25"])
@pytest.mark.parametrize("floor", [0.2, FLOOR, 0.5])
async def test_the_floor_keeps_the_ranked_hits_that_reach_it_or_hold_every_word(
    client: TestClient, runtime: Runtime, mode: str, floor: float
) -> None:
    # The corpus is smaller than a leg's depth: every leg ranks all it can match at any top_k, so the
    # floored list must be the full ranking filtered, the places of the dropped taken by the next.
    for query in QUERIES:
        cosines, every_word = await evidence(runtime, query)
        ranked = search(client, query=query, search_type=mode)
        expected = [
            h["chunk_id"] for h in ranked if cosines[h["chunk_id"]] >= floor or h["chunk_id"] in every_word
        ]
        floored = search(client, query=query, search_type=mode, min_similarity=floor, top_k=3)
        assert [h["chunk_id"] for h in floored] == expected[:3], (query, floor)
        assert floored == ranked_subset(ranked, expected[:3])


def ranked_subset(ranked: list[dict[str, Any]], ids: list[int]) -> list[dict[str, Any]]:
    """The hits of `ranked` with these ids, as the unfloored search gave them (scores included)."""
    by_id = {h["chunk_id"]: h for h in ranked}
    return [by_id[i] for i in ids]


async def test_hits_below_the_floor_give_their_places_to_the_next_ranked(
    client: TestClient, runtime: Runtime
) -> None:
    # Hybrid weighted to BM25 ranks passages saying "vacation" twice above chunks nearer in cosine (at the
    # default weight the order can follow cosine alone: it did on one machine's vectors).
    query, bm25_first = "vacation zeppelin", 0.2
    cosines, every_word = await evidence(runtime, query)
    ids = [h["chunk_id"] for h in search(client, query=query, alpha=bm25_first)]

    def weak(i: int) -> bool:
        return ids[i] not in every_word

    # A floor just under the cosine of the first hit ranked below a weaker one: that hit must move up.
    moved = next(
        i for i in range(1, len(ids)) if any(weak(j) and cosines[ids[j]] < cosines[ids[i]] for j in range(i))
    )
    floor = cosines[ids[moved]] - 1e-4
    below = search(client, query=query, alpha=bm25_first, min_similarity=floor, top_k=moved)
    floored = [h["chunk_id"] for h in below]
    assert floored == [i for i in ids if cosines[i] >= floor or i in every_word][:moved]
    assert ids[moved] in floored  # ranked beyond top_k, in by the place of a weaker one


async def test_what_the_floor_is_for(client: TestClient, runtime: Runtime) -> None:
    # A question the documents know nothing about: search ranks something anyway, the floor nothing.
    assert search(client, query=OFF_TOPIC, top_k=5)
    assert search(client, query=OFF_TOPIC, min_similarity=FLOOR) == []
    # A product code embeds far from the row that holds it, and stays for holding every word.
    cosines, every_word = await evidence(runtime, "CG-7")
    (hit,) = search(client, query="CG-7", search_type="vector", min_similarity=FLOOR, top_k=1)
    assert hit["document_name"] == "prices.csv" and "CG-7" in hit["text"]
    assert cosines[hit["chunk_id"]] < FLOOR and hit["chunk_id"] in every_word
    # A related question keeps its best passage first.
    top = search(client, query="How many vacation days do employees get?", min_similarity=FLOOR)[0]
    assert "25 days of paid vacation" in top["text"]


@pytest.mark.parametrize("value", [1.5, -1.01, "high", None])
def test_a_floor_out_of_range_is_a_422(client: TestClient, value: object) -> None:
    body: dict[str, Any] = {"query": "vacation", "min_similarity": value}
    if value is None:  # null is "no floor"
        assert client.post("/search", json=body).status_code == 200
        return
    reply = client.post("/search", json=body)
    assert reply.status_code == 422, reply.text
    assert "min_similarity" in reply.text
    assert client.post("/query", json={"query": "vacation", "min_similarity": value}).status_code == 422


def test_chat_cites_nothing_it_cannot_support_and_does_not_ask_the_llm(
    client: TestClient, fake_llm: FakeLLM
) -> None:
    fake_llm.reset()
    reply = client.post("/query", json={"query": OFF_TOPIC})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["sources"] == [] and body["answer"] == NO_SOURCES_ANSWER
    assert body["answer_mode"] == "extractive" and body["llm_error"] is None
    assert "answer" not in fake_llm.kinds(), fake_llm.kinds()
    # The question may lower its floor: -1 cites whatever search ranks, and the LLM answers.
    fake_llm.reset()
    anyway = client.post("/query", json={"query": OFF_TOPIC, "min_similarity": -1}).json()
    ranked = search(client, query=OFF_TOPIC, top_k=5)
    assert len(anyway["sources"]) == len(ranked) > 0 and anyway["answer_mode"] == "llm"
    assert "answer" in fake_llm.kinds()


def test_chat_cites_what_bears_on_the_question(client: TestClient) -> None:
    body = client.post("/query", json={"query": "How many vacation days do employees get?"}).json()
    assert body["answer_mode"] == "llm"
    assert body["sources"] and "25 days of paid vacation" in body["sources"][0]["excerpt"]
    code = client.post("/query", json={"query": "Is the CG-7 in stock?"}).json()
    assert [s["document_name"] for s in code["sources"]][:1] == ["prices.csv"]


def test_cli_search_takes_a_floor_and_refuses_one_out_of_range(
    documents: dict[str, UUID], database_url: str, data_dir: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "rag_server", "search", "vacation zeppelin", "--type", "bm25", *args]
        env = process_env(database_url, data_dir)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)

    # BM25 alone loads no model, but its floor needs the query's vector: only the chunk holding every
    # word stays at 0.99.
    done = run("--min-similarity", "0.99", "--json")
    assert done.returncode == 0, done.stderr
    assert [h["document_name"] for h in json.loads(done.stdout)["results"]] == ["museum.txt"]
    refused = run("--min-similarity", "2")
    assert refused.returncode == 2 and "--min-similarity" in refused.stderr, refused.stderr


def test_a_follow_up_no_llm_made_standalone_searches_again_with_the_question_before_it(
    sync_app_client: TestClient, documents: dict[str, UUID]
) -> None:
    client = sync_app_client  # no LLM: follow-ups are not condensed
    first, follow_up = "How many vacation days do employees get?", "Is that the same for part-timers?"
    assert search(client, query=follow_up, min_similarity=FLOOR) == []  # nothing on its own

    def ask(query: str, session: str) -> dict[str, Any]:
        reply = client.post("/query", json={"query": query, "session_id": session})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    ask(first, "floor-follow-up")
    answer = ask(follow_up, "floor-follow-up")
    assert answer["condensed_query"] == f"{first} {follow_up}"
    assert answer["sources"] and "25 days of paid vacation" in answer["sources"][0]["excerpt"]
    # A question that finds sources of its own is searched as asked, even in the middle of a session.
    other = ask("How do I reset my password?", "floor-follow-up")
    assert other["condensed_query"] is None and other["sources"][0]["document_name"] == "faq.html"
    # A question naming its own subject, which nothing bears on: not a follow-up. Searched again with the
    # question before it, the vacation passages passed the floor and were quoted as its answer.
    unrelated = ask(OFF_TOPIC, "floor-follow-up")
    assert (unrelated["sources"], unrelated["answer"], unrelated["condensed_query"]) == (
        [],
        NO_SOURCES_ANSWER,
        None,
    )
    # Alone, the follow-up has nothing to fall back on.
    alone = ask(follow_up, "floor-alone")
    assert alone["sources"] == [] and alone["answer"] == NO_SOURCES_ANSWER
    # Two questions each as long as a question may be: the search again keeps the end of the two (a
    # search query has the same limit), not a 500.
    long_first = "word " * 3_990 + first
    long_follow_up = follow_up + " qqq" * 4_980
    assert len(long_first) <= MAX_QUERY_CHARS and len(long_follow_up) <= MAX_QUERY_CHARS
    ask(long_first, "floor-long")
    searched_again = ask(long_follow_up, "floor-long")["condensed_query"]
    assert searched_again == f"{long_first} {long_follow_up}"[-MAX_QUERY_CHARS:]


def test_the_stream_says_so_too(client: TestClient, fake_llm: FakeLLM) -> None:
    fake_llm.reset()
    with client.stream("POST", "/query/stream", json={"query": OFF_TOPIC}) as reply:
        assert reply.status_code == 200
        body = reply.read().decode()
    events = [
        (block.split("\n", 1)[0].removeprefix("event:").strip(), json.loads(block.split("data:", 1)[1]))
        for block in body.strip().split("\n\n")
        if block.startswith("event:")
    ]
    names = [name for name, _ in events]
    assert names[0] == "sources" and events[0][1]["sources"] == [] and names[-1] == "done", names
    assert events[-1][1]["answer"] == NO_SOURCES_ANSWER
    assert (
        "".join(data.get("text", "") for name, data in events if name == "token").strip() == NO_SOURCES_ANSWER
    )
    assert "answer" not in fake_llm.kinds()


async def test_a_weak_vector_answer_is_checked_by_an_exact_scan(
    client: TestClient, runtime: Runtime, documents: dict[str, UUID]
) -> None:
    # HNSW can be trapped in a cluster of near-equal vectors, and its answer is then far from the query
    # (reports/hnsw-duplicates.md). A trap cannot be built on demand (the graph's levels are random):
    # what is checked is that a weak answer (best < RAG_VECTOR_RECHECK_BELOW) is replaced by the exact
    # top k, and a strong one is not.
    cosines, _ = await evidence(runtime, OFF_TOPIC)
    exact = sorted(cosines, key=lambda i: (-cosines[i], i))[:3]
    reply = client.post("/search", json={"query": OFF_TOPIC, "search_type": "vector", "top_k": 3}).json()
    assert max(cosines.values()) < runtime.settings.vector_recheck_below
    assert "vector_exact" in reply["timings_ms"], reply["timings_ms"]
    assert [h["chunk_id"] for h in reply["results"]] == exact
    strong = client.post("/search", json={"query": "How many vacation days do employees get?"}).json()
    assert "vector_exact" not in strong["timings_ms"], strong["timings_ms"]
    # Beyond the bound on the table's size the scan reads nothing and returns nothing.
    vector = await embed_query(runtime, OFF_TOPIC)
    async with owner_connection(runtime.database_url) as conn:
        await conn.execute("ANALYZE chunks")
        rows = await conn.fetchval("SELECT reltuples::int FROM pg_class WHERE oid = 'chunks'::regclass")
        assert rows == len(cosines)
        within = await exact_vector_leg(conn, vector, 3, up_to=rows)
        beyond = await exact_vector_leg(conn, vector, 3, up_to=rows - 1)
    assert [h.chunk_id for h in within] == exact and beyond == []


async def test_the_recheck_bound_counts_the_searched_scope_not_the_whole_table(
    runtime: Runtime, documents: dict[str, UUID]
) -> None:
    # A small collection (or a document) in a database past the bound is still rechecked: the bound
    # counts the chunks a scan would read. The handbook moves to a collection of its own in a
    # transaction that is rolled back.
    cosines, _ = await evidence(runtime, OFF_TOPIC)
    vector = await embed_query(runtime, OFF_TOPIC)
    handbook = documents["handbook.md"]
    found: dict[tuple[str, int], list[int]] = {}
    async with owner_connection(runtime.database_url) as conn:
        moved = conn.transaction()
        await moved.start()
        try:
            own = [
                r["id"] for r in await conn.fetch("SELECT id FROM chunks WHERE document_id = $1", handbook)
            ]
            size = len(own)
            assert 1 < size < len(cosines)
            collection = await conn.fetchval("INSERT INTO collections (name) VALUES ('scope') RETURNING id")
            await conn.execute(  # one statement: the chunks' foreign key holds at its end
                "WITH d AS (UPDATE documents SET collection_id = $1 WHERE id = $2)"
                " UPDATE chunks SET collection_id = $1 WHERE document_id = $2",
                collection,
                handbook,
            )
            for up_to in (size, size - 1):
                hits = await exact_vector_leg(conn, vector, 3, collections=[collection], up_to=up_to)
                found["collection", up_to] = [h.chunk_id for h in hits]
                hits = await exact_vector_leg(
                    conn, vector, 3, SearchFilters(document_ids=[handbook]), up_to=up_to
                )
                found["document", up_to] = [h.chunk_id for h in hits]
        finally:
            await moved.rollback()
    exact = sorted(own, key=lambda i: (-cosines[i], i))[:3]
    assert found == {
        ("collection", size): exact,
        ("document", size): exact,
        ("collection", size - 1): [],
        ("document", size - 1): [],
    }


async def test_a_trapped_hnsw_answer_is_replaced_by_the_exact_top_k(
    client: TestClient, runtime: Runtime, documents: dict[str, UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a few chunks HNSW is exact, so a trap is made here, at pgvector's edge: the HNSW query answers
    # as a trapped one does, with chunks far from the query at their own weak similarities.
    cosines, _ = await evidence(runtime, OFF_TOPIC)
    farthest = sorted(cosines, key=lambda i: (cosines[i], i))[:3]
    exact = sorted(cosines, key=lambda i: (-cosines[i], i))[:3]
    assert not set(farthest) & set(exact)

    async def trapped(*args: object, **kwargs: object) -> list[LegHit]:
        return sorted((LegHit(i, cosines[i]) for i in farthest), key=lambda h: (-h.score, h.chunk_id))

    monkeypatch.setattr(retrieval_service, "vector_leg", trapped)
    for mode in ("vector", "hybrid"):
        reply = client.post("/search", json={"query": OFF_TOPIC, "search_type": mode, "top_k": 3}).json()
        assert "vector_exact" in reply["timings_ms"], reply["timings_ms"]
        assert not {h["chunk_id"] for h in reply["results"]} & set(farthest), (mode, reply["results"])
        if mode == "vector":
            assert [h["chunk_id"] for h in reply["results"]] == exact
