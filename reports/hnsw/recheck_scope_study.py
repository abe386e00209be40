"""The exact recheck bounded by the searched scope instead of the whole table (reports/hnsw-duplicates.md,
2026-12-05, "per scope"): its cost per scope size on a product database past the bound.

    python reports/hnsw/recheck_scope_study.py DATABASE_URL [--bound 50000]

Moves the chunks of whole documents into two new collections (about 2,000 and 20,000 chunks; the rest
stay where they were), then times the product's `exact_vector_leg` scoped to each collection and to one
document, 30 random unit queries per round after a warm-up round, before and after a VACUUM (rows just
written are not yet all-visible, so the bounded count reads the heap). Prints the plan of the smallest
scope's statement. Moves the chunks back at the end. A study, not product code.
"""

import argparse
import asyncio
import statistics
import time
from uuid import UUID

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from rag_server.retrieval.models import SearchFilters
from rag_server.retrieval.vector import exact_vector_leg, vector_sql

QUERIES = 30
SIZES = {"small": 2_000, "medium": 20_000}

MOVE = """
WITH d AS (UPDATE documents SET collection_id = $1 WHERE id = ANY($2::uuid[]))
UPDATE chunks SET collection_id = $1 WHERE document_id = ANY($2::uuid[])
"""


async def move_documents(conn: asyncpg.Connection, source: UUID, chunks: int, name: str) -> UUID:
    """A new collection holding whole documents of `source`, about `chunks` chunks in all."""
    rows = await conn.fetch(
        "SELECT document_id, count(*) AS n FROM chunks WHERE collection_id = $1 GROUP BY 1 ORDER BY 1", source
    )
    picked, total = [], 0
    for r in rows:
        if total >= chunks:
            break
        picked.append(r["document_id"])
        total += r["n"]
    collection = await conn.fetchval("INSERT INTO collections (name) VALUES ($1) RETURNING id", name)
    await conn.execute(MOVE, collection, picked)
    return UUID(str(collection))


async def timed(
    conn: asyncpg.Connection, queries: np.ndarray, bound: int, **scope: object
) -> tuple[float, int]:
    """p50 ms over the queries (after one warm-up pass) and how many hits the last one returned."""
    times, hits = [], []
    for round_ in range(2):
        for q in queries:
            t = time.perf_counter()
            hits = await exact_vector_leg(conn, q, 10, up_to=bound, **scope)  # type: ignore[arg-type]
            if round_:
                times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), len(hits)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--bound", type=int, default=50_000)
    args = parser.parse_args()
    conn = await asyncpg.connect(args.url)
    await register_vector(conn)
    source = await conn.fetchval("SELECT collection_id FROM chunks GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    table = await conn.fetchval("SELECT count(*) FROM chunks")
    collections = {name: await move_documents(conn, source, n, f"scope-{name}") for name, n in SIZES.items()}
    collections["rest"] = source
    sizes = {
        name: await conn.fetchval("SELECT count(*) FROM chunks WHERE collection_id = $1", c)
        for name, c in collections.items()
    }
    document = await conn.fetchval("SELECT document_id FROM chunks WHERE collection_id = $1 LIMIT 1", source)
    rng = np.random.default_rng(11)
    queries = rng.standard_normal((QUERIES, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"chunks table: {table:,} rows; bound {args.bound:,}")
    print("| scope | chunks | visibility | p50 ms | hits |")
    print("|---|---|---|---|---|")
    for visibility in ("just written", "after VACUUM"):
        if visibility == "after VACUUM":
            await conn.execute("VACUUM ANALYZE chunks")
        for name, collection in collections.items():
            p50, n = await timed(conn, queries, args.bound, collections=[collection])
            print(f"| collection {name} | {sizes[name]:,} | {visibility} | {p50:.1f} | {n} |")
        p50, n = await timed(conn, queries, args.bound, filters=SearchFilters(document_ids=[document]))
        print(f"| one document | - | {visibility} | {p50:.1f} | {n} |")
    sql, params = vector_sql(None, [collections["small"]], exact_up_to=args.bound)
    plan = await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}", queries[0], 10, *params)
    print("\nplan, collection small:\n" + "\n".join(r[0] for r in plan))
    for name in SIZES:
        await conn.execute(
            MOVE,
            source,
            [
                r[0]
                for r in await conn.fetch(
                    "SELECT id FROM documents WHERE collection_id = $1", collections[name]
                )
            ],
        )
        await conn.execute("DELETE FROM collections WHERE id = $1", collections[name])
    await conn.execute("VACUUM ANALYZE chunks")
    await conn.close()


asyncio.run(main())
