"""Scoring on tiny cases computed by hand (log2 discounts written out)."""

from __future__ import annotations

import math

import pytest

from rag_server.evaluation.metrics import (
    evaluate,
    fold_to_documents,
    latency_summary,
    mrr_at_k,
    ndcg_at_k,
    percentiles,
    recall_at_k,
)


def test_perfect_ranking_scores_one() -> None:
    judged = {"a": 2, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], judged, 10) == pytest.approx(1.0)
    assert recall_at_k(["a", "b"], judged, 10) == 1.0
    assert mrr_at_k(["a", "b"], judged, 10) == 1.0


def test_graded_gains_are_linear() -> None:
    judged = {"a": 2, "b": 1}
    # Swapped order: DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3).
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], judged, 10) == pytest.approx(expected)
    # 0.8597 with linear gains; exponential gains (2^g - 1) would give 0.7967.
    assert expected == pytest.approx(0.8597, abs=1e-4)


def test_relevant_document_at_rank_three() -> None:
    judged = {"r": 1}
    ranking = ["x", "y", "r"]
    assert ndcg_at_k(ranking, judged, 10) == pytest.approx(1 / math.log2(4))  # 0.5
    assert mrr_at_k(ranking, judged, 10) == pytest.approx(1 / 3)
    assert ndcg_at_k(ranking, judged, 2) == 0.0
    assert mrr_at_k(ranking, judged, 2) == 0.0


def test_recall_cut_and_partial() -> None:
    judged = {"a": 1, "b": 1, "c": 1, "d": 1}
    ranking = ["a", "x", "b"] + [f"n{i}" for i in range(97)] + ["c"]
    assert recall_at_k(ranking, judged, 10) == pytest.approx(0.5)
    assert recall_at_k(ranking, judged, 100) == pytest.approx(0.5)  # "c" is at rank 101
    assert recall_at_k(ranking, judged, 101) == pytest.approx(0.75)


def test_grade_zero_is_not_relevant() -> None:
    judged = {"a": 0, "b": 1}
    assert recall_at_k(["a"], judged, 10) == 0.0
    assert mrr_at_k(["a", "b"], judged, 10) == pytest.approx(0.5)
    assert ndcg_at_k(["a", "b"], judged, 10) == pytest.approx(1 / math.log2(3))


def test_evaluate_averages_and_handles_missing() -> None:
    qrels = {
        "q1": {"a": 1},  # found at rank 1
        "q2": {"b": 1},  # not in the run at all: counts as 0
        "q3": {"c": 0},  # no relevant document: not averaged
    }
    run = {"q1": ["a", "z"], "q3": ["c"], "q_unjudged": ["a"]}
    scores = evaluate(run, qrels)
    assert set(scores) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert scores["ndcg@10"] == pytest.approx(0.5)
    assert scores["recall@100"] == pytest.approx(0.5)
    assert scores["mrr@10"] == pytest.approx(0.5)


def test_evaluate_counts_a_duplicate_once() -> None:
    qrels = {"q": {"a": 1, "b": 1}}
    # "a" twice must not fill the second slot with a second gain.
    run = {"q": ["a", "a", "b"]}
    ideal = 1 + 1 / math.log2(3)
    assert evaluate(run, qrels)["ndcg@10"] == pytest.approx(ideal / ideal)


def test_evaluate_without_relevant_documents_fails() -> None:
    with pytest.raises(ValueError, match="no query"):
        evaluate({"q": ["a"]}, {"q": {"a": 0}})


def test_fold_keeps_best_chunk_position() -> None:
    assert fold_to_documents(["d2", "d1", "d2", "d3", "d1"]) == ["d2", "d1", "d3"]


def test_latency_percentiles() -> None:
    samples = [float(v) for v in range(1, 101)]
    assert latency_summary(samples) == {"p50": 50.5, "p95": 95.05}
    assert percentiles(samples)["p99"] == pytest.approx(99.01)
    assert latency_summary([]) == {"p50": 0.0, "p95": 0.0}
