"""What a user would otherwise pick, measured on the same documents and embeddings in the same run.

- bm25s: in-memory BM25 (Lucene variant, k1=1.5, b=0.75 defaults) over the BEIR documents
  (title + text), English Snowball stemming (PyStemmer) and English stopwords.
- LlamaIndex PGVectorStore in "hybrid" mode: its own table `data_<table>` in the eval database,
  filled with OUR chunks and OUR stored embeddings (nothing is re-embedded), queried with its
  tsvector ts_rank leg + vector leg. Its hybrid mode concatenates the dense hits and then the
  sparse hits (deduplicated, not fused), so we ask each leg for top_k/2 to keep the list at top_k.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import numpy as np

from rag_server.errors import ConflictError
from rag_server.evaluation.beir import BeirDocument
from rag_server.evaluation.metrics import fold_to_documents
from rag_server.generations.store import active_generation
from rag_server.infra import admin
from rag_server.infra.database import plain_url, sqlalchemy_url, vector_array

PEER_NOTES = {
    "bm25s": "in-memory BM25 (bm25s, Lucene scoring, k1=1.5 b=0.75) over title + text, "
    "English Snowball stemming (PyStemmer) and English stopwords; no chunking.",
    "llamaindex_hybrid": "LlamaIndex PGVectorStore hybrid mode (tsvector ts_rank + HNSW vector, results "
    "concatenated, not fused) on our chunks and our stored embeddings; top_k/2 per leg.",
}

LLAMAINDEX_TABLE = "peer_li"  # PGVectorStore prefixes it: the table is data_peer_li
LLAMAINDEX_MARKER = "eval_peer_llamaindex"
# The peer's package comes with the eval extra only; imported when the peer is built.
LLAMAINDEX_PACKAGE = "llama-index-vector-stores-postgres"

# (ranked BEIR document ids, latency in ms) for one query
PeerResult = tuple[list[str], float]


class Bm25sPeer:
    name = "bm25s"

    def __init__(self, documents: Sequence[BeirDocument]) -> None:
        import bm25s
        import Stemmer

        # bm25s sets its own logger to DEBUG on import; keep the eval output readable.
        logging.getLogger("bm25s").setLevel(logging.WARNING)

        self._bm25s = bm25s
        self._stemmer = Stemmer.Stemmer("english")
        self._ids = [doc.doc_id for doc in documents]
        tokens = bm25s.tokenize(
            [doc.full_text for doc in documents], stopwords="en", stemmer=self._stemmer, show_progress=False
        )
        self._index = bm25s.BM25()
        self._index.index(tokens, show_progress=False)

    def search(self, query: str, top_k: int) -> PeerResult:
        started = time.perf_counter()
        tokens = self._bm25s.tokenize(
            [query], stopwords="en", stemmer=self._stemmer, show_progress=False, allow_empty=True
        )
        k = min(top_k, len(self._ids))
        hits, scores = self._index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        # bm25s fills the list up to k with zero-score documents; those are not matches.
        ranked = [self._ids[int(i)] for i, s in zip(hits[0], scores[0], strict=True) if s > 0]
        return ranked, (time.perf_counter() - started) * 1000


def llamaindex_urls(database_url: str) -> tuple[str, str]:
    """(psycopg2 URL, asyncpg URL) for SQLAlchemy; unix-socket URLs keep their ?host= parameter."""
    return sqlalchemy_url(plain_url(database_url), "psycopg2"), sqlalchemy_url(
        plain_url(database_url), "asyncpg"
    )


class LlamaIndexHybridPeer:
    name = "llamaindex_hybrid"

    def __init__(self, database_url: str, embed_dim: int, ef_search: int) -> None:
        try:
            from llama_index.vector_stores.postgres import PGVectorStore
        except ImportError as exc:
            raise ImportError(
                f"the llamaindex_hybrid peer needs {LLAMAINDEX_PACKAGE} (the eval extra): "
                "pip install -e '.[eval]'"
            ) from exc

        sync_url, async_url = llamaindex_urls(database_url)
        self.store = PGVectorStore.from_params(
            connection_string=sync_url,
            async_connection_string=async_url,
            table_name=LLAMAINDEX_TABLE,
            embed_dim=embed_dim,
            hybrid_search=True,
            text_search_config="english",
            # Same HNSW parameters as our chunks table, so the vector legs are comparable.
            hnsw_kwargs={
                "hnsw_m": 16,
                "hnsw_ef_construction": 64,
                "hnsw_ef_search": ef_search,
                "hnsw_dist_method": "vector_cosine_ops",
            },
        )

    def fill(self, rows: Sequence[tuple[int, str, np.ndarray, str]], progress: Callable[[int], None]) -> None:
        """rows: (chunk id, search_text, embedding, BEIR doc id), added through the store's own API."""
        from llama_index.core.schema import BaseNode, TextNode

        batch = 500
        for start in range(0, len(rows), batch):
            nodes: list[BaseNode] = [
                TextNode(
                    id_=f"chunk-{chunk_id}",
                    text=text,
                    embedding=[float(x) for x in embedding],
                    metadata={"beir_id": beir_id},
                )
                for chunk_id, text, embedding, beir_id in rows[start : start + batch]
            ]
            self.store.add(nodes)
            progress(len(nodes))

    def search(self, query: str, query_embedding: np.ndarray, top_k: int) -> list[str]:
        from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

        per_leg = max(1, top_k // 2)
        result = self.store.query(
            VectorStoreQuery(
                query_embedding=[float(x) for x in query_embedding],
                query_str=query,
                similarity_top_k=per_leg,
                sparse_top_k=per_leg,
                mode=VectorStoreQueryMode.HYBRID,
            )
        )
        nodes = result.nodes or []
        return fold_to_documents([str(node.metadata.get("beir_id")) for node in nodes])[:top_k]

    def close(self) -> None:
        engine: Any = getattr(self.store, "_engine", None)
        if engine is not None:
            engine.dispose()


async def llamaindex_ready(conn: asyncpg.Connection, chunks: int) -> bool:
    marker = await admin.get_meta(conn, LLAMAINDEX_MARKER)
    return isinstance(marker, dict) and marker.get("chunks") == chunks


async def reset_llamaindex(conn: asyncpg.Connection) -> None:
    # An interrupted fill leaves a partial table: never reuse it.
    await admin.delete_meta(conn, LLAMAINDEX_MARKER)
    await conn.execute(f"DROP TABLE IF EXISTS {admin.quote_ident('data_' + LLAMAINDEX_TABLE)}")


async def mark_llamaindex_ready(conn: asyncpg.Connection, chunks: int) -> None:
    await admin.set_meta(conn, LLAMAINDEX_MARKER, {"chunks": chunks, "table": f"data_{LLAMAINDEX_TABLE}"})


async def read_chunks_for_peer(conn: asyncpg.Connection) -> list[tuple[int, str, np.ndarray, str]]:
    """Our chunks and their generation-1 vectors. An eval database is built with one model (its name
    hashes the embedding settings) and never re-embedded, so generation 1 is the model the peer's
    queries are embedded with; a database switched by `reembed` by hand is refused, not mis-measured."""
    active = await active_generation(conn)
    if not active.is_base:
        raise ConflictError(
            f"this eval database searches {active.describe()}; the LlamaIndex peer is filled with"
            " generation 1's vectors: evaluate a fresh database built with that model (--fresh)"
        )
    rows = await conn.fetch(
        """
        SELECT c.id, c.search_text, c.embedding, d.metadata->>'beir_id' AS beir_id
        FROM chunks c JOIN documents d ON d.id = c.document_id
        ORDER BY c.id
        """
    )
    return [(r["id"], r["search_text"], vector_array(r["embedding"]), r["beir_id"]) for r in rows]
