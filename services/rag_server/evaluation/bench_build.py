"""The bench database's bulk build: synthetic chunks loaded with the HNSW index and the BM25 insert
trigger set aside, then indexed once, set-based.

Row by row (the ingestion shape: 2,000-chunk INSERTs into a table with its HNSW index and the native
BM25 triggers) every INSERT walks the HNSW graph once per row and upserts every term's df under the
bm25_stats lock; the cost per row grows with the graph. Here, for a bench database only:
- the HNSW index's definition is read from pg_indexes (exactly the migration's), the index dropped,
  and recreated after the load (pgvector's parallel build, the graph in maintenance_work_mem);
- the BM25 insert trigger is disabled and the postings' primary key dropped during the load; then the
  postings are written by the recount of `ingestion/integrity.py` (what bm25_index_add writes for every
  chunk), df and bm25_stats counted from them, the key rebuilt from its own definition and the trigger
  enabled again. `rag-server check` on the result finds nothing (tests/integration/test_bench_build.py).
A failed build leaves no marker: the bench drops and rebuilds that database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
import numpy as np

from rag_server.evaluation.synthetic import insert_synthetic
from rag_server.ingestion.integrity import recount_sql

HNSW_INDEX = "chunks_embedding_hnsw_idx"
POSTINGS_KEY = "bm25_postings_pkey"
BM25_INSERT_TRIGGER = "chunks_bm25_insert"
# Chunks whose postings one statement writes, in chunk order step by step, like ingestion writes them.
# Within a step the rows come out in hash-join order; a step's postings (~5.4kB per chunk) must stay
# well inside the 256MB of heap one visibility-map page covers: an index-only scan pins the VM page of
# each posting's heap block, and postings shuffled across 100k-chunk steps (540MB) cost one extra
# buffer hit per two postings read (31,232 instead of 436 for the 60k postings of 'cell' at 100k chunks).
POSTINGS_STEP = 20_000
# pgvector's build keeps the whole graph in maintenance_work_mem (else it goes on much slower, on
# disk): about 2.2kB per 384-dimension vector with m = 16. Capped so a 1M build stays near 3GB.
HNSW_BYTES_PER_CHUNK = 2_600
MAINTENANCE_MEM_MIN_MB = 64
MAINTENANCE_MEM_MAX_MB = 3_072
PARALLEL_WORKERS = 1  # + the leader: the machine's 2 cores

POSTINGS_SQL = f"""
INSERT INTO bm25_postings (term, chunk_id, tf, doc_len, collection_id)
{recount_sql("WHERE c.id >= $1 AND c.id < $2")}
SELECT toks.term, toks.chunk_id, toks.tf, lens.doc_len, toks.collection_id
FROM toks JOIN lens USING (chunk_id)
"""
TERMS_SQL = "INSERT INTO bm25_terms (term, df) SELECT term, count(*)::int FROM bm25_postings GROUP BY term"
# n_docs counts every chunk (bm25_index_add adds cardinality(ids), empty texts included); the sum of
# all postings' tf is the sum of every chunk's doc_len.
STATS_SQL = """
UPDATE bm25_stats SET n_docs = (SELECT count(*) FROM chunks),
                      total_len = (SELECT coalesce(sum(tf), 0) FROM bm25_postings)
WHERE id = 1
"""


def maintenance_mem_mb(chunks: int) -> int:
    """maintenance_work_mem for an HNSW build over `chunks` vectors (MB)."""
    wanted = chunks * HNSW_BYTES_PER_CHUNK // 2**20
    return max(MAINTENANCE_MEM_MIN_MB, min(MAINTENANCE_MEM_MAX_MB, wanted))


async def _definitions(conn: asyncpg.Connection) -> tuple[str, str | None]:
    """The HNSW index's CREATE INDEX and, on the native engine, the postings key's definition."""
    hnsw = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1", HNSW_INDEX
    )
    if hnsw is None:
        raise RuntimeError(f"no index {HNSW_INDEX}: is the database migrated?")
    key = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1"
        " AND conrelid = to_regclass('bm25_postings')",
        POSTINGS_KEY,
    )
    return hnsw, key


async def _index_bm25(conn: asyncpg.Connection, key_def: str, log: Callable[[str], None]) -> None:
    lo, hi = await conn.fetchrow("SELECT min(id), max(id) FROM chunks")
    for start in range(lo or 0, (hi or -1) + 1, POSTINGS_STEP):
        await conn.execute(POSTINGS_SQL, start, start + POSTINGS_STEP)
        log(f"bm25 postings: chunks up to id {min(start + POSTINGS_STEP - 1, hi)} of {hi}")
    await conn.execute(TERMS_SQL)
    await conn.execute(STATS_SQL)
    log("bm25: primary key of the postings")
    await conn.execute(f"ALTER TABLE bm25_postings ADD CONSTRAINT {POSTINGS_KEY} {key_def}")


async def bulk_load(
    conn: asyncpg.Connection,
    blocks: Iterable[tuple[list[str], np.ndarray]],
    progress: Callable[[int], None],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Load `blocks` of (texts, vectors) into an empty, migrated database as its owner, then index
    them. Returns what the report shows: seconds per phase and the memory settings used."""
    if await conn.fetchval("SELECT count(*) FROM chunks"):
        raise RuntimeError("bulk_load needs an empty chunks table")
    hnsw_def, key_def = await _definitions(conn)
    phases: dict[str, float] = {}
    started = time.perf_counter()
    await conn.execute(f"DROP INDEX {HNSW_INDEX}")
    if key_def is not None:
        await conn.execute(f"ALTER TABLE chunks DISABLE TRIGGER {BM25_INSERT_TRIGGER}")
        await conn.execute(f"ALTER TABLE bm25_postings DROP CONSTRAINT {POSTINGS_KEY}")
    loaded = 0
    for texts, vectors in blocks:
        await insert_synthetic(conn, texts, vectors, progress, first=loaded)
        loaded += len(texts)
    phases["load_s"] = time.perf_counter() - started

    memory_mb = maintenance_mem_mb(loaded)
    await conn.execute(f"SET maintenance_work_mem = '{memory_mb}MB'")
    await conn.execute(f"SET max_parallel_maintenance_workers = {PARALLEL_WORKERS}")
    if key_def is not None:
        started = time.perf_counter()
        await _index_bm25(conn, key_def, log)
        await conn.execute(f"ALTER TABLE chunks ENABLE TRIGGER {BM25_INSERT_TRIGGER}")
        phases["bm25_index_s"] = time.perf_counter() - started
    log(f"hnsw: {hnsw_def} (maintenance_work_mem {memory_mb}MB, {PARALLEL_WORKERS} parallel worker)")
    notices: list[str] = []
    conn.add_log_listener(lambda _c, message: notices.append(str(message)))
    started = time.perf_counter()
    await conn.execute(hnsw_def)
    phases["hnsw_index_s"] = time.perf_counter() - started
    return {
        **{k: round(v, 1) for k, v in phases.items()},
        "method": "bulk (indexes built after the load)",
        "maintenance_work_mem_mb": memory_mb,
        "parallel_maintenance_workers": PARALLEL_WORKERS,
        "hnsw_notices": notices,
    }


SIZES_SQL = """
SELECT pg_table_size('chunks') AS chunks_heap,
       pg_relation_size($1::regclass) AS hnsw_index,
       pg_indexes_size('chunks') - pg_relation_size($1::regclass) AS chunks_other_indexes,
       coalesce(pg_table_size(to_regclass('bm25_postings')), 0) AS bm25_postings_heap,
       coalesce(pg_indexes_size(to_regclass('bm25_postings')), 0) AS bm25_postings_index,
       coalesce(pg_total_relation_size(to_regclass('bm25_terms')), 0) AS bm25_terms,
       coalesce(pg_total_relation_size(to_regclass('bm25_packed')), 0) AS bm25_pack,
       pg_database_size(current_database()) AS database
"""


async def relation_sizes(conn: asyncpg.Connection) -> dict[str, int]:
    """Bytes on disk of what a search reads (heap with TOAST; indexes) and of the whole database."""
    row = await conn.fetchrow(SIZES_SQL, HNSW_INDEX)
    return {k: int(v) for k, v in dict(row).items()}
