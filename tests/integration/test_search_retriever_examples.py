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


@pytest.mark.parametrize("script", ["llamaindex_search_retriever.py", "langchain_search_retriever.py"])
async def test_the_retriever_example_returns_the_matching_document(
    script: str, live_app_url: str, documents: list[uuid.UUID]
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAG_API_KEY"} | {"RAG_URL": live_app_url}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(EXAMPLES / script), "Fresnel", "lens", "lighthouse"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "query: Fresnel lens lighthouse"
    assert "lighthouses.txt: 'The Fresnel lens" in lines[1]
    assert len(lines) == 3 and "bread.txt" in lines[2]  # both documents, the matching one first


async def test_the_retriever_example_fails_loudly_on_an_http_error(
    live_app_url: str, documents: list[uuid.UUID]
) -> None:
    """Pointed at the wrong place, the example fails loudly (an HTTP error), never prints nothing."""
    env = dict(os.environ) | {"RAG_URL": f"{live_app_url}/nowhere"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(EXAMPLES / "langchain_search_retriever.py"), "lighthouse"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "404" in result.stderr


@pytest.mark.parametrize("script", ["llamaindex_search_retriever.py", "langchain_search_retriever.py"])
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
