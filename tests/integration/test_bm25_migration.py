"""Migrations of the native BM25 engine on the embedded database: the pg_search 0.26 one changes
nothing; 0016 starts the pack's count of deleted chunks at a bound that never misses one; 0023 removes
a deleted chunk's postings by its id."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.script import ScriptDirectory

from rag_server.config import Settings
from rag_server.infra.migrations import MIGRATIONS_DIR, alembic_config
from rag_server.ingestion.integrity import check_integrity
from tests.conftest import create_database


async def schema_snapshot(url: str) -> dict[str, Any]:
    """Indexes, triggers and functions of the public schema, the recorded engine, the BM25 rows."""
    conn = await asyncpg.connect(url)
    try:
        return {
            "indexes": await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
            ),
            "triggers": await conn.fetch(
                "SELECT tgname, tgfoid::regproc::text FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
            ),
            "functions": await conn.fetch(
                "SELECT p.oid::regprocedure::text, md5(p.prosrc) FROM pg_proc p"
                " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1"
            ),
            "engine": await conn.fetchval("SELECT value #>> '{}' FROM app_meta WHERE key = 'bm25_engine'"),
            "postings": await conn.fetchval("SELECT count(*) FROM bm25_postings"),
            "stats": await conn.fetchrow("SELECT n_docs, total_len FROM bm25_stats"),
        }
    finally:
        await conn.close()


async def test_paradedb_026_migration_is_a_no_op_on_the_native_engine(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server, "pdb026")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    # By name, not number: the number changes when migrations merge.
    scripts = ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()
    [script] = [s for s in scripts if s.revision.endswith("_paradedb_026")]
    assert isinstance(script.down_revision, str)
    await asyncio.to_thread(command.upgrade, cfg, script.down_revision)
    conn = await asyncpg.connect(url)
    try:
        doc_id = await conn.fetchval(
            "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
            " chunk_count) VALUES ('a.txt', 'txt', 'text/plain', 1, $1, 'ready', 1) RETURNING id",
            "b" * 64,
        )
        await conn.execute(
            "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding)"
            " VALUES ($1, 0, 'zebrafish hearts', 'zebrafish hearts', $2::vector)",
            doc_id,
            "[" + ",".join(["0.1"] * 384) + "]",
        )
    finally:
        await conn.close()
    before = await schema_snapshot(url)
    assert before["engine"] == "native" and before["postings"] == 2
    assert "chunks_bm25_idx" not in {r["indexname"] for r in before["indexes"]}

    await asyncio.to_thread(command.upgrade, cfg, script.revision)
    assert await schema_snapshot(url) == before
    await asyncio.to_thread(command.downgrade, cfg, script.down_revision)
    assert await schema_snapshot(url) == before
    await asyncio.to_thread(command.upgrade, cfg, "head")


async def test_the_deleted_count_of_a_pack_made_before_it_never_misses_a_deletion(
    pg_server: str, tmp_path: Path
) -> None:
    """A search skips checking packed chunks while the count is 0: the migration's first value is the
    packed chunks no longer live at or below the watermark plus the unpacked ones, 0 only when none
    went. Down and up again keep the schema's triggers and functions."""
    url = await create_database(pg_server, "pack0016")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    [script] = [
        s
        for s in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()
        if s.revision.endswith("_pack_deleted")
    ]
    assert isinstance(script.down_revision, str)
    await asyncio.to_thread(command.upgrade, cfg, script.down_revision)
    conn = await asyncpg.connect(url)

    async def pack_by_hand() -> None:
        """The pack's row as the code before 0016 wrote it (its entries do not matter here)."""
        await conn.execute(
            "INSERT INTO bm25_pack (id, watermark, chunks, postings, seconds)"
            " SELECT 1, max(id), count(*), 0, 0 FROM chunks"
            " ON CONFLICT (id) DO UPDATE SET watermark = EXCLUDED.watermark, chunks = EXCLUDED.chunks"
        )
        await conn.execute("DELETE FROM bm25_unpacked")

    async def deleted_after_upgrade() -> int:
        await asyncio.to_thread(command.upgrade, cfg, script.revision)
        count = int(await conn.fetchval("SELECT deleted FROM bm25_pack"))
        await asyncio.to_thread(command.downgrade, cfg, script.down_revision)
        return count

    try:
        doc_id = await conn.fetchval(
            "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
            " chunk_count) VALUES ('a.txt', 'txt', 'text/plain', 1, $1, 'ready', 6) RETURNING id",
            "c" * 64,
        )
        ids = [
            await conn.fetchval(
                "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding)"
                " VALUES ($1, $2, 'zebrafish hearts', 'zebrafish hearts', $3::vector) RETURNING id",
                doc_id,
                i,
                "[" + ",".join(["0.1"] * 384) + "]",
            )
            for i in range(6)
        ]
        await pack_by_hand()
        before = await schema_snapshot(url)
        assert await deleted_after_upgrade() == 0
        assert await schema_snapshot(url) == before
        await conn.execute("DELETE FROM chunks WHERE id = ANY($1::bigint[])", ids[:2])
        assert await deleted_after_upgrade() == 2
        await pack_by_hand()
        await conn.execute("UPDATE chunks SET search_text = 'rewritten' WHERE id = $1", ids[2])
        await conn.execute("DELETE FROM chunks WHERE id = $1", ids[3])
        assert await deleted_after_upgrade() == 2  # one deleted, one rewritten: a bound, never below

        # An older process deletes a packed chunk while the migration runs: the migration waits for it
        # and counts it (else neither its first count nor the trigger, created after, would).
        await pack_by_hand()
        async with conn.transaction():
            await conn.execute("DELETE FROM chunks WHERE id = $1", ids[4])
            migrating = asyncio.create_task(asyncio.to_thread(command.upgrade, cfg, script.revision))
            await asyncio.sleep(1.0)
            assert not migrating.done()
        await migrating
        assert await conn.fetchval("SELECT deleted FROM bm25_pack") == 1
    finally:
        await conn.close()
    await asyncio.to_thread(command.upgrade, cfg, "head")


async def test_0023_removes_a_deleted_chunks_postings_by_its_id(pg_server: str, tmp_path: Path) -> None:
    """0023: a deleted chunk's postings go by its id, also one its text no longer yields (0002 removed
    only the lexemes it recomputed: such a posting stayed, and its df); the check then finds nothing.
    Down restores 0002's function and drops the index."""
    url = await create_database(pg_server, "remove0023")
    settings = Settings(database_url=url, data_dir=tmp_path)
    cfg = alembic_config(url, settings)
    [script] = [
        s
        for s in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()
        if s.revision.endswith("_bm25_remove_by_chunk")
    ]
    assert isinstance(script.down_revision, str)
    await asyncio.to_thread(command.upgrade, cfg, script.down_revision)
    before = await schema_snapshot(url)
    conn = await asyncpg.connect(url)
    try:
        docs = {}
        for name, texts in (("a.txt", ["zebrafish hearts", "zebrafish fins"]), ("b.txt", ["coral reefs"])):
            docs[name] = await conn.fetchval(
                "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
                " chunk_count) VALUES ($1, 'txt', 'text/plain', 1, md5($1) || md5($1), 'ready', $2)"
                " RETURNING id",
                name,
                len(texts),
            )
            await conn.execute(
                "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding)"
                " SELECT $1, i - 1, t, t, $3::vector FROM unnest($2::text[]) WITH ORDINALITY AS u (t, i)",
                docs[name],
                texts,
                "[" + ",".join(["0.1"] * 384) + "]",
            )
        # A posting of another tokenisation of a.txt's first chunk (unstemmed: an older dictionary, say).
        await conn.execute(
            "INSERT INTO bm25_postings (term, chunk_id, tf, doc_len, collection_id)"
            " SELECT 'hearts', id, 1, 2, collection_id FROM chunks"
            " WHERE document_id = $1 AND chunk_index = 0",
            docs["a.txt"],
        )
        await conn.execute("INSERT INTO bm25_terms (term, df) VALUES ('hearts', 1)")

        await asyncio.to_thread(command.upgrade, cfg, script.revision)
        assert "bm25_postings_chunk_idx" in {r["indexname"] for r in (await schema_snapshot(url))["indexes"]}
        # The index serves the removal's statement, and no statement without its predicate (a search's:
        # the planner took it for bm25_native's term lookups, 8.0 -> 13.1 ms). Seq scans off: what the
        # index can serve, not what a table this small is cheapest by.
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            removal = "EXPLAIN DELETE FROM bm25_postings p WHERE p.chunk_id = ANY ($1) AND p.tf > 0"
            lookup = "EXPLAIN SELECT tf FROM bm25_postings WHERE chunk_id = ANY ($1) AND term = 'coral'"
            assert "bm25_postings_chunk_idx" in "\n".join(r[0] for r in await conn.fetch(removal, [1, 2]))
            assert "bm25_postings_chunk_idx" not in "\n".join(r[0] for r in await conn.fetch(lookup, [1, 2]))
        await conn.execute("DELETE FROM documents WHERE id = $1", docs["a.txt"])
        assert await conn.fetch("SELECT term, tf FROM bm25_postings ORDER BY term") == [
            ("coral", 1),
            ("reef", 1),
        ]
        assert await conn.fetch("SELECT term, df FROM bm25_terms ORDER BY term") == [
            ("coral", 1),
            ("reef", 1),
        ]
        assert tuple(await conn.fetchrow("SELECT n_docs, total_len FROM bm25_stats")) == (1, 2)
        # The check's recount is this code's: it reads the head's schema (0025's rag_bm25_text).
        await asyncio.to_thread(command.upgrade, cfg, "head")
        report = await check_integrity(conn, settings.queue_name, quiescent=True)
        assert report.ok, report.lines()

        await asyncio.to_thread(command.downgrade, cfg, script.down_revision)
        after = await schema_snapshot(url)
        assert (after["indexes"], after["functions"]) == (before["indexes"], before["functions"])
    finally:
        await conn.close()
    await asyncio.to_thread(command.upgrade, cfg, "head")
