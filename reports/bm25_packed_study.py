"""The native BM25 top-k with and without the pack (decision 0014), in process, per SciFact query.
A study, not product code (reports/bench-bm25-packed.md). Usage from the repository root, with the
bench cluster up and the bench database migrated and packed (`rag-server bench search --scale N` does
both):
    PYTHONPATH=services .venv/bin/python reports/bm25_packed_study.py <bench database> <queries>

Variants, in turn per query, each in its own REPEATABLE READ snapshot, top 50:
  sql     the product's bm25_native.native_top_k with the pack hidden (its row deleted inside the
          snapshot's transaction, rolled back): the seeded MaxScore statements over bm25_postings;
  packed  the product's native_top_k as it runs: the pack, scored with numpy;
  stale   a model of a pack 10% behind the writers: study tables holding the oldest 90% of chunks
          packed, the newest 10% read from bm25_postings by index range, scored the same way (built
          once by this script; dropped by hand when done).
Every variant must return the same top 50 as `sql`: same chunks, order and scores.
Printed: wall ms per query, and the CPU it cost in the PostgreSQL backend and in this process."""

import asyncio
import json
import os
import statistics
import sys
import time

import asyncpg

from rag_server.retrieval import bm25_native as bn
from rag_server.retrieval import bm25_packed as bp

DSN = "postgresql://postgres@/%s?host=/work/bench-data/pg" % sys.argv[1]
K1, B, K = 1.2, 0.75, 50
TICK = os.sysconf("SC_CLK_TCK")

STALE_PACK = """
    CREATE TABLE IF NOT EXISTS bm25_packed_stale_study AS
    SELECT collection_id, term,
           string_agg(int8send(chunk_id), ''::bytea ORDER BY chunk_id) AS chunk_ids,
           string_agg(int4send(tf), ''::bytea ORDER BY chunk_id) AS tfs,
           string_agg(int4send(doc_len), ''::bytea ORDER BY chunk_id) AS lens
    FROM bm25_postings WHERE chunk_id <= {cut} GROUP BY term, collection_id;
    CREATE UNIQUE INDEX IF NOT EXISTS bm25_packed_stale_study_key ON bm25_packed_stale_study (term, collection_id);
"""
STALE_FETCH = bp.FETCH_SQL.replace("bm25_packed b", "bm25_packed_stale_study b").replace(
    "bm25_unpacked", "(SELECT NULL::bigint AS chunk_id, NULL::uuid AS collection_id WHERE false)"
)


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def main() -> None:
    conn = await asyncpg.connect(DSN)
    watermark = await conn.fetchval("SELECT watermark FROM bm25_pack")
    assert watermark is not None, "no pack: run `rag-server bench search --scale N` first"
    low = await conn.fetchval("SELECT min(id) FROM chunks")
    cut = low + int((watermark - low) * 0.9)
    t = time.perf_counter()
    await conn.execute(STALE_PACK.format(cut=cut))
    print(f"stale model table ready in {time.perf_counter() - t:.1f} s (chunks <= {cut} of <= {watermark})")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    queries = [json.loads(line)["text"] for line in open("/work/shared/datasets/scifact/queries.jsonl")]
    queries = queries[: int(sys.argv[2])]
    variants = ("sql", "packed", "stale")
    wall: dict[str, list[float]] = {v: [] for v in variants}
    pg_cpu: dict[str, list[float]] = {v: [] for v in variants}
    py_cpu: dict[str, list[float]] = {v: [] for v in variants}
    postings, mismatched = [], 0

    async def stale(query: str) -> list[tuple[int, float]]:
        rows = await conn.fetch(bn.TERMS_SQL, query)
        if not rows:
            return []
        q = bn.QueryTerms.from_rows(rows, K1, B)
        weights = bp.Weights(q.terms, q.weights, q.c0, q.c1, q.scale)
        fetched = await conn.fetch(STALE_FETCH, q.terms, None, cut)
        best = bp.score(weights, fetched).best(K + K // 4 + 10)
        live = {r["id"] for r in await conn.fetch(bp.LIVE_SQL, [c for c, _ in best])}
        return [(c, s / q.scale) for c, s in best if c in live][:K]

    for text in queries:
        query = text.strip()
        results = {}
        for variant in variants:
            tr = conn.transaction(isolation="repeatable_read")
            await tr.start()
            if variant == "sql":
                await conn.execute("DELETE FROM bm25_pack")
            cpu0, py0, t0 = backend_cpu(pid), time.process_time(), time.perf_counter()
            if variant == "stale":
                results[variant] = await stale(query)
            else:
                hits = await bn.native_top_k(conn, query, K, None, K1, B)
                results[variant] = [(h.chunk_id, h.score) for h in hits]
            wall[variant].append((time.perf_counter() - t0) * 1000)
            py_cpu[variant].append((time.process_time() - py0) * 1000)
            pg_cpu[variant].append((backend_cpu(pid) - cpu0) * 1000)
            await tr.rollback()
        rows = await conn.fetch(bn.TERMS_SQL, query)
        postings.append(sum(r["df"] for r in rows))
        for variant in ("packed", "stale"):
            if results[variant] != results["sql"]:
                mismatched += 1
                print("mismatch", variant, query[:60])
    print(f"queries {len(queries)}, top-{K} lists differing from the SQL statements': {mismatched}")
    print(f"postings of the query terms: median {statistics.median(postings):,.0f}, max {max(postings):,}")
    print("variant   wall p50   wall p95  wall mean   PG CPU mean  client CPU mean (ms per query)")
    for v, xs in wall.items():
        xs = sorted(xs)
        print(
            f"{v:8s} {statistics.median(xs):9.1f} {xs[int(0.95 * (len(xs) - 1))]:10.1f} "
            f"{statistics.mean(xs):10.1f} {statistics.mean(pg_cpu[v]):13.1f} {statistics.mean(py_cpu[v]):16.1f}"
        )
    await conn.close()


asyncio.run(main())
