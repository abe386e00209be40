"""The bench database's bulk build (evaluation/bench_build.py) leaves the database a migration and the
chunk write would have: the HNSW index and the postings' key exactly as defined, the BM25 insert trigger
on, and the native BM25 tables equal to `rag-server check`'s recount."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag_server.config import Settings
from rag_server.evaluation import bench_build, bench_search, synthetic
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.bench_search import prepare_bench_database
from rag_server.infra import admin
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.integrity import check_integrity
from tests.integration.test_eval import make_dataset

SCALE = 2_000

DEFINITIONS = """
SELECT (SELECT indexdef FROM pg_indexes WHERE indexname = 'chunks_embedding_hnsw_idx') AS hnsw,
       (SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'bm25_postings_pkey') AS key,
       (SELECT tgenabled FROM pg_trigger WHERE tgname = 'chunks_bm25_insert') AS trigger
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("beir") / "tiny")


async def test_bulk_build_matches_migration_and_recount(
    dataset: Path, settings: Settings, runtime: Runtime, pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Steps and blocks smaller than the scale, so the build crosses their boundaries as 1M chunks do.
    monkeypatch.setattr(bench_build, "POSTINGS_STEP", 700)
    monkeypatch.setattr(bench_search, "SYNTHESIS_BLOCK", 900)
    url, seconds = await prepare_bench_database(settings, load_beir(dataset), SCALE)
    assert seconds > 0

    # `runtime`'s database: migrated, never bulk-built; the definitions to match.
    async with owner_connection(runtime.database_url) as fresh:
        migrated = dict(await fresh.fetchrow(DEFINITIONS))
    assert migrated["hnsw"] and migrated["key"] and migrated["trigger"] == b"O"

    async with owner_connection(url) as conn:
        assert dict(await conn.fetchrow(DEFINITIONS)) == migrated
        assert await conn.fetchval("SELECT count(*) FROM chunks") == SCALE
        assert await conn.fetchval("SELECT n_docs FROM bm25_stats") == SCALE
        report = await check_integrity(conn, settings.queue_name, quiescent=True)
        assert report.violations == []
        assert not any("BM25" in s for s in report.skipped)
        build = await synthetic.build_info(conn)
        assert build is not None and build["method"].startswith("bulk")
        assert build["maintenance_work_mem_mb"] == bench_build.maintenance_mem_mb(SCALE)
        sizes = await bench_build.relation_sizes(conn)
        assert all(sizes[k] > 0 for k in ("chunks_heap", "hnsw_index", "bm25_postings_index", "database"))

        # The trigger is back: a later chunk write is indexed like any other.
        pool_vectors = np.random.default_rng(1).normal(size=(1, settings.embedding_dim)).astype(np.float32)
        texts, vectors = synthetic.synthesize(
            ["Fresh words about glaciers. And their moraines."], pool_vectors, 10
        )
        await synthetic.insert_synthetic(conn, texts, vectors, first=SCALE)
        assert await conn.fetchval("SELECT n_docs FROM bm25_stats") == SCALE + 10
        assert await conn.fetchval("SELECT df FROM bm25_terms WHERE term = 'morain'") == 10
        assert (await check_integrity(conn, settings.queue_name, quiescent=True)).violations == []
        # A plan that reads the vectors through the rebuilt HNSW index.
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetch(
            "EXPLAIN SELECT id FROM chunks"
            " ORDER BY embedding <=> (SELECT embedding FROM chunks LIMIT 1) LIMIT 5"
        )
        assert "chunks_embedding_hnsw_idx" in " ".join(row[0] for row in plan)

    # A complete build is reused, not rebuilt.
    assert await prepare_bench_database(settings, load_beir(dataset), SCALE) == (url, 0.0)
    assert len(await admin.list_databases(pg_server, f"bench_search_{SCALE}_")) == 1
