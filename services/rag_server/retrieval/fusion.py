"""Fusing the ranked lists of the two legs, per chunk or per document. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from rag_server.retrieval.legs import LegHit


@dataclass
class FusedHit:
    chunk_id: int
    score: float
    # leg name -> (1-based rank, leg score)
    legs: dict[str, tuple[int, float]] = field(default_factory=dict)


# A fusion of the two legs' hits, (vector, bm25) -> fused ranking (convex or RRF with their settings).
Fuse = Callable[[Sequence[LegHit], Sequence[LegHit]], list[FusedHit]]


def _leg_positions(legs: Mapping[str, Sequence[LegHit]]) -> dict[int, FusedHit]:
    fused: dict[int, FusedHit] = {}
    for name, hits in legs.items():
        for rank, hit in enumerate(hits, start=1):
            entry = fused.setdefault(hit.chunk_id, FusedHit(hit.chunk_id, 0.0))
            entry.legs.setdefault(name, (rank, hit.score))
    return fused


def _ordered(fused: dict[int, FusedHit]) -> list[FusedHit]:
    return sorted(fused.values(), key=lambda h: (-h.score, h.chunk_id))


def rrf(
    legs: Mapping[str, Sequence[LegHit]], k: int = 60, weights: Mapping[str, float] | None = None
) -> list[FusedHit]:
    """Weighted Reciprocal Rank Fusion: score = sum over legs of weight / (k + rank), rank 1-based."""
    weights = weights or {}
    fused = _leg_positions(legs)
    for hit in fused.values():
        hit.score = sum(weights.get(name, 1.0) / (k + rank) for name, (rank, _) in hit.legs.items())
    return _ordered(fused)


def min_max(scores: Sequence[float]) -> list[float]:
    """Scale to [0, 1] over this candidate list; a list of equal scores all become 1."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def convex(vector: Sequence[LegHit], bm25: Sequence[LegHit], alpha: float = 0.5) -> list[FusedHit]:
    """alpha * minmax(vector) + (1 - alpha) * minmax(bm25); a leg that missed a chunk adds 0."""
    fused = _leg_positions({"vector": vector, "bm25": bm25})
    for hits, weight in ((vector, alpha), (bm25, 1.0 - alpha)):
        for hit, norm in zip(hits, min_max([h.score for h in hits]), strict=True):
            fused[hit.chunk_id].score += weight * norm
    return _ordered(fused)


def fold_leg(hits: Sequence[LegHit], document_of: Mapping[int, UUID]) -> list[tuple[UUID, LegHit]]:
    """One leg's chunk hits (best first) -> its documents, each scored by its best chunk, best first.
    A chunk without a document (deleted since the leg ran) is dropped."""
    seen: set[UUID] = set()
    folded: list[tuple[UUID, LegHit]] = []
    for hit in hits:
        document = document_of.get(hit.chunk_id)
        if document is not None and document not in seen:
            seen.add(document)
            folded.append((document, hit))
    return folded


def fuse_documents(
    vector: Sequence[LegHit],
    bm25: Sequence[LegHit],
    document_of: Mapping[int, UUID],
    fuse: Fuse,
) -> list[FusedHit]:
    """Fusion per document: each leg is folded to documents first (a document's score in a leg is its
    best chunk's), the documents are fused by `fuse` (convex or RRF over the folded legs), and each
    document is shown by its best chunk by the same fusion over the chunks.

    A FusedHit per document, best first: `chunk_id` is that chunk, `score` and `legs` are the
    document's (its rank among the leg's documents, its best chunk's leg score)."""
    folded_vector, folded_bm25 = fold_leg(vector, document_of), fold_leg(bm25, document_of)
    # fuse() keys on integers: number the documents, fuse, then map back.
    numbers: dict[UUID, int] = {}
    for document, _ in (*folded_vector, *folded_bm25):
        numbers.setdefault(document, len(numbers))
    documents = fuse(
        [LegHit(numbers[d], h.score) for d, h in folded_vector],
        [LegHit(numbers[d], h.score) for d, h in folded_bm25],
    )
    shown: dict[UUID, int] = {}
    for hit in fuse(vector, bm25):
        owner = document_of.get(hit.chunk_id)
        if owner is not None:
            shown.setdefault(owner, hit.chunk_id)
    by_number = {n: d for d, n in numbers.items()}
    return [FusedHit(shown[by_number[h.chunk_id]], h.score, h.legs) for h in documents]


def fold_single_leg(hits: Sequence[LegHit], leg: str, document_of: Mapping[int, UUID]) -> list[FusedHit]:
    """One leg alone, one hit per document (its best chunk), documents ranked by that chunk."""
    return [
        FusedHit(hit.chunk_id, hit.score, {leg: (rank, hit.score)})
        for rank, (_, hit) in enumerate(fold_leg(hits, document_of), start=1)
    ]


def collection_alpha(default: float, alphas: Sequence[float | None]) -> float:
    """The convex weight for a search of these collections: the mean of their weights, a collection
    without one counting as `default` (RAG_HYBRID_ALPHA). One collection: its own weight. The mean is
    continuous (a collection tuned a little differently moves the result a little) and is the common
    value when the collections agree."""
    if not alphas:
        return default
    return sum(default if a is None else a for a in alphas) / len(alphas)
