"""A floor under search results (`min_similarity`): a ranked chunk stays when the query's cosine similarity
with it reaches the floor, or when its `search_text` (the passage with its document's title and headings,
what BM25 reads) holds every word of the query.

Fusion ranks candidates relative to each other (min-max: the best of a list of strangers scores 1), so a
ranking alone cannot say that nothing matches. The cosine can: on SciFact with the default model, relevant
chunks sit at 0.44-0.66 (5th percentile, median) and the best chunk for an everyday question SciFact knows
nothing about at 0.23 (reports/relevance/chat-floor.md). Names and codes ("CG-7") embed far from the text
that holds them, so every word of the query in the chunk (PostgreSQL's `english` configuration, the BM25
leg's analyzer: stems, no stop words) keeps a chunk whatever its cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import numpy as np

from rag_server.retrieval.fusion import FusedHit
from rag_server.retrieval.vector import BASE_GENERATION, VectorSpace

# rag_bm25_text (0025, 0027, 0028): CJK runs as characters and pairs, Latin accents folded, URLs and
# addresses split into words, as BM25 reads it: a query's every word is one a BM25 hit can hold.
EVERY_WORD = (
    "to_tsvector('english', rag_bm25_text(c.search_text)) @@ plainto_tsquery('english', rag_bm25_text($4))"
)


def above_floor_sql(space: VectorSpace) -> str:
    """Parameters: $1 chunk ids, $2 query vector, $3 the floor, $4 the query's text. A later generation's
    id and dimension are literals (integers), as in vector_sql."""
    if space.generation_id == BASE_GENERATION:
        similarity = "1 - (c.embedding <=> $2)"
        join = ""
    else:
        generation, dim = int(space.generation_id), int(space.dim or 0)
        similarity = f"1 - ((v.embedding::vector({dim})) <=> $2)"
        join = f"LEFT JOIN chunk_vectors v ON v.chunk_id = c.id AND v.generation_id = {generation}"
    return f"""
        SELECT c.id FROM chunks c {join}
        WHERE c.id = ANY($1::bigint[]) AND ({similarity} >= $3 OR {EVERY_WORD})
    """


async def above_floor(
    conn: asyncpg.Connection,
    ranked: Sequence[FusedHit],
    embedding: np.ndarray,
    query: str,
    floor: float,
    space: VectorSpace,
) -> list[FusedHit]:
    """The ranked chunks that reach `floor` or hold every word of `query`, in order (`embedding`: the
    query embedded by `space`'s model)."""
    if not ranked:
        return []
    rows = await conn.fetch(
        above_floor_sql(space),
        [h.chunk_id for h in ranked],
        np.asarray(embedding, dtype=np.float32),
        floor,
        query,
    )
    kept = {int(r["id"]) for r in rows}
    return [h for h in ranked if h.chunk_id in kept]
