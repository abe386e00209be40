"""Fusion per document (group_by=document) and the collection weight rule, against values worked by hand."""

from __future__ import annotations

from uuid import UUID

import pytest

from rag_server.retrieval.fusion import (
    FusedHit,
    collection_alpha,
    convex,
    fold_leg,
    fold_single_leg,
    fuse_documents,
    rrf,
)
from rag_server.retrieval.legs import LegHit

A, B, C = (UUID(int=n) for n in (1, 2, 3))


def hits(*pairs: tuple[int, float]) -> list[LegHit]:
    return [LegHit(chunk_id, score) for chunk_id, score in pairs]


def halves(vector: list[LegHit], bm25: list[LegHit]) -> list[FusedHit]:
    return convex(vector, bm25, 0.5)


def test_fold_leg_keeps_each_documents_best_chunk_and_drops_unknown_chunks() -> None:
    owners = {1: A, 2: A, 3: B}
    folded = fold_leg(hits((2, 0.9), (3, 0.8), (1, 0.7), (99, 0.6)), owners)
    assert folded == [(A, LegHit(2, 0.9)), (B, LegHit(3, 0.8))]


def test_a_document_strong_in_each_leg_through_different_chunks_wins() -> None:
    # A: chunk 1 is the vector leg's best, chunk 2 the BM25 leg's; B: chunk 3 is second in both.
    owners = {1: A, 2: A, 3: B, 4: C}
    vector = hits((1, 1.0), (3, 0.8), (4, 0.0))
    bm25 = hits((2, 10.0), (3, 8.0), (4, 0.0))
    # Per chunk (min-max, alpha 0.5): 1 -> 0.5, 2 -> 0.5, 3 -> 0.4 + 0.4 = 0.8: B's chunk first.
    assert [h.chunk_id for h in halves(vector, bm25)][:2] == [3, 1]
    # Per document: A -> 0.5 * 1 + 0.5 * 1 = 1.0, B -> 0.8, C -> 0.
    fused = fuse_documents(vector, bm25, owners, halves)
    assert [(h.chunk_id, h.score) for h in fused] == [(1, pytest.approx(1.0)), (3, 0.8), (4, 0.0)]
    # A is shown by chunk 1: chunks 1 and 2 tie at 0.5 per chunk and the lower id comes first.
    assert fused[0].legs == {"vector": (1, 1.0), "bm25": (1, 10.0)}
    assert fused[1].legs == {"vector": (2, 0.8), "bm25": (2, 8.0)}


def test_document_scores_and_shown_chunks_by_hand() -> None:
    owners = {1: A, 2: A, 3: B, 4: C, 5: C}
    vector = hits((2, 0.9), (3, 0.8), (1, 0.7), (4, 0.5))
    bm25 = hits((5, 10.0), (1, 8.0), (3, 4.0))
    # Folded: vector A 0.9, B 0.8, C 0.5 -> 1, 0.75, 0; BM25 C 10, A 8, B 4 -> 1, 2/3, 0.
    # A = 0.5 + 1/3, C = 0 + 0.5, B = 0.375 + 0.
    # Per chunk: 1 -> 0.25 + 1/3 beats 2 -> 0.5 for A; 5 -> 0.5 beats 4 -> 0 for C.
    fused = fuse_documents(vector, bm25, owners, halves)
    assert [h.chunk_id for h in fused] == [1, 5, 3]
    assert [h.score for h in fused] == pytest.approx([0.5 + 1 / 3, 0.5, 0.375])
    assert fused[0].legs == {"vector": (1, 0.9), "bm25": (2, 8.0)}
    assert fused[1].legs == {"vector": (3, 0.5), "bm25": (1, 10.0)}


def test_rrf_per_document_uses_the_documents_ranks() -> None:
    owners = {1: A, 2: A, 3: B}
    vector = hits((1, 0.9), (2, 0.8), (3, 0.7))  # documents: A 1st, B 2nd (chunk 2 folds into A)
    bm25 = hits((3, 5.0), (2, 4.0))  # B 1st, A 2nd

    def by_rank(v: list[LegHit], b: list[LegHit]) -> list[FusedHit]:
        return rrf({"vector": v, "bm25": b}, k=10)

    fused = fuse_documents(vector, bm25, owners, by_rank)
    # Both 1/11 + 1/12: tied, the lower document number (A, seen first) first.
    assert [h.score for h in fused] == pytest.approx([1 / 11 + 1 / 12] * 2)
    assert {h.chunk_id for h in fused} == {2, 3}  # per chunk A's best is 2: 1/12 + 1/12 > 1/11


def test_fold_single_leg_ranks_documents_by_their_best_chunk() -> None:
    owners = {1: A, 2: A, 3: B}
    folded = fold_single_leg(hits((2, 3.0), (1, 2.0), (3, 1.0)), "bm25", owners)
    assert [(h.chunk_id, h.score, h.legs) for h in folded] == [
        (2, 3.0, {"bm25": (1, 3.0)}),
        (3, 1.0, {"bm25": (2, 1.0)}),
    ]


@pytest.mark.parametrize(
    ("alphas", "expected"),
    [([], 0.5), ([None], 0.5), ([0.2], 0.2), ([0.2, None], 0.35), ([0.2, 0.8], 0.5), ([1.0, 1.0], 1.0)],
)
def test_collection_alpha_is_the_mean_with_unset_as_the_default(
    alphas: list[float | None], expected: float
) -> None:
    assert collection_alpha(0.5, alphas) == pytest.approx(expected)
