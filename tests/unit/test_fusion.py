"""Fusion arithmetic, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from rag_server.retrieval.fusion import convex, min_max, rrf
from rag_server.retrieval.legs import LegHit


def hits(*pairs: tuple[int, float]) -> list[LegHit]:
    return [LegHit(chunk_id, score) for chunk_id, score in pairs]


def test_rrf_sums_reciprocal_ranks_with_one_based_ranks() -> None:
    vector = hits((1, 0.9), (2, 0.8), (3, 0.7))
    bm25 = hits((3, 12.0), (4, 11.0))
    fused = {h.chunk_id: h for h in rrf({"vector": vector, "bm25": bm25}, k=60)}
    assert fused[3].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)
    assert fused[4].score == pytest.approx(1 / 62)
    assert fused[3].legs == {"vector": (3, 0.7), "bm25": (1, 12.0)}
    assert fused[4].legs == {"bm25": (2, 11.0)}
    assert [h.chunk_id for h in rrf({"vector": vector, "bm25": bm25}, k=60)] == [
        3,
        1,
        2,
        4,
    ]  # 2 and 4 tie at 1/62: lower id first


def test_rrf_weights_scale_each_leg() -> None:
    vector = hits((1, 0.9))
    bm25 = hits((2, 5.0))
    fused = rrf({"vector": vector, "bm25": bm25}, k=10, weights={"vector": 1.0, "bm25": 2.0})
    assert [h.chunk_id for h in fused] == [2, 1]
    assert fused[0].score == pytest.approx(2 / 11)
    assert fused[1].score == pytest.approx(1 / 11)


def test_rrf_ties_break_on_chunk_id() -> None:
    # 7 is first in one leg, 5 first in the other: equal fused scores, lower id first.
    fused = rrf({"vector": hits((7, 0.9)), "bm25": hits((5, 3.0))}, k=60)
    assert [h.chunk_id for h in fused] == [5, 7]
    assert fused[0].score == fused[1].score


def test_min_max_scales_to_unit_interval() -> None:
    assert min_max([10.0, 5.0, 0.0]) == [1.0, 0.5, 0.0]
    assert min_max([3.0, 3.0]) == [1.0, 1.0]
    assert min_max([]) == []


def test_convex_fusion_normalises_each_leg_and_missing_leg_adds_zero() -> None:
    vector = hits((1, 0.9), (2, 0.7), (3, 0.5))
    bm25 = hits((2, 20.0), (4, 10.0), (3, 0.0))
    fused = {h.chunk_id: h for h in convex(vector, bm25, alpha=0.25)}
    assert fused[1].score == pytest.approx(0.25 * 1.0)
    assert fused[2].score == pytest.approx(0.25 * 0.5 + 0.75 * 1.0)
    assert fused[3].score == pytest.approx(0.0)
    assert fused[4].score == pytest.approx(0.75 * 0.5)
    assert [h.chunk_id for h in convex(vector, bm25, alpha=0.25)] == [2, 4, 1, 3]
    assert fused[2].legs == {"vector": (2, 0.7), "bm25": (1, 20.0)}


def test_convex_alpha_one_is_the_vector_ranking() -> None:
    vector = hits((5, 0.9), (6, 0.8), (7, 0.1))
    bm25 = hits((7, 9.0), (8, 1.0))
    assert [h.chunk_id for h in convex(vector, bm25, alpha=1.0)][:3] == [5, 6, 7]


def test_fusion_of_empty_legs_is_empty() -> None:
    assert rrf({"vector": [], "bm25": []}) == []
    assert convex([], []) == []
