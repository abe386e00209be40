"""Migration 0019: vectors stay in their row (storage MAIN), so an exact scan reads no TOAST. Rows
written before it are rewritten while the table is within the recheck's bound, and left (with a log
line) beyond it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from rag_server.config import Settings
from rag_server.infra.migrations import MIGRATIONS_DIR, alembic_config
from tests.conftest import create_database

# A chunk's text as the product stores it (~128 tokens), twice (text and search_text) with the vector: past
# PostgreSQL's ~2 kB TOAST threshold, and shorter than the vector, which is then the value moved out first
# under the type's storage. Random letters do not compress.
TEXT = "".join(np.random.default_rng(3).choice(list("abcdefghijklmnopqrstuvwxyz "), 700))


def vector_literal(dim: int, seed: int) -> str:
    values = np.random.default_rng(seed).standard_normal(dim)
    return "[" + ",".join(f"{v:.6f}" for v in values / np.linalg.norm(values)) + "]"


def revision_of_0019() -> tuple[str, str]:
    [script] = [
        s for s in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions() if s.revision.endswith("_in_row")
    ]
    assert isinstance(script.down_revision, str)
    return script.revision, script.down_revision


async def write_rows(conn: asyncpg.Connection, count: int) -> None:
    """`count` chunks of `TEXT`, and a 768-d vector of a later generation for each."""
    doc_id = await conn.fetchval(
        "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status, chunk_count)"
        " VALUES ('a.txt', 'txt', 'text/plain', 1, md5(random()::text) || md5(random()::text), 'ready', $1)"
        " RETURNING id",
        count,
    )
    await conn.execute(
        "INSERT INTO embedding_generations (id, provider, model, dim, state)"
        " VALUES (2, 'local', 'm', 768, 'building') ON CONFLICT (id) DO NOTHING"
    )
    start = int(await conn.fetchval("SELECT count(*) FROM chunks"))
    for i in range(start, start + count):
        chunk_id = await conn.fetchval(
            "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding)"
            " VALUES ($1, $2, $3, $3, $4::vector) RETURNING id",
            doc_id,
            i,
            TEXT,
            vector_literal(384, i),
        )
        await conn.execute(
            "INSERT INTO chunk_vectors (chunk_id, generation_id, embedding) VALUES ($1, 2, $2::vector)",
            chunk_id,
            vector_literal(768, 1000 + i),
        )


async def layout(conn: asyncpg.Connection) -> dict[str, object]:
    """Per table: the column's storage and how many of its vectors sit in the TOAST table."""
    out: dict[str, object] = {}
    for table in ("chunks", "chunk_vectors"):
        out[table] = (
            await conn.fetchval(
                "SELECT attstorage::text FROM pg_attribute"
                " WHERE attrelid = $1::regclass AND attname = 'embedding'",
                table,
            ),
            await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE pg_column_toast_chunk_id(embedding) IS NOT NULL"
            ),
        )
    return out


async def nearest(conn: asyncpg.Connection) -> int:
    """The HNSW index's nearest chunk to chunk 0's vector (the index survives the rewrite)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        return int(
            await conn.fetchval(
                "SELECT chunk_index FROM chunks ORDER BY embedding <=> $1::vector LIMIT 1",
                vector_literal(384, 0),
            )
        )


async def test_rows_written_before_are_rewritten_with_their_vectors_in_the_row(
    pg_server: str, tmp_path: Path
) -> None:
    url = await create_database(pg_server, "inrow")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    revision, down_revision = revision_of_0019()
    await asyncio.to_thread(command.upgrade, cfg, down_revision)
    conn = await asyncpg.connect(url)
    try:
        await write_rows(conn, 3)
        assert await layout(conn) == {"chunks": ("e", 3), "chunk_vectors": ("e", 3)}

        await asyncio.to_thread(command.upgrade, cfg, revision)
        assert await layout(conn) == {"chunks": ("m", 0), "chunk_vectors": ("m", 0)}
        assert await conn.fetchval("SELECT count(*) FROM chunks WHERE text = $1", TEXT) == 3
        assert await nearest(conn) == 0
        assert not await conn.fetchval("SELECT bool_or(indisclustered) FROM pg_index")

        await write_rows(conn, 2)  # rows written after it
        assert await layout(conn) == {"chunks": ("m", 0), "chunk_vectors": ("m", 0)}

        await asyncio.to_thread(command.downgrade, cfg, down_revision)
        assert await layout(conn) == {"chunks": ("e", 0), "chunk_vectors": ("e", 0)}
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()


async def test_a_table_past_the_bound_keeps_its_rows_and_says_how_to_rewrite_them(
    pg_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await create_database(pg_server, "inrowbig")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path, vector_recheck_max_chunks=2))
    revision, down_revision = revision_of_0019()
    await asyncio.to_thread(command.upgrade, cfg, down_revision)
    conn = await asyncpg.connect(url)
    try:
        await write_rows(conn, 3)
        with caplog.at_level(logging.WARNING):
            await asyncio.to_thread(command.upgrade, cfg, revision)
        assert await layout(conn) == {"chunks": ("m", 3), "chunk_vectors": ("m", 3)}
        assert "VACUUM FULL chunks" in caplog.text and "VACUUM FULL chunk_vectors" in caplog.text

        await conn.execute("VACUUM FULL chunks")  # what docs/operations.md tells the operator
        assert await layout(conn) == {"chunks": ("m", 0), "chunk_vectors": ("m", 3)}
        assert await nearest(conn) == 0
    finally:
        await conn.close()
