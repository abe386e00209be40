"""Fusing the ranked lists of the two legs. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rag_server.retrieval.legs import LegHit


@dataclass
class FusedHit:
    chunk_id: int
    score: float
    # leg name -> (1-based rank, leg score)
    legs: dict[str, tuple[int, float]] = field(default_factory=dict)


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
