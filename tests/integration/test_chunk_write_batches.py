"""A big document's chunks are written in INSERTs of at most INSERT_BATCH_ROWS rows, in the one final
transaction: one statement for 72,969 chunks held ~1.9 GiB in the worker and as much in the backend.
A later generation's vectors (`chunk_vectors`; every vector once generation 1 is finalized) too."""

from __future__ import annotations

import numpy as np
import pytest

from rag_server.generations import store as generations
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import batches, chunks
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.integrity import check_integrity
from rag_server.ingestion.pipeline import incoming_file


def statement_counter(table: str) -> tuple[str, str]:
    """SQL that records the rows of each INSERT statement on `table` in qa_<table>_inserts, and SQL that
    removes it again."""
    return (
        f"""
        CREATE TABLE qa_{table}_inserts (n int NOT NULL);
        CREATE FUNCTION qa_count_{table}_insert() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
            INSERT INTO qa_{table}_inserts SELECT count(*) FROM new_rows;
            RETURN NULL;
        END $$;
        CREATE TRIGGER qa_{table}_inserts AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION qa_count_{table}_insert();
        """,
        f"DROP TRIGGER qa_{table}_inserts ON {table}; DROP FUNCTION qa_count_{table}_insert(); "
        f"DROP TABLE qa_{table}_inserts",
    )


def as_chunks(texts: list[str]) -> list[Chunk]:
    return [
        Chunk(index=i, text=t, search_text=t, page=None, char_start=0, char_end=len(t))
        for i, t in enumerate(texts)
    ]


async def test_a_document_is_written_in_bounded_statements_in_one_transaction(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = await batches.create_upload_batch(runtime.pool, runtime.queue, [incoming_file("big.txt", b"big")])
    document_id = batch.tasks[0].document_id
    assert document_id is not None
    texts = [f"Chunk {i} of a large document about river otters." for i in range(5)]
    written = as_chunks(texts)
    vectors = np.random.default_rng(0).random((5, runtime.settings.embedding_dim), dtype=np.float32)
    monkeypatch.setattr(chunks, "INSERT_BATCH_ROWS", 2, raising=False)
    count_inserts, stop_counting = statement_counter("chunks")
    async with owner_connection(runtime.database_url) as owner:
        await owner.execute(count_inserts)
        try:
            await chunks.write_chunks(runtime.pool, document_id, written, vectors)
            assert [r["n"] for r in await owner.fetch("SELECT n FROM qa_chunks_inserts")] == [2, 2, 1]
            rows = await owner.fetch(
                "SELECT chunk_index, text FROM chunks WHERE document_id = $1 ORDER BY chunk_index",
                document_id,
            )
            assert [(r["chunk_index"], r["text"]) for r in rows] == list(enumerate(texts))
            doc = await owner.fetchrow("SELECT status, chunk_count FROM documents WHERE id = $1", document_id)
            assert doc is not None and (doc["status"], doc["chunk_count"]) == ("ready", 5)
            report = await check_integrity(owner, runtime.settings.queue_name)  # BM25 = a recount
            assert report.violations == [], report.lines()
        finally:
            await owner.execute(stop_counting)


async def test_a_later_generations_vectors_are_written_in_bounded_statements_too(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second live generation (building: its vectors are written when given), 8-d.
    generation = await generations.create_generation(runtime.pool, "local", "qa-second-model", 8, None)
    batch = await batches.create_upload_batch(
        runtime.pool, runtime.queue, [incoming_file("big2.txt", b"big, twice")]
    )
    document_id = batch.tasks[0].document_id
    assert document_id is not None
    texts = [f"Chunk {i} of a large document about sea otters." for i in range(5)]
    written = as_chunks(texts)
    rng = np.random.default_rng(1)
    base = rng.random((5, runtime.settings.embedding_dim), dtype=np.float32)
    second = rng.random((5, 8), dtype=np.float32)
    monkeypatch.setattr(chunks, "INSERT_BATCH_ROWS", 2, raising=False)
    count_inserts, stop_counting = statement_counter("chunk_vectors")
    async with owner_connection(runtime.database_url) as owner:
        await owner.execute(count_inserts)
        try:
            await chunks.write_chunks(runtime.pool, document_id, written, base, {generation.id: second})
            assert [r["n"] for r in await owner.fetch("SELECT n FROM qa_chunk_vectors_inserts")] == [2, 2, 1]
            rows = await owner.fetch(
                """
                SELECT c.chunk_index, v.embedding::text AS embedding
                FROM chunks c LEFT JOIN chunk_vectors v ON v.chunk_id = c.id AND v.generation_id = $2
                WHERE c.document_id = $1 ORDER BY c.chunk_index
                """,
                document_id,
                generation.id,
            )
            assert [r["chunk_index"] for r in rows] == list(range(5))
            stored = [np.array(r["embedding"].strip("[]").split(","), dtype=np.float32) for r in rows]
            for i, vector in enumerate(stored):  # each chunk has its own vector, not a neighbour's
                np.testing.assert_allclose(vector, second[i], rtol=1e-6)
        finally:
            await owner.execute(stop_counting)
