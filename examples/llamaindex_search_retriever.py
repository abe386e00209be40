"""A LlamaIndex retriever over a running rag-server's /search (needs only llama-index-core and httpx).

RAG_URL=http://127.0.0.1:8000 RAG_API_KEY=... python examples/llamaindex_search_retriever.py "question"

RAG_COLLECTIONS=handbook,wiki searches those collections (names or ids; unset: the key's `default`).
RAG_FILTERS='{"metadata": {"year": {"$gte": 2020}}, "text": {"$contains": "HNSW"}}' filters the search:
/search's `filters` (Chroma's `where` is `metadata`, its `where_document` is `text`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import httpx
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode


def place(hit: dict[str, Any]) -> dict[str, Any]:
    """The hit's document and where in it: page, headings ("Guide > Install"), slide or rows (flat)."""
    found = {"document_name": hit["document_name"], "page": hit["page"]}
    if hit.get("heading_path"):
        found["heading_path"] = hit["heading_path"]
    if hit.get("location"):
        found["location"] = hit["location"]["label"]
    return found


class RagServerRetriever(BaseRetriever):
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        top_k: int = 5,
        search_type: str = "hybrid",
        collections: list[str] | None = None,  # names or ids; None: `default`
        filters: dict[str, Any] | None = None,  # /search's filters: metadata, text, file_types, document_ids
    ) -> None:
        super().__init__()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=60)
        self._body: dict[str, Any] = {"top_k": top_k, "search_type": search_type}
        if collections:
            self._body["collections"] = collections
        if filters:
            self._body["filters"] = filters

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        response = self._http.post("/search", json={"query": query_bundle.query_str, **self._body})
        response.raise_for_status()
        return [
            NodeWithScore(
                node=TextNode(
                    id_=f"{hit['document_id']}#{hit['chunk_index']}",
                    text=hit["text"],
                    metadata={**place(hit), **hit["metadata"]},
                ),
                score=hit["score"],
            )
            for hit in response.json()["results"]
        ]


if __name__ == "__main__":
    retriever = RagServerRetriever(
        os.environ.get("RAG_URL", "http://127.0.0.1:8000"),
        api_key=os.environ.get("RAG_API_KEY"),
        collections=[c for c in os.environ.get("RAG_COLLECTIONS", "").split(",") if c] or None,
        filters=json.loads(os.environ.get("RAG_FILTERS") or "null"),
    )
    query = " ".join(sys.argv[1:]) or "What is this about?"
    print(f"query: {query}")
    for hit in retriever.retrieve(query):
        print(f"{hit.score:.4f}  {hit.node.metadata['document_name']}: {hit.node.get_content()[:120]!r}")
