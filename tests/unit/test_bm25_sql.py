"""The native BM25 statement: parameters bound in a fixed layout, filters inside the query."""

from __future__ import annotations

from uuid import UUID

from rag_server.retrieval.bm25 import bm25_statement
from rag_server.retrieval.models import SearchFilters
from rag_server.retrieval.vector import vector_sql


def test_native_statement_binds_query_limit_and_parameters() -> None:
    sql, params = bm25_statement("native", "'; DROP TABLE chunks; --", 10, k1=1.5, b=0.5)
    assert params == ["'; DROP TABLE chunks; --", 10, 1.5, 0.5]
    assert "to_tsvector('english', $1::text)" in sql
    assert "ORDER BY score DESC, p.chunk_id" in sql
    assert "DROP" not in sql
    assert "JOIN chunks" not in sql  # no filters: postings alone, no join


def test_native_filters_join_chunks_and_documents_before_limit() -> None:
    doc = UUID("00000000-0000-0000-0000-000000000002")
    filters = SearchFilters(document_ids=[doc], metadata={"year": 2020})
    sql, params = bm25_statement("native", "q", 3, filters)
    assert params[4:] == [[doc], {"year": 2020}]
    assert "JOIN chunks c ON c.id = p.chunk_id" in sql
    assert "c.document_id = ANY($5::uuid[])" in sql
    assert "@> $6::jsonb" in sql
    assert sql.index("WHERE c.document_id") < sql.index("GROUP BY")


def test_empty_filter_lists_are_kept_and_match_nothing() -> None:
    sql, params = bm25_statement("native", "q", 3, SearchFilters(document_ids=[]))
    assert params[4] == []
    assert "ANY($5::uuid[])" in sql


def test_vector_statement_orders_by_distance_only() -> None:
    sql, params = vector_sql(SearchFilters(file_types=["md"]))
    assert "ORDER BY c.embedding <=> $1\n" in sql
    assert "lower(d.file_type) = ANY($3::text[])" in sql
    assert params == [["md"]]
