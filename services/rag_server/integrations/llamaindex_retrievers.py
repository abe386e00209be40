"""LlamaIndex retrievers over the one chunks table, async-native. They call retrieval's `search`, so
the vector leg searches the active embedding generation's vectors with a query embedded by its model
(generations.active), like every other search: a `reembed` switch or `--finalize` needs nothing here.

`aretrieve` is the real path. A sync `retrieve` only works from a thread other than the one
running the Runtime's event loop (the asyncpg pool belongs to that loop); it then hands the work
to that loop instead of starting a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag_server.infra.runtime import Runtime
from rag_server.retrieval.models import FusionMethod, SearchFilters, SearchHit, SearchRequest, SearchType
from rag_server.retrieval.service import search


def hit_to_node(hit: SearchHit) -> NodeWithScore:
    metadata: dict[str, Any] = {
        **hit.metadata,
        "chunk_id": hit.chunk_id,
        "document_id": str(hit.document_id),
        "document_name": hit.document_name,
        "chunk_index": hit.chunk_index,
        "page": hit.page,
    }
    # Where the chunk sits, flat (what vector stores accept): its headings, its slide or rows.
    if hit.heading_path:
        metadata["heading_path"] = hit.heading_path
    if hit.location is not None:
        metadata["location"] = hit.location.label
    for leg in ("vector", "bm25"):
        score = getattr(hit, leg)
        if score is not None:
            metadata[f"{leg}_rank"] = score.rank
            metadata[f"{leg}_score"] = score.score
    node = TextNode(id_=f"chunk-{hit.chunk_id}", text=hit.text, metadata=metadata)
    # Scores and ids are for callers, not for the LLM prompt; where the passage is from is for both.
    shown = ("document_name", "page", "heading_path", "location")
    node.excluded_llm_metadata_keys = [k for k in metadata if k not in shown]
    return NodeWithScore(node=node, score=hit.score)


class _ChunkRetriever(BaseRetriever):
    search_type: SearchType = "hybrid"

    def __init__(
        self,
        runtime: Runtime,
        top_k: int = 10,
        filters: SearchFilters | None = None,
        fusion: FusionMethod | None = None,
        ef_search: int | None = None,
        collections: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """`collections`: names or ids to search (None: `default`), as in POST /search."""
        super().__init__(**kwargs)
        self.runtime = runtime
        self.top_k = top_k
        self.filters = filters
        self.fusion = fusion
        self.ef_search = ef_search
        self.collections = None if collections is None else list(collections)
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def _request(self, query: str) -> SearchRequest:
        return SearchRequest(
            query=query,
            top_k=self.top_k,
            search_type=self.search_type,
            filters=self.filters,
            fusion=self.fusion,
            ef_search=self.ef_search,
            collections=self.collections,
        )

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        response = await search(self.runtime, self._request(query_bundle.query_str))
        return [hit_to_node(hit) for hit in response.results]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("inside an event loop use `await retriever.aretrieve(...)`")
        if self._loop is None or not self._loop.is_running():
            raise RuntimeError("sync retrieve needs the Runtime's event loop running in another thread")
        future = asyncio.run_coroutine_threadsafe(self._aretrieve(query_bundle), self._loop)
        return future.result()


class VectorRetriever(_ChunkRetriever):
    """Cosine similarity over the active embedding generation's vectors (HNSW)."""

    search_type: SearchType = "vector"


class BM25Retriever(_ChunkRetriever):
    """BM25 over chunks.search_text (pg_search or the native engine)."""

    search_type: SearchType = "bm25"


class HybridRetriever(_ChunkRetriever):
    """Both legs concurrently, fused (RAG_FUSION by default: convex, or RRF)."""

    search_type: SearchType = "hybrid"
