"""examples/{llamaindex,langchain}_search_retriever.py as a user runs them: a subprocess pointed at a
live server (RAG_URL) holding two documents; the retriever must bring back the one the query is about."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from rag_server.collections import store
from rag_server.collections.models import CreateCollection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOCS = {
    "lighthouses.txt": "The Fresnel lens, invented in 1822, let a lighthouse beam be seen more than twenty "
    "miles out to sea.",
    "bread.txt": "Sourdough bread rises with wild yeast and lactobacilli kept alive in a starter.",
}


@pytest.fixture(scope="module")
async def documents(runtime: Runtime) -> list[uuid.UUID]:
    return await ingest_documents_direct(
        runtime, [DirectDocument(n, t.encode(), {}) for n, t in DOCS.items()]
    )


SCRIPTS = ["llamaindex_search_retriever.py", "langchain_search_retriever.py"]


async def run_example(script: str, url: str, *query: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(EXAMPLES / script), *query],
        env={k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"RAG_URL": url} | env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
async def recipes(runtime: Runtime) -> str:
    """A collection of its own, with a document that also speaks of lighthouses."""
    name = f"recipes-{uuid.uuid4().hex[:8]}"
    collection = await store.create_collection(runtime.pool, CreateCollection(name=name))
    cake = DirectDocument("cake.txt", b"A lighthouse cake is iced in red and white stripes.", {})
    await ingest_documents_direct(runtime, [cake], collection_id=collection.id)
    return name


@pytest.mark.parametrize("script", SCRIPTS)
async def test_the_retriever_example_returns_the_matching_document(
    script: str, live_app_url: str, documents: list[uuid.UUID]
) -> None:
    result = await run_example(script, live_app_url, "Fresnel", "lens", "lighthouse")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "query: Fresnel lens lighthouse"
    assert "lighthouses.txt: 'The Fresnel lens" in lines[1]
    assert len(lines) == 3 and "bread.txt" in lines[2]  # both documents, the matching one first


@pytest.mark.parametrize("script", SCRIPTS)
async def test_the_retriever_example_searches_the_collections_it_is_given(
    script: str, live_app_url: str, documents: list[uuid.UUID], recipes: str
) -> None:
    result = await run_example(script, live_app_url, "lighthouse", RAG_COLLECTIONS=recipes)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "cake.txt: 'A lighthouse cake" in lines[1]  # not the default's lighthouses
    both = await run_example(script, live_app_url, "lighthouse", RAG_COLLECTIONS=f"default,{recipes}")
    assert {line.split(": ")[0].split()[-1] for line in both.stdout.splitlines()[1:]} == {
        "cake.txt",
        "lighthouses.txt",
        "bread.txt",
    }


@pytest.mark.parametrize("script", SCRIPTS)
async def test_the_retriever_example_passes_chromas_where_and_where_document_as_filters(
    script: str, live_app_url: str, documents: list[uuid.UUID]
) -> None:
    words = await run_example(
        script, live_app_url, "lighthouse", RAG_FILTERS='{"text": {"$contains": "yeast"}}'
    )
    assert words.returncode == 0, words.stderr[-3000:]
    assert [line.split(": ")[0].split()[-1] for line in words.stdout.splitlines()[1:]] == ["bread.txt"]
    other = await run_example(script, live_app_url, "lighthouse", RAG_FILTERS='{"metadata": {"year": 1822}}')
    assert other.returncode == 0 and other.stdout.splitlines()[1:] == []  # no document has that metadata


async def test_the_retriever_example_fails_loudly_on_an_http_error(
    live_app_url: str, documents: list[uuid.UUID]
) -> None:
    """Pointed at the wrong place, or at a collection that does not exist, the example fails loudly (an
    HTTP error), never prints nothing."""
    result = await run_example("langchain_search_retriever.py", f"{live_app_url}/nowhere", "lighthouse")
    assert result.returncode != 0 and "404" in result.stderr
    result = await run_example(
        "llamaindex_search_retriever.py", live_app_url, "lighthouse", RAG_COLLECTIONS="no-such-collection"
    )
    assert result.returncode != 0 and "404" in result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_examples_keep_where_a_hit_is_from(script: str) -> None:
    """A /search hit's headings and location label reach the retriever's metadata, flat; absent ones
    are left out (a plain-text hit has neither)."""
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    slide = {
        "document_name": "deck.pptx",
        "page": None,
        "heading_path": "Risks",
        "location": {"label": "slide 2, speaker notes", "slide": 2, "part": "notes"},
    }
    assert module.place(slide) == {
        "document_name": "deck.pptx",
        "page": None,
        "heading_path": "Risks",
        "location": "slide 2, speaker notes",
    }
    plain = {"document_name": "a.txt", "page": None, "heading_path": None, "location": None}
    assert module.place(plain) == {"document_name": "a.txt", "page": None}
