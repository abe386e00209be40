"""A LangChain retriever over a running rag-server's /search (needs only langchain-core and httpx).

RAG_URL=http://127.0.0.1:8000 RAG_API_KEY=... python examples/langchain_search_retriever.py "question"

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
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever


def place(hit: dict[str, Any]) -> dict[str, Any]:
    """The hit's document and where in it: page, headings ("Guide > Install"), slide or rows (flat)."""
    found = {"document_name": hit["document_name"], "page": hit["page"]}
    if hit.get("heading_path"):
        found["heading_path"] = hit["heading_path"]
    if hit.get("location"):
        found["location"] = hit["location"]["label"]
    return found


class RagServerRetriever(BaseRetriever):
    url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    top_k: int = 5
    search_type: str = "hybrid"  # or "bm25", "vector"
    collections: list[str] | None = None  # names or ids; None: `default`
    filters: dict[str, Any] | None = None  # /search's filters: metadata, text, file_types, document_ids

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body: dict[str, Any] = {"query": query, "top_k": self.top_k, "search_type": self.search_type}
        if self.collections:
            body["collections"] = self.collections
        if self.filters:
            body["filters"] = self.filters
        response = httpx.post(f"{self.url}/search", json=body, headers=headers, timeout=60)
        response.raise_for_status()
        return [
            Document(
                page_content=hit["text"],
                id=f"{hit['document_id']}#{hit['chunk_index']}",
                metadata={**place(hit), "score": hit["score"]},
            )
            for hit in response.json()["results"]
        ]


if __name__ == "__main__":
    retriever = RagServerRetriever(
        url=os.environ.get("RAG_URL", "http://127.0.0.1:8000"),
        api_key=os.environ.get("RAG_API_KEY"),
        collections=[c for c in os.environ.get("RAG_COLLECTIONS", "").split(",") if c] or None,
        filters=json.loads(os.environ.get("RAG_FILTERS") or "null"),
    )
    query = " ".join(sys.argv[1:]) or "What is this about?"
    print(f"query: {query}")
    for doc in retriever.invoke(query):
        print(f"{doc.metadata['score']:.4f}  {doc.metadata['document_name']}: {doc.page_content[:120]!r}")
