"""The native BM25 statements and their planning: bound parameters, filters inside, exact bounds."""

from __future__ import annotations

import math
from uuid import UUID

import pytest

from rag_server.retrieval import bm25_native
from rag_server.retrieval.bm25_native import (
    QueryTerms,
    essential_size,
    estimated_candidates,
    full_sql,
    maxscore_sql,
    seed_size,
    seed_sql,
    split_cost,
)
from rag_server.retrieval.filters import build_filters
from rag_server.retrieval.models import SearchFilters
from rag_server.retrieval.vector import vector_sql


def term_rows(dfs: dict[str, int], n_docs: int = 1000, total_len: int = 50_000) -> list[dict[str, object]]:
    return [{"term": t, "df": df, "n_docs": n_docs, "total_len": total_len} for t, df in dfs.items()]


def test_statements_take_terms_as_parameters_and_join_nothing_without_filters() -> None:
    for sql in (
        full_sql(build_filters(None, 8)),
        seed_sql(build_filters(None, 9)),
        maxscore_sql(build_filters(None, 9)),
    ):
        assert "unnest($1::text[], $2::float8[], $3::bool[])" in sql
        assert "JOIN chunks" not in sql  # postings alone: no join to score
        assert "LIMIT $7" in sql
    assert "ORDER BY score DESC, chunk_id" in full_sql(build_filters(None, 8))
    assert "HAVING sum(" in maxscore_sql(build_filters(None, 9)) and ">= $8::int8" in maxscore_sql(
        build_filters(None, 9)
    )


def test_filters_join_chunks_and_documents_before_grouping() -> None:
    doc = UUID("00000000-0000-0000-0000-000000000002")
    filters = build_filters(SearchFilters(document_ids=[doc], metadata={"year": 2020}), first_param=9)
    assert filters.params == [[doc], "year", [2020]]
    sql = maxscore_sql(filters)
    assert "JOIN chunks c ON c.id = p.chunk_id" in sql
    assert "c.document_id = ANY($9::uuid[])" in sql
    assert "NULLIF((d.metadata || c.metadata) -> $10::text, 'null'::jsonb) @> ($11::jsonb -> 0)" in sql
    assert sql.index("c.document_id = ANY") < sql.index("GROUP BY")


def test_a_collection_scope_alone_filters_the_postings_without_joining_chunks() -> None:
    scope = [UUID("00000000-0000-0000-0000-000000000003")]
    for sql in (full_sql(build_filters(None, 8, collections=scope)),):
        assert "JOIN chunks" not in sql and "c.collection_id" not in sql
        assert "WHERE t.flag AND p.collection_id = ANY($8::uuid[])" in sql
    sql = seed_sql(build_filters(None, 9, collections=scope))
    assert "JOIN chunks" not in sql and "WHERE t.flag AND p.collection_id = ANY($9::uuid[])" in sql
    sql = maxscore_sql(build_filters(None, 9, collections=scope))
    assert "JOIN chunks" not in sql and "p.collection_id = ANY($9::uuid[])" in sql
    # With another filter the chunks join comes back for it; the scope stays on the postings.
    both = build_filters(SearchFilters(document_ids=scope), 8, collections=scope)
    assert both.params == [scope, scope]
    sql = full_sql(both)
    assert "JOIN chunks c ON c.id = p.chunk_id" in sql
    assert "p.collection_id = ANY($8::uuid[]) AND c.document_id = ANY($9::uuid[])" in sql
    # The vector leg places the same scope on the chunk itself.
    vsql, params = vector_sql(None, scope)
    assert "WHERE c.collection_id = ANY($3::uuid[])" in vsql and "JOIN" not in vsql
    assert params == [scope]


def test_empty_filter_lists_are_kept_and_match_nothing() -> None:
    filters = build_filters(SearchFilters(document_ids=[]), first_param=8)
    assert filters.params == [[]]
    assert "ANY($8::uuid[])" in full_sql(filters)


def test_query_terms_sorted_by_bound_with_a_scale_that_fits_int4() -> None:
    q = QueryTerms.from_rows(term_rows({"common": 900, "rare": 3, "mid": 100}), k1=1.2, b=0.75)
    assert q.terms == ["rare", "mid", "common"]
    assert q.weights == sorted(q.weights, reverse=True)
    assert q.weights[0] == pytest.approx(math.log(1 + (1000 - 3 + 0.5) / 3.5) * 2.2)
    assert q.weights[0] * q.scale <= 2**31 - 1 < 2 * q.weights[0] * q.scale
    assert (q.c0, q.c1) == pytest.approx((1.2 * 0.25, 1.2 * 0.75 * 1000 / 50_000))
    # The bound covers the largest scaled contribution of every remaining term.
    assert q.bound(1) >= sum(round(w * q.scale) for w in q.weights[1:])
    assert q.bound(3) == 0


def test_seed_takes_the_rarest_terms_up_to_its_budget_and_at_least_one() -> None:
    budget = bm25_native.SEED_POSTINGS
    q = QueryTerms.from_rows(term_rows({"a": 10, "b": budget - 10, "c": 5}, n_docs=10 * budget), 1.2, 0.75)
    assert q.terms == ["c", "a", "b"] and seed_size(q) == 2  # b would exceed the budget
    huge = QueryTerms.from_rows(term_rows({"x": 3 * budget, "y": 4 * budget}, n_docs=10 * budget), 1.2, 0.75)
    assert seed_size(huge) == 1


def test_seed_budget_grows_with_the_corpus() -> None:
    budget = bm25_native.SEED_POSTINGS
    dfs = {"a": 10, "b": budget - 10, "c": 5}
    small = QueryTerms.from_rows(term_rows(dfs, n_docs=bm25_native.SEED_CORPUS_SHARE * budget), 1.2, 0.75)
    assert small.n_docs == bm25_native.SEED_CORPUS_SHARE * budget and seed_size(small) == 2
    # Twice the corpus: twice the budget, and b now fits.
    large = QueryTerms.from_rows(term_rows(dfs, n_docs=2 * bm25_native.SEED_CORPUS_SHARE * budget), 1.2, 0.75)
    assert seed_size(large) == 3


def test_essential_prefix_leaves_a_remainder_below_theta_at_the_least_estimated_cost() -> None:
    q = QueryTerms.from_rows(term_rows({"r": 2, "m": 50, "c1": 600, "c2": 700}), 1.2, 0.75)
    high = q.bound(0)  # a theta no remainder can reach: one essential term suffices
    assert essential_size(q, high) == 1
    n = len(q.terms)
    for theta in (q.bound(1), q.bound(2), q.bound(3) + 2, 1):
        size = essential_size(q, theta)
        # Exact: a chunk without an essential term scores below theta (or every term is summed).
        assert size == n or q.bound(size) < theta - 1
        exact = [s for s in range(1, n) if q.bound(s) < theta - 1] + [n]
        assert split_cost(q, size, theta) == min(split_cost(q, s, theta) for s in exact)
    assert essential_size(q, 1) == n  # no remainder is below a theta of 1: the full statement


def test_split_cost_weighs_postings_against_candidate_lookups() -> None:
    # One rare term and three common ones in 10,000 chunks.
    dfs = {"rare": 20, "c1": 3000, "c2": 3500, "c3": 4000}
    q = QueryTerms.from_rows(term_rows(dfs, n_docs=10_000, total_len=500_000), 1.2, 0.75)
    assert split_cost(q, 4, 1) == sum(q.dfs)  # the full statement: every posting, no lookups
    # A threshold of zero keeps every chunk a candidate; a higher one keeps fewer.
    assert estimated_candidates(q, 2, 0) == q.n_docs
    low, high = (estimated_candidates(q, 2, int(f * q.weights[1] * q.scale)) for f in (0.3, 0.9))
    assert q.dfs[1] * 0.5 < low <= q.dfs[0] + q.dfs[1]
    assert high < low / 10
    # A theta just above the common terms' bound: E = the rare term alone, its chunks looked up in
    # three terms, beats summing 10,000 postings.
    assert essential_size(q, q.bound(1) + q.bound(0) // 50) == 1
    # theta = the common terms' bound: E = rare + c1 leaves few candidates, cheaper than both.
    assert essential_size(q, q.bound(1)) == 2
    # A theta just above the last term's bound: only E = the first three is exact, and all of their
    # ~6,500 chunks stay candidates, each looked up: summing the 4,000 more postings is cheaper.
    assert essential_size(q, q.bound(3) + 2) == 4


def test_a_long_query_takes_the_fixed_split_without_the_cost_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pasted text: more terms than the estimate is run for (its cost grows with the square of them).
    dfs = {f"t{i}": 50 + 10 * i for i in range(bm25_native.COSTED_TERMS + 6)}
    q = QueryTerms.from_rows(term_rows(dfs, n_docs=100_000, total_len=5_000_000), 1.2, 0.75)

    def not_called(*_: object) -> float:
        raise AssertionError("the cost estimate ran for a long query")

    monkeypatch.setattr(bm25_native, "split_cost", not_called)
    theta = q.bound(len(q.terms) // 2)
    size = essential_size(q, theta)
    # The shortest prefix whose remainder stays below LONG_QUERY_ALPHA * theta: exact, as before.
    assert q.bound(size) < bm25_native.LONG_QUERY_ALPHA * theta
    assert q.bound(size - 1) >= bm25_native.LONG_QUERY_ALPHA * theta
    # No prefix leaves a small enough remainder: the full statement.
    assert essential_size(q, 1) == len(q.terms)


def test_vector_statement_orders_by_distance_only() -> None:
    sql, params = vector_sql(SearchFilters(file_types=["md"]))
    assert "ORDER BY c.embedding <=> $1\n" in sql
    assert "lower(d.file_type) = ANY($3::text[])" in sql
    assert params == [["md"]]
