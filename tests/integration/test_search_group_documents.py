"""group_by=document gives top_k documents when that many match, however many chunks each has.

Each leg returns RAG_HYBRID_CANDIDATES chunks (here 4) before they are folded to documents: when the
best documents have many chunks each, those chunks filled the legs and a request for 4 documents got
1 or 2, although 5 documents match (the vector leg matches them all). Seen at 15,000 documents of
3 chunks: top_k=50 per document gave 42 documents under a metadata filter 137 documents passed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval import ranking, service
from rag_server.retrieval.filters import LegFilters

QUERY = "zebrafish heart regeneration"
DOCUMENTS = 5
TOP_K = 4


def text(n: int) -> str:
    """A document of several chunks, every one about the query; document 0 the closest to it, each next
    one further (more words beside the query's), so the best chunks all belong to the first documents."""
    filler = " ".join(f"note{n}x{i}" for i in range(n * 3))
    return " ".join(f"Section {i}: zebrafish heart regeneration {filler}." for i in range(80))


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, hybrid_candidates=TOP_K)


@pytest.fixture(scope="module")
async def corpus(runtime: Runtime) -> None:
    docs = [
        DirectDocument(filename=f"doc{n}.txt", content=text(n).encode(), metadata={})
        for n in range(DOCUMENTS)
    ]
    await ingest_documents_direct(runtime, docs)


@pytest.fixture
async def http(app_client: httpx.AsyncClient, corpus: None) -> AsyncIterator[httpx.AsyncClient]:
    yield app_client


async def search(http: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    reply = await http.post("/search", json={"query": QUERY, **body})
    assert reply.status_code == 200, reply.text
    results: list[dict[str, Any]] = reply.json()["results"]
    return results


async def test_each_document_has_more_chunks_than_a_leg_returns(http: httpx.AsyncClient) -> None:
    chunks = await search(http, top_k=TOP_K, search_type="bm25")
    assert len({h["document_id"] for h in chunks}) < TOP_K  # the corpus is what the test needs
    listing = (await http.get("/documents", params={"limit": 50})).json()["items"]
    assert len(listing) == DOCUMENTS and min(d["chunk_count"] for d in listing) > TOP_K


@pytest.mark.parametrize("search_type", ["hybrid", "bm25", "vector"])
async def test_group_by_document_returns_top_k_documents(http: httpx.AsyncClient, search_type: str) -> None:
    grouped = await search(http, top_k=TOP_K, search_type=search_type, group_by="document")
    names = [h["document_name"] for h in grouped]
    assert len(names) == len(set(names)) == TOP_K, names
    # Every document this matches when asked for more than there are: all of them, once each.
    everything = await search(http, top_k=20, search_type=search_type, group_by="document")
    assert sorted(h["document_name"] for h in everything) == [f"doc{n}.txt" for n in range(DOCUMENTS)]


@pytest.mark.parametrize("search_type", ["hybrid", "bm25", "vector"])
async def test_documents_past_the_deepest_read(
    http: httpx.AsyncClient, search_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document whose every chunk is nearer than any other document (a book on the query's topic)
    fills a leg even at its deepest read: the leg then reads on past the documents it holds. Here the
    deepest read is the legs' own depth (4 chunks: from fewer than 4 documents)."""
    monkeypatch.setattr(ranking, "DOCUMENT_DEPTH_MAX", TOP_K)
    monkeypatch.setattr(ranking, "DOCUMENT_EXCLUSION_READS", 0)
    short = await search(http, top_k=TOP_K, search_type=search_type, group_by="document")
    assert len(short) < TOP_K  # what reading past the documents it holds is for
    monkeypatch.undo()
    monkeypatch.setattr(ranking, "DOCUMENT_DEPTH_MAX", TOP_K)
    grouped = await search(http, top_k=TOP_K, search_type=search_type, group_by="document")
    names = [h["document_name"] for h in grouped]
    assert len(names) == len(set(names)) == TOP_K, names
    # The documents in their order of the unbounded reads: each one's score is its best chunk's.
    monkeypatch.undo()
    unbounded = await search(http, top_k=TOP_K, search_type=search_type, group_by="document")
    assert names == [h["document_name"] for h in unbounded]


async def test_no_read_past_the_documents_when_the_scope_has_no_other(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few long documents fill a leg at any depth: once it holds every document of the scope, it
    does not read past them (a read that could find nothing; on HNSW it scans up to
    hnsw.max_scan_tuples before it gives up)."""
    monkeypatch.setattr(ranking, "DOCUMENT_DEPTH_MAX", TOP_K)
    monkeypatch.setattr(ranking, "DOCUMENT_EXCLUSION_READS", 10)  # as many as it may want
    excluded: list[int] = []
    real = service.bm25_search

    async def counted(*args: Any, **kwargs: Any) -> Any:
        filters = args[3] if len(args) > 3 else kwargs.get("filters")
        if isinstance(filters, LegFilters):
            excluded.append(len(filters.excluded_documents))
        return await real(*args, **kwargs)

    monkeypatch.setattr(service, "bm25_search", counted)
    everything = await search(http, top_k=20, search_type="bm25", group_by="document")
    assert len(everything) == DOCUMENTS
    assert excluded and max(excluded) < DOCUMENTS  # reads past some documents, never past all
