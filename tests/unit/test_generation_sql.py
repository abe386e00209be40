"""The vector leg's statement for a later embedding generation (rag_server.generations): spelled like its
partial expression index (literal id and dimension), the distance alone in ORDER BY, filters after it."""

from __future__ import annotations

from uuid import uuid4

from rag_server.generations.reembed import index_name
from rag_server.retrieval.models import SearchFilters
from rag_server.retrieval.vector import VectorSpace, vector_sql


def test_a_later_generation_reads_chunk_vectors_with_its_index_expression() -> None:
    scope = [uuid4()]
    sql, params = vector_sql(SearchFilters(file_types=["md"]), scope, VectorSpace(7, 64))
    assert "FROM chunk_vectors v JOIN chunks c ON c.id = v.chunk_id" in sql
    assert "ORDER BY (v.embedding::vector(64)) <=> $1\n" in sql
    assert "WHERE v.generation_id = 7 AND c.collection_id = ANY($3::uuid[])" in sql
    assert "lower(d.file_type) = ANY($4::text[])" in sql
    assert params == [scope, ["md"]]
    assert "c.embedding" not in sql


def test_generation_1_and_no_space_are_the_chunks_column() -> None:
    assert vector_sql(None, None, VectorSpace(1, 384)) == vector_sql(None)
    assert "ORDER BY c.embedding <=> $1" in vector_sql(None)[0]
    assert index_name(1) == "chunks_embedding_hnsw_idx" and index_name(7) == "chunk_vectors_g7_hnsw"
