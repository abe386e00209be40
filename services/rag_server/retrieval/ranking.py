"""The legs' hits as one ranking: a leg alone or two fused (convex or RRF), per chunk or per document
(group_by=document: each leg first holds top_k documents, read deeper when its chunks came from fewer)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

import asyncpg

from rag_server.infra.runtime import Runtime
from rag_server.retrieval.fusion import Fuse, FusedHit, convex, fold_single_leg, fuse_documents, rrf
from rag_server.retrieval.legs import LegHit
from rag_server.retrieval.models import FusionMethod, SearchRequest
from rag_server.retrieval.store import chunk_documents


def fusion_of(runtime: Runtime, method: FusionMethod, alpha: float | None = None) -> Fuse:
    """The configured fusion as a function of the two legs (vector, bm25)."""
    settings = runtime.settings
    if method == "convex":
        weight = settings.hybrid_alpha if alpha is None else alpha
        return lambda vector, bm25: convex(vector, bm25, weight)
    weights = {"vector": settings.hybrid_vector_weight, "bm25": settings.hybrid_bm25_weight}
    return lambda vector, bm25: rrf({"vector": vector, "bm25": bm25}, settings.rrf_k, weights)


def _single_leg(hits: list[LegHit], leg: str) -> list[FusedHit]:
    return [FusedHit(h.chunk_id, h.score, {leg: (place, h.score)}) for place, h in enumerate(hits, 1)]


def is_convex(runtime: Runtime, request: SearchRequest, legs: dict[str, list[LegHit]]) -> bool:
    return len(legs) > 1 and (request.fusion or runtime.settings.fusion) == "convex"


# The most chunks a leg reads to find top_k documents (group_by=document); HNSW's ef_search bound too.
DOCUMENT_DEPTH_MAX = 1000
DOCUMENT_DEPTH_GROWTH = 4
# Reads past the documents a leg holds, once it is that deep and still short (each at DOCUMENT_DEPTH_MAX).
DOCUMENT_EXCLUSION_READS = 3

# A leg again: (leg, chunks, documents left out).
ReadLeg = Callable[[str, int, Sequence[UUID]], Awaitable[list[LegHit]]]


def _chunk_ids(legs: dict[str, list[LegHit]]) -> list[int]:
    return list({h.chunk_id for hits in legs.values() for h in hits})


def _documents(hits: list[LegHit], document_of: dict[int, UUID]) -> set[UUID]:
    return {document_of[h.chunk_id] for h in hits if h.chunk_id in document_of}


async def fill_documents(
    conn: asyncpg.Connection,
    legs: dict[str, list[LegHit]],
    depth: int,
    top_k: int,
    read_leg: ReadLeg,
    holds_more: Callable[[int], Awaitable[bool]],
) -> dict[int, UUID]:
    """Each hit's document, once every leg holds `top_k` documents or all it can give. A leg's `depth`
    chunks may come from a few documents (long ones: every chunk near the query): a leg that came back
    full (more chunks may match) with fewer than `top_k` documents runs again, deeper, up to
    DOCUMENT_DEPTH_MAX chunks; still short there (a book whose every chunk is nearer than any other
    document), it reads on past the documents it holds (their best chunks are in it already: all a
    document's score needs), unless the scope holds no other (`holds_more(n)`: more than n documents?
    A few long books fill any depth). `legs` is updated in place, best first."""
    document_of = await chunk_documents(conn, _chunk_ids(legs))
    exhausted = {leg for leg, hits in legs.items() if len(hits) < depth}

    def short() -> list[str]:
        return [
            leg
            for leg, hits in legs.items()
            if leg not in exhausted and len(_documents(hits, document_of)) < top_k
        ]

    while depth < DOCUMENT_DEPTH_MAX and (deepened := short()):
        depth = min(depth * DOCUMENT_DEPTH_GROWTH, DOCUMENT_DEPTH_MAX)
        for leg in deepened:
            legs[leg] = await read_leg(leg, depth, ())
            if len(legs[leg]) < depth:
                exhausted.add(leg)
        document_of = await chunk_documents(conn, _chunk_ids(legs))
    for _ in range(DOCUMENT_EXCLUSION_READS):
        if not (widened := short()):
            break
        for leg in widened:
            held = sorted(_documents(legs[leg], document_of))
            if not await holds_more(len(held)):  # a few long documents: no other to read
                exhausted.add(leg)
                continue
            more = await read_leg(leg, depth, held)
            if len(more) < depth:
                exhausted.add(leg)
            # Only other documents' chunks: none of them was in the leg. Best first again (HNSW's
            # order is approximate across the two reads).
            legs[leg] = sorted(legs[leg] + more, key=lambda h: (-h.score, h.chunk_id))
        document_of = await chunk_documents(conn, _chunk_ids(legs))
    return document_of


def rank(
    runtime: Runtime,
    request: SearchRequest,
    legs: dict[str, list[LegHit]],
    timings: dict[str, float],
    alpha: float | None,
    document_of: dict[int, UUID],
) -> list[FusedHit]:
    """The legs' hits as one ranking: a leg alone or fused, per chunk or per document (group_by;
    `document_of`: each hit's document, from fill_documents)."""
    if len(legs) == 1:
        leg, hits = next(iter(legs.items()))
        if request.group_by == "document":
            return fold_single_leg(hits, leg, document_of)
        return _single_leg(hits, leg)
    method = request.fusion or runtime.settings.fusion
    fuse_start = time.perf_counter()
    fused = fusion_of(runtime, method, alpha)
    if request.group_by == "document":
        ranked = fuse_documents(legs["vector"], legs["bm25"], document_of, fused)
    else:
        ranked = fused(legs["vector"], legs["bm25"])
    timings["fuse"] = round((time.perf_counter() - fuse_start) * 1000, 3)
    return ranked
