"""The exact recheck's cost on a product database, with the vectors in the row (migration 0019) and out
of line (the layout before it), on the same rows (reports/hnsw-duplicates.md, 2026-12-05).

    python reports/hnsw/recheck_cost_study.py DATABASE_URL main|external [--rounds 2]

`external` and `main` set the column's storage and rewrite the table (VACUUM FULL) first; the product's
`exact_vector_leg` then runs for 30 random unit queries per round (the scan's cost does not depend on
the query), without a scope and scoped to the largest collection. A study, not product code.
"""

import argparse
import asyncio
import statistics
import time

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from rag_server.retrieval.vector import exact_vector_leg

QUERIES = 30


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("layout", choices=["main", "external"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    conn = await asyncpg.connect(args.url)
    await register_vector(conn)
    t0 = time.perf_counter()
    await conn.execute(f"ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE {args.layout.upper()}")
    await conn.execute("VACUUM FULL ANALYZE chunks")
    rewrite_s = time.perf_counter() - t0
    rows, toasted, heap, toast = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM chunks),"
        " (SELECT count(*) FROM chunks WHERE pg_column_toast_chunk_id(embedding) IS NOT NULL),"
        " pg_relation_size('chunks'), pg_relation_size(reltoastrelid)"
        " FROM pg_class WHERE oid = 'chunks'::regclass"
    )
    collection = await conn.fetchval(
        "SELECT d.collection_id FROM chunks c JOIN documents d ON d.id = c.document_id"
        " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    rng = np.random.default_rng(11)
    queries = rng.standard_normal((QUERIES, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    timings: dict[str, list[float]] = {"all": [], "collection": []}
    for round_ in range(args.rounds + 1):  # round 0 warms the caches
        for scope, collections in (("all", None), ("collection", [collection])):
            for q in queries:
                t = time.perf_counter()
                hits = await exact_vector_leg(conn, q, 10, collections=collections, up_to=10**9)
                if round_:
                    timings[scope].append((time.perf_counter() - t) * 1000)
                assert len(hits) == 10
    await conn.close()
    print(
        f"| {args.layout} | {rows:,} | {toasted:,} | {heap / 2**20:.0f} | {toast / 2**20:.0f} | "
        f"{rewrite_s:.0f} | "
        + " | ".join(
            f"{statistics.median(t):.1f} / {statistics.quantiles(t, n=20)[-1]:.1f}" for t in timings.values()
        )
        + " |"
    )


asyncio.run(main())
