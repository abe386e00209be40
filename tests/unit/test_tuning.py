"""The held-out split and the choice among equal scores of `rag-server eval --tune`."""

from __future__ import annotations

import pytest

from rag_server.evaluation.tuning import best_alpha, split_queries

QUERIES = [(f"q{i}", f"text {i}") for i in range(6)]


def ids(queries: list[tuple[str, str]]) -> list[str]:
    return [qid for qid, _ in queries]


def test_holdout_half_keeps_every_second_query_out() -> None:
    tune, held = split_queries(QUERIES, 0.5)
    assert ids(tune) == ["q0", "q2", "q4"] and ids(held) == ["q1", "q3", "q5"]


def test_holdout_third_and_zero() -> None:
    tune, held = split_queries(QUERIES, 1 / 3)
    assert ids(held) == ["q2", "q5"] and ids(tune) == ["q0", "q1", "q3", "q4"]
    assert split_queries(QUERIES, 0.0) == (QUERIES, [])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_a_holdout_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="--holdout"):
        split_queries(QUERIES, fraction)


def test_best_alpha_prefers_the_top_score_then_the_nearest_to_the_default() -> None:
    assert best_alpha({0.2: 0.6, 0.4: 0.7, 0.9: 0.65}, 0.5) == 0.4
    assert best_alpha({0.3: 0.7, 0.6: 0.7, 0.9: 0.7}, 0.5) == 0.6
    assert best_alpha({0.4: 0.7, 0.6: 0.7}, 0.5) == 0.4  # equally near: the lower
