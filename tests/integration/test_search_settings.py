"""A collection's own fusion weight (hybrid_alpha) over real HTTP: set and cleared by PATCH, shown by GET,
used by /search when the request gives none (a ranking that flips with it); and group_by=document.

The corpus is made so that the two legs disagree on the query "automobile repair": `mechanic.txt` is
the nearest by meaning (and shares no word with the query), `minutes.txt` is the only BM25 match.
Convex fusion then ranks `minutes.txt` first at alpha 0.5 (the default) and `mechanic.txt` first at
alpha 0.9; the test checks that the legs really disagree before relying on it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_server.collections.models import CreateCollection
from rag_server.collections.store import create_collection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from tests.support.processes import process_env

QUERY = "automobile repair"
TEXTS = {
    "mechanic.txt": "A mechanic fixes cars: replacing brakes, tuning engines and changing the oil of "
    "vehicles.",
    "minutes.txt": "Minutes of the committee: the automobile repair line item was moved to next year's "
    "municipal budget spreadsheet.",
    "penguins.txt": "Penguins swim in cold antarctic waters and eat krill.",
}
LONG = " ".join(f"Section {i}: zebrafish heart regeneration after cryoinjury, study {i}." for i in range(60))


@pytest.fixture(scope="module")
async def corpus(runtime: Runtime) -> dict[str, Any]:
    tuned = await create_collection(runtime.pool, CreateCollection(name="tuned"))
    await create_collection(runtime.pool, CreateCollection(name="empty"))
    docs = [DirectDocument(filename=name, content=text.encode(), metadata={}) for name, text in TEXTS.items()]
    await ingest_documents_direct(runtime, docs, collection_id=tuned.id)
    long = await create_collection(runtime.pool, CreateCollection(name="long"))
    await ingest_documents_direct(
        runtime,
        [DirectDocument(filename="long.txt", content=LONG.encode(), metadata={}), *docs[:1]],
        collection_id=long.id,
    )
    return {"tuned": tuned}


@pytest.fixture
async def http(live_app_url: str, corpus: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_app_url, timeout=60) as client:
        yield client


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def top(http: httpx.AsyncClient, **body: Any) -> str:
    reply = await ok(await http.post("/search", json={"query": QUERY, "collections": ["tuned"], **body}))
    return str(reply["results"][0]["document_name"])


async def set_alpha(http: httpx.AsyncClient, name: str, alpha: float | None) -> dict[str, Any]:
    result: dict[str, Any] = await ok(await http.patch(f"/collections/{name}", json={"hybrid_alpha": alpha}))
    return result


async def test_the_legs_disagree_on_the_query(http: httpx.AsyncClient) -> None:
    assert await top(http, search_type="vector") == "mechanic.txt"
    reply = await ok(
        await http.post("/search", json={"query": QUERY, "collections": ["tuned"], "search_type": "bm25"})
    )
    assert [h["document_name"] for h in reply["results"]] == ["minutes.txt"]


async def test_a_collections_alpha_is_shown_set_used_and_cleared(http: httpx.AsyncClient) -> None:
    assert (await ok(await http.get("/collections/tuned")))["hybrid_alpha"] is None
    assert await top(http) == "minutes.txt"  # RAG_HYBRID_ALPHA 0.5

    updated = await set_alpha(http, "tuned", 0.9)
    assert updated["hybrid_alpha"] == 0.9 and updated["name"] == "tuned"
    assert (await ok(await http.get("/collections/tuned")))["hybrid_alpha"] == 0.9
    listed = await ok(await http.get("/collections"))
    assert {c["name"]: c["hybrid_alpha"] for c in listed["items"]}["tuned"] == 0.9
    assert await top(http) == "mechanic.txt"  # the collection's weight now
    assert await top(http, alpha=0.1) == "minutes.txt"  # the request's weight wins over it
    assert await top(http, fusion="rrf") in TEXTS  # RRF has no alpha: still answers

    # A PATCH that does not name hybrid_alpha keeps it.
    await ok(await http.patch("/collections/tuned", json={"description": "tuned by hand"}))
    assert (await ok(await http.get("/collections/tuned")))["hybrid_alpha"] == 0.9

    cleared = await set_alpha(http, "tuned", None)
    assert cleared["hybrid_alpha"] is None and cleared["description"] == "tuned by hand"
    assert await top(http) == "minutes.txt"


async def test_several_collections_use_the_mean_of_their_alphas(http: httpx.AsyncClient) -> None:
    await set_alpha(http, "tuned", 0.9)
    both = ["tuned", "empty"]
    try:
        await set_alpha(http, "empty", 1.0)  # mean 0.95
        assert await top(http, collections=both) == "mechanic.txt"
        await set_alpha(http, "empty", 0.0)  # mean 0.45
        assert await top(http, collections=both) == "minutes.txt"
        await set_alpha(http, "empty", None)  # unset counts as RAG_HYBRID_ALPHA: mean 0.7
        assert await top(http, collections=both) == "minutes.txt"
    finally:
        await set_alpha(http, "tuned", None)


@pytest.mark.parametrize("alpha", [1.5, -0.1, "0.5", True])
async def test_an_alpha_outside_0_1_or_not_a_number_is_refused(http: httpx.AsyncClient, alpha: Any) -> None:
    reply = await http.patch("/collections/tuned", json={"hybrid_alpha": alpha})
    assert reply.status_code == 422, reply.text
    assert (await http.post("/search", json={"query": QUERY, "alpha": 2})).status_code == 422


@pytest.mark.parametrize("search_type", ["hybrid", "bm25", "vector"])
async def test_group_by_document_returns_each_document_once_by_its_best_chunk(
    http: httpx.AsyncClient, search_type: str
) -> None:
    body = {"query": "zebrafish heart regeneration", "collections": ["long"], "search_type": search_type}
    chunks = (await ok(await http.post("/search", json={**body, "top_k": 10})))["results"]
    assert len(chunks) > 2 and {h["document_name"] for h in chunks} >= {"long.txt"}
    assert [h["document_name"] for h in chunks].count("long.txt") > 1  # chunk hits repeat the document

    grouped = await ok(await http.post("/search", json={**body, "top_k": 10, "group_by": "document"}))
    names = [h["document_name"] for h in grouped["results"]]
    assert (
        names[0] == "long.txt"
        and sorted(names) == sorted(set(names)) == ["long.txt", "mechanic.txt"][: len(names)]
    )
    best = grouped["results"][0]
    assert best["chunk_id"] in {h["chunk_id"] for h in chunks if h["document_name"] == "long.txt"}
    for leg in ["vector", "bm25"] if search_type == "hybrid" else [search_type]:
        assert best[leg]["rank"] == 1  # the document's rank within the leg
    if search_type != "hybrid":
        assert best["chunk_id"] == chunks[0]["chunk_id"]  # a leg alone: the document's best chunk
    assert (await http.post("/search", json={**body, "group_by": "page"})).status_code == 422


def test_cli_search_takes_alpha_and_group_by(
    live_app_url: str, corpus: dict[str, Any], database_url: str, data_dir: Path
) -> None:
    env = process_env(database_url, data_dir)

    def top_via_cli(*args: str) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [sys.executable, "-m", "rag_server", "search", QUERY, "--url", live_app_url, "--json", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr
        results: list[dict[str, Any]] = json.loads(proc.stdout)["results"]
        return results

    assert top_via_cli("--collection", "tuned", "--alpha", "0.9")[0]["document_name"] == "mechanic.txt"
    assert top_via_cli("--collection", "tuned", "--alpha", "0.1")[0]["document_name"] == "minutes.txt"
    # By meaning every chunk of long.txt is far from the query; grouped, it comes back once.
    grouped = top_via_cli("--collection", "long", "--group-by", "document", "--type", "vector")
    assert [h["document_name"] for h in grouped] == ["mechanic.txt", "long.txt"]
